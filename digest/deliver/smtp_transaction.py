"""One SMTP transaction on an open connection: MAIL, RCPT, DATA, the message, and what the replies mean.

`send_one(conn, message, final_reply_timeout)` returns one SendResult and raises `LostConnection`
only when the connection went away *before* the message's final "." was sent (or the server said
421): then nothing can have been delivered and the caller may resend on a fresh connection. From
the moment the whole message with its final "." is written, a lost connection or a reply that
does not come within `final_reply_timeout` (RFC 5321 §4.5.3.2: 10 minutes) is a result,
`possibly_delivered`: the server may have stored the message, so it must never be resent at once.

When the server offers PIPELINING (RFC 2920), MAIL, every RCPT and DATA go in one write and their
replies are read in order: one round trip instead of 2 + recipients. Every reply is checked; a
refused MAIL or RCPT is handled as without pipelining, and when every recipient was refused but
the server still answers DATA with 354, a lone "." ends the empty message (nothing is sent).

A size refusal (552 to MAIL FROM … SIZE=n or after the message, or any 5.3.4 code) is `too_large`:
a problem with the message, not with the reader or the sender. A message longer than the limit
the server advertises (EHLO SIZE) is not offered at all.
"""

from __future__ import annotations

import re
import smtplib

from .transport import OutgoingMessage, SendResult


class LostConnection(Exception):
    """The server went away before the message was complete (or answered 421): nothing was delivered.

    args: (error text, the 421 code or None).
    """


def send_one(conn: smtplib.SMTP, message: OutgoingMessage, final_reply_timeout: float) -> SendResult:
    """One transaction; LostConnection when the connection went before the final "." (see the module doc)."""
    try:
        return _transaction(conn, message, final_reply_timeout)
    except OSError as exc:  # smtplib's own errors are OSErrors too: all mean the connection is gone
        raise LostConnection(f"connection lost: {exc or exc.__class__.__name__}", None) from None


def advertised_size_limit(conn: smtplib.SMTP) -> int:
    """The largest message the server takes, from its EHLO SIZE keyword; 0 when it names none."""
    if not (conn.does_esmtp and conn.has_extn("size")):
        return 0
    value = conn.esmtp_features.get("size", "").strip()
    return int(value) if value.isdigit() else 0


def _transaction(conn: smtplib.SMTP, message: OutgoingMessage, final_reply_timeout: float) -> SendResult:
    conn.ehlo_or_helo_if_needed()
    data, mid = message.data, message.message_id
    limit = advertised_size_limit(conn)
    if limit and len(data) > limit:  # refused for certain: spare the server (and the wire) the attempt
        return _too_large(mid, None, f"the server takes messages up to {limit:,} bytes (its EHLO SIZE)",
                          len(data), limit)
    size = f" SIZE={len(data)}" if conn.does_esmtp and conn.has_extn("size") else ""
    commands = [f"MAIL FROM:{_path(message.envelope_from)}{size}",
                *(f"RCPT TO:{_path(recipient)}" for recipient in message.recipients), "DATA"]
    if any("\r" in c or "\n" in c or not c.isascii() for c in commands):  # never smuggle in a command
        return SendResult(mid, ok=False, permanent=True, error="an envelope address has a line break or is "
                                                               "not ASCII: not sent")
    pipelined = conn.does_esmtp and conn.has_extn("pipelining")
    replies = _exchange(conn, commands, pipelined)

    mail_code, mail_text = replies[0]
    if mail_code == 421:
        conn.close()
        raise LostConnection(f"server closing connection: {_text(mail_text)}", 421)
    if mail_code != 250:
        _end_transaction(conn, replies, len(commands))
        if mail_code == 552 or _is_size_code(mail_text):
            return _too_large(mid, mail_code, f"{mail_code} {_text(mail_text)}", len(data), limit)
        return _sender_refused(mid, message.envelope_from, mail_code, mail_text)
    rcpt_replies = replies[1:1 + len(message.recipients)]
    if any(code == 421 for code, _ in rcpt_replies):
        conn.close()
        raise LostConnection(f"server closing connection: {_text(next(t for c, t in rcpt_replies if c == 421))}", 421)
    refused = [(code, text) for code, text in rcpt_replies if code not in (250, 251)]
    if len(refused) == len(message.recipients):
        _end_transaction(conn, replies, len(commands))
        code, text = refused[0]
        if _is_size_code(text):
            return _too_large(mid, code, f"{code} {_text(text)}", len(data), limit)
        return _failure(mid, code, text, recipient=True)

    data_code, data_text = replies[-1]
    if data_code == 421:
        conn.close()
        raise LostConnection(f"server closing connection: {_text(data_text)}", 421)
    if data_code != 354:
        _rset(conn)
        return _failure(mid, data_code, data_text)
    conn.send(dot_stuffed(data))  # an OSError here: the "." may not have gone, nothing was stored
    code, text = _final_reply(conn, final_reply_timeout)
    if code is None:
        return SendResult(mid, ok=False, error=f"possibly delivered: the connection was lost after the whole "
                                                f"message was sent, before the server confirmed it ({text})",
                          possibly_delivered=True)
    if code == 421:
        conn.close()
        raise LostConnection(f"server closing connection: {_text(text)}", 421)
    if code != 250:
        _rset(conn)
        if (code == 552 and not _enhanced(text)) or _is_size_code(text):
            return _too_large(mid, code, f"{code} {_text(text)}", len(data), limit)
        return _failure(mid, code, text)
    if refused:  # some of several recipients refused: the message went to the others
        code, text = refused[0]
        return _failure(mid, code, text, recipient=True)
    return SendResult(mid, ok=True, code=250)


def _exchange(conn: smtplib.SMTP, commands: list[str], pipelined: bool) -> list[tuple[int, bytes]]:
    """The replies to MAIL, each RCPT and DATA, in order; fewer when an answer ends the exchange early.

    Without pipelining each command waits for its reply, and the exchange stops at a refused MAIL,
    at 421, or before DATA when every recipient was refused. With pipelining every command has been
    sent, so every reply is read (but not past a 421, after which the server has gone).
    """
    replies: list[tuple[int, bytes]] = []
    if pipelined:
        conn.send("".join(f"{command}\r\n" for command in commands))
        for _ in commands:
            replies.append(conn.getreply())
            if replies[-1][0] == 421:
                break
        return replies
    for index, command in enumerate(commands):
        if index == len(commands) - 1 and all(code not in (250, 251) for code, _ in replies[1:]):
            break  # every recipient refused: no DATA
        replies.append(conn.docmd(command))
        code = replies[-1][0]
        if code == 421 or (index == 0 and code != 250):
            break
    return replies


def _end_transaction(conn: smtplib.SMTP, replies: list[tuple[int, bytes]], commands: int) -> None:
    """After a refused MAIL or every RCPT refused: end an accepted DATA with a lone "." (RFC 2920 §3.1),
    then RSET (a server that hangs up meanwhile is fine: the next message reconnects)."""
    if len(replies) == commands and replies[-1][0] == 354:
        conn.send(b".\r\n")
        conn.getreply()
    _rset(conn)


def _rset(conn: smtplib.SMTP) -> None:
    try:
        conn.rset()
    except smtplib.SMTPServerDisconnected:
        pass


def _final_reply(conn: smtplib.SMTP, timeout: float) -> tuple[int | None, bytes | str]:
    """The reply to the final "." waiting up to `timeout` (RFC 5321 §4.5.3.2); (None, why) if none came."""
    sock = conn.sock
    previous = sock.gettimeout() if sock is not None else None
    try:
        if sock is not None:
            sock.settimeout(timeout)
        return conn.getreply()
    except OSError as exc:  # getreply closes the connection; a timeout leaves it in an unknown state
        conn.close()
        return None, f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
    finally:
        if conn.sock is not None:
            conn.sock.settimeout(previous)


# A plain local@domain (what message.check_address lets through): safe inside <> as it is.
_PLAIN_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9.-]+")


def _path(address: str) -> str:
    """`<address>` for MAIL FROM / RCPT TO; anything unusual goes through smtplib's own quoting."""
    return f"<{address}>" if _PLAIN_ADDRESS.fullmatch(address) else smtplib.quoteaddr(address)


def dot_stuffed(data: bytes) -> bytes:
    """DATA payload with its terminating `CRLF . CRLF`, lines starting with "." doubled (RFC 5321 4.5.2).

    Byte for byte what smtplib.SMTP.data sends for bytes: its regex `(?m)^\\.` matches at the start
    and after every LF, exactly what startswith and replace(b"\\n.") find, at a third of the cost.
    """
    if data.startswith(b"."):
        data = b"." + data
    data = data.replace(b"\n.", b"\n..")
    return data + (b".\r\n" if data.endswith(b"\r\n") else b"\r\n.\r\n")


# --- what a reply means ----------------------------------------------------------------------------

def _sender_refused(mid: str, sender: str, code: int, text: bytes | str) -> SendResult:
    # Not the recipient's fault (a setting or server policy): never a bounce. A 5xx awaits every
    # message alike (MAIL FROM comes before any recipient): the send loop stops.
    refusal = f"the server refuses the sender {sender}: {code} {_text(text)}"
    if 500 <= code < 600:  # the send loop's SendStopped names the fix
        return SendResult(mid, ok=False, permanent=True, code=code, error=refusal, sender_refused=True)
    return SendResult(mid, ok=False, code=code, sender_refused=True,  # retried: the row keeps a hint
                      error=f"{refusal} (check 'delivery.sender' and the [delivery.smtp] login)")


def _too_large(mid: str, code: int | None, error: str, size: int, limit: int) -> SendResult:
    return SendResult(mid, ok=False, permanent=True, code=code, error=f"too large ({size:,} bytes): {error}",
                      too_large=True, size=size, size_limit=limit)


def _failure(message_id: str, code: int, text: bytes | str, recipient: bool = False) -> SendResult:
    """A refusal; `recipient` when it answered RCPT TO (only those can be bounces)."""
    bounce, address_refused = recipient_refusal(code, text) if recipient else (False, False)
    return SendResult(message_id, ok=False, permanent=500 <= code < 600, code=code, error=f"{code} {_text(text)}",
                      bounce=bounce, address_refused=address_refused)


# An RFC 3463 enhanced status code at the start of a reply's text: class.subject.detail.
_ENHANCED = re.compile(r"\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def _enhanced(text: bytes | str) -> tuple[str, str, str] | None:
    match = _ENHANCED.match(_text(text))
    return (match[1], match[2], match[3]) if match else None


def _is_size_code(text: bytes | str) -> bool:
    """X.3.4, "message too big for system" (RFC 3463), of class 5."""
    return _enhanced(text) == ("5", "3", "4")


def recipient_refusal(code: int, text: bytes | str) -> tuple[bool, bool]:
    """(bounce, names the address) for a reply to RCPT TO.

    Only a 5xx can be a bounce. When the reply carries an enhanced code, it alone decides: 5.1.x
    (bad address) and 5.2.x (mailbox) say outright that the address is refused (a bounce, certainly
    the recipient's); any other subject (5.7.x relay denied or policy, 5.4.1 access denied, ...) says
    nothing about the address: no bounce. Without one, a bare 550, 551 or 553 is a bounce, but an
    ambiguous one (a server refusing everyone sends a bare 550 too), so it does not name the address.
    """
    if not 500 <= code < 600:
        return False, False
    enhanced = _enhanced(text)
    if enhanced is not None and enhanced[0] == "5":
        named = enhanced[1] in ("1", "2")
        return named, named
    return code in (550, 551, 553), False


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
