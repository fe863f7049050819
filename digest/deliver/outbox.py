"""The transports that keep messages instead of sending them, and `transport_from_settings`.

- OutboxTransport (`[delivery] transport = "outbox"`, the default): an .eml file per message.
- MemoryTransport (tests): a list, with scripted refusals.

`transport_from_settings(settings)` picks the outbox or `smtp.SmtpTransport` as configured.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from ..config import Settings
from ..private_files import create_private_file, private_folder
from .smtp import SmtpTransport, recipient_refusal
from .transport import OutgoingMessage, SendResult, Transport

# --- outbox -------------------------------------------------------------------------------------

class OutboxTransport(Transport):
    """Writes each message to `<dir>/<UTC timestamp>-<hash of Message-ID>.eml`, atomically.

    The file appears complete or not at all (temp file, fsync, os.replace); names sort by time.
    Messages hold working links: files are 0600, and a folder created here 0700, whatever the umask.
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.directory = Path(directory)

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Write every message; an OSError becomes a temporary failure for that message."""
        try:
            private_folder(self.directory)
        except OSError as exc:
            error = f"cannot create outbox folder {self.directory}: {exc.strerror}"
            outage = f"the outbox folder {self.directory} cannot be created ({exc.strerror})"
            return [SendResult(m.message_id, ok=False, error=error, unreachable=True, outage=outage) for m in messages]
        results = [self._write(m) for m in messages]
        _fsync_directory(self.directory)
        return results

    def _write(self, message: OutgoingMessage) -> SendResult:
        final = self.directory / outbox_filename(message.message_id)
        temp = self.directory / f".{final.stem}.{os.getpid()}.{threading.get_ident()}.tmp"
        try:
            with os.fdopen(create_private_file(temp), "wb") as handle:
                handle.write(message.data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, final)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            # The folder, not the message (disk full, permissions): the send loop pauses and retries.
            return SendResult(message.message_id, ok=False, error=f"cannot write {final}: {exc.strerror}",
                              unreachable=True, outage=f"the outbox folder {self.directory} cannot be written "
                                                       f"({exc.strerror}: free some space or fix its permissions)")
        return SendResult(message.message_id, ok=True)

    def close(self) -> None:
        """Nothing to release."""


def outbox_filename(message_id: str, now: datetime | None = None) -> str:
    """`20261125T113606.123456Z-<16 hex of the Message-ID's SHA-256>.eml`: sortable and unique."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{stamp}-{hashlib.sha256(message_id.encode('utf-8')).hexdigest()[:16]}.eml"


def _fsync_directory(directory: Path) -> None:
    # Makes the renames durable; not every platform lets a directory be opened (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- memory -------------------------------------------------------------------------------------

class MemoryTransport(Transport):
    """Keeps messages in `.outbox`; `replies[address] = [(451, "later"), None]` scripts failures."""

    def __init__(self) -> None:
        self.outbox: list[OutgoingMessage] = []
        self.replies: dict[str, list[tuple[int, str] | None]] = {}
        self.closed = False
        self._lock = threading.Lock()

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Record each message, or answer with the next scripted reply for one of its recipients."""
        with self._lock:
            return [self._send_one(m) for m in messages]

    def _send_one(self, message: OutgoingMessage) -> SendResult:
        for address in message.recipients:
            queue = self.replies.get(address)
            reply = queue.pop(0) if queue else None
            if reply is not None:
                code, text = reply
                bounce, address_refused = recipient_refusal(code, text)
                return SendResult(message.message_id, ok=False, permanent=code >= 500, code=code, error=text,
                                  bounce=bounce, address_refused=address_refused, unreachable=code == 421)
        self.outbox.append(message)
        return SendResult(message.message_id, ok=True, code=250)

    def close(self) -> None:
        """Mark the transport closed (tests check that senders close theirs)."""
        self.closed = True


# --- choosing one -------------------------------------------------------------------------------

TransportFactory = Callable[[], Transport]


def deliver_now(settings: Settings, messages: list[OutgoingMessage],
                make_transport: TransportFactory | None = None) -> list[SendResult]:
    """Send a few messages outside the ledger (tests, notes) over one transport; one result each."""
    with (make_transport or (lambda: transport_from_settings(settings)))() as transport:
        return transport.send_messages(messages)


def transport_from_settings(settings: Settings) -> Transport:
    """The transport `[delivery] transport` names: OutboxTransport or SmtpTransport."""
    delivery = settings.delivery
    if delivery.transport == "smtp":
        ca_file = settings.resolve_path(delivery.smtp.ca_file) if delivery.smtp.ca_file else None
        return SmtpTransport(delivery.smtp, ca_file)
    return OutboxTransport(settings.resolve_path(delivery.outbox_dir))
