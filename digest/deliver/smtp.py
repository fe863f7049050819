"""The SMTP transport: smtplib over a pool of persistent connections, with a rate limit.

Like every transport it returns one SendResult per message, in order, and never raises for a bad
recipient or a refusal of any kind (one transaction, and what its replies mean, is in
smtp_transaction.py). SmtpTransport raises TransportError only for configuration
problems no retry can fix, found before sending: when it is made (password variable empty, CA
file unreadable) or while opening the batch's first connection (login refused with 5xx, untrusted
certificate, STARTTLS not offered), so no result of the batch is lost. A server refusing the
sender (5xx to MAIL FROM) is a result, `sender_refused`: the send loop stops the run on it; a
test send just reports it.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from queue import Empty, SimpleQueue

from ..config import SmtpSettings
from .smtp_transaction import LostConnection, dot_stuffed, recipient_refusal, send_one
from .transport import OutgoingMessage, SendResult, Transport, TransportError

__all__ = ["RateLimiter", "SmtpTransport", "dot_stuffed", "recipient_refusal"]

# --- rate limit ---------------------------------------------------------------------------------

class RateLimiter:
    """At most `rate` calls of `wait()` per second across threads (evenly spaced slots)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / rate
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Block until this caller's slot comes."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)



# --- smtp ---------------------------------------------------------------------------------------

class SmtpTransport(Transport):
    """smtplib over a pool of persistent connections, used by `connections` worker threads."""

    def __init__(self, smtp: SmtpSettings, ca_file: Path | None = None) -> None:
        self.settings = smtp
        self._password = _password(smtp)
        self._context = _tls_context(smtp, ca_file)
        self._limiter = RateLimiter(smtp.rate_limit) if smtp.rate_limit > 0 else None
        self._idle: SimpleQueue[smtplib.SMTP] = SimpleQueue()
        self._last_error = ""
        self._pool = ThreadPoolExecutor(max_workers=smtp.connections, thread_name_prefix="smtp")

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send over up to `connections` connections; one result per message, in order."""
        if not messages:
            return []
        first = self._checkout_or_connect()
        if first is None:
            return [self._unreachable_result(m) for m in messages]
        self._idle.put(first)
        work: SimpleQueue[int] = SimpleQueue()
        for index in range(len(messages)):
            work.put(index)
        results: list[SendResult | None] = [None] * len(messages)
        workers = min(self.settings.connections, len(messages))
        if workers == 1:  # one connection (or one message): no thread hand-off
            self._worker(messages, work, results)
        else:
            futures = [self._pool.submit(self._worker, messages, work, results) for _ in range(workers)]
            for future in futures:
                future.result()
        unsent = SendResult("", ok=False, error=f"not attempted: no connection to {self._address()} was free",
                            unreachable=True)
        return [r or replace(unsent, message_id=m.message_id) for r, m in zip(results, messages, strict=True)]

    def _worker(self, messages: Sequence[OutgoingMessage], work: SimpleQueue[int],
                results: list[SendResult | None]) -> None:
        conn = self._checkout_or_connect(quiet=True)
        if conn is None:  # e.g. the server allows fewer connections: leave the work to the others
            return
        reachable = True
        while True:
            try:
                index = work.get_nowait()
            except Empty:
                break
            if reachable:
                conn, results[index], reachable = self._send_with_retry(conn, messages[index])
            else:  # the server did not take a new connection: fail the rest fast, retry next batch
                results[index] = self._unreachable_result(messages[index])
        if conn is not None:
            self._idle.put(conn)

    def _send_with_retry(self, conn: smtplib.SMTP | None,
                         message: OutgoingMessage) -> tuple[smtplib.SMTP | None, SendResult, bool]:
        """(connection to keep, result, server reachable): a connection lost before the message's
        final "." is reconnected once (nothing can have been delivered).

        Lost again on a fresh connection, the failure is this message's (a temporary one, using an
        attempt: a message that makes the server hang up must not look like an outage forever),
        unless the server said 421 (closing down, or too busy), which concerns every message.
        A connection lost after the final "." is never retried here: the message may have been
        delivered (`possibly_delivered`), and the send loop decides when, and whether, to resend.
        """
        if self._limiter is not None:
            self._limiter.wait()
        for attempt in (1, 2):
            if conn is None:
                conn = self._connect_quietly()
                if conn is None:
                    return None, self._unreachable_result(message), False
            try:
                result = send_one(conn, message, self.settings.final_reply_timeout)
            except LostConnection as exc:
                _close(conn)
                conn = None
                if attempt == 2:
                    error, code = exc.args
                    return None, SendResult(message.message_id, ok=False, code=code, error=error,
                                            unreachable=code == 421), True
                continue
            if result.possibly_delivered:  # send_one closed it
                return None, result, True
            return conn, result, True
        raise AssertionError("unreachable")  # pragma: no cover

    def check_connection(self) -> str | None:
        """None when the server takes a connection (kept for sending), else why not.

        TransportError for configuration problems (login refused, untrusted certificate).
        """
        conn = self._connect_or_none()
        if conn is None:
            return self._unreachable()
        self._idle.put(conn)
        return None

    def _address(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    def _unreachable(self) -> str:
        return f"cannot connect to {self._address()}: {self._last_error}"

    def _unreachable_result(self, message: OutgoingMessage) -> SendResult:
        return SendResult(message.message_id, ok=False, error=self._unreachable(), unreachable=True)

    def _checkout_or_connect(self, quiet: bool = False) -> smtplib.SMTP | None:
        try:
            return self._idle.get_nowait()
        except Empty:
            return self._connect_quietly() if quiet else self._connect_or_none()

    def _connect_or_none(self) -> smtplib.SMTP | None:
        """A connection, None if the server is unreachable; TransportError for bad configuration.

        A login refused with 4xx (e.g. `454 4.7.0 Temporary authentication failure`) is the server
        being unable to check it for now: unreachable, retried; 5xx (535) means the credentials.
        """
        try:
            return self._connect()
        except (smtplib.SMTPException, OSError) as exc:
            if isinstance(exc, ssl.SSLCertVerificationError):
                raise TransportError(f"SMTP server {self.settings.host}:{self.settings.port}: certificate not "
                                     f"trusted ({exc.verify_message}); set 'delivery.smtp.ca_file' to its CA") from None
            if isinstance(exc, smtplib.SMTPAuthenticationError) and 400 <= exc.smtp_code < 500:
                self._last_error = f"login refused for now: {exc.smtp_code} {_text(exc.smtp_error)}"
                return None
            if isinstance(exc, smtplib.SMTPAuthenticationError):
                raise TransportError(f"SMTP login as {self.settings.username!r} refused ({exc.smtp_code}): check "
                                     f"'delivery.smtp.username' and ${self.settings.password_env}") from None
            if isinstance(exc, smtplib.SMTPNotSupportedError):
                raise TransportError(f"SMTP server {self.settings.host}:{self.settings.port}: {exc}; "
                                     "check 'delivery.smtp.security'") from None
            self._last_error = f"{exc.__class__.__name__}: {exc}"  # for the temporary failures' text
            return None

    def _connect_quietly(self) -> smtplib.SMTP | None:
        try:
            return self._connect_or_none()
        except TransportError:
            return None

    def _connect(self) -> smtplib.SMTP:
        s = self.settings
        # helo_name: the EHLO name; smtplib's default is the host's FQDN, or an address literal such
        # as [127.0.0.1] when that is "localhost", which some servers refuse or score as spam.
        name = s.helo_name or None
        if s.security == "tls":
            conn = smtplib.SMTP_SSL(s.host, s.port, local_hostname=name, timeout=s.timeout, context=self._context)
        else:
            conn = smtplib.SMTP(s.host, s.port, local_hostname=name, timeout=s.timeout)
        try:
            conn.ehlo()
            if s.security == "starttls":
                conn.starttls(context=self._context)
                conn.ehlo()
            if s.username:
                conn.login(s.username, self._password)
        except BaseException:
            _close(conn)
            raise
        return conn

    def close(self) -> None:
        """Quit every pooled connection and stop the worker threads."""
        while True:
            try:
                conn = self._idle.get_nowait()
            except Empty:
                break
            _close(conn, polite=True)
        self._pool.shutdown(wait=True)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _close(conn: smtplib.SMTP, polite: bool = False) -> None:
    try:
        if polite:
            conn.quit()
        else:
            conn.close()
    except (smtplib.SMTPException, OSError):
        conn.close()


def _password(smtp: SmtpSettings) -> str:
    if not smtp.username:
        return ""
    value = os.environ.get(smtp.password_env)
    if not value:
        raise TransportError(f"'delivery.smtp.username' is set but ${smtp.password_env} is empty: export "
                             f"{smtp.password_env}=... (or name another variable in 'delivery.smtp.password_env')")
    if not (value + smtp.username).isascii():
        raise TransportError(f"${smtp.password_env} or 'delivery.smtp.username' has non-ASCII characters, "
                             "which Python's smtplib cannot send: use an ASCII password (or an app password)")
    return value


def _tls_context(smtp: SmtpSettings, ca_file: Path | None) -> ssl.SSLContext | None:
    if smtp.security == "none":
        return None
    try:
        return ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    except (OSError, ssl.SSLError) as exc:
        raise TransportError(f"'delivery.smtp.ca_file' {ca_file}: cannot load CA certificates ({exc})") from None
