"""The transport interface every sender uses: one `send_messages()` (after Django's mail backends).

Implementations: `outbox.OutboxTransport` (an .eml file per message), `smtp.SmtpTransport`,
`outbox.MemoryTransport` (tests). Pick one with `outbox.transport_from_settings(settings)`.
Every transport is a context manager that closes it:

    with transport_from_settings(settings) as transport:
        results = transport.send_messages(messages)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self


class TransportError(Exception):
    """A transport cannot work as configured; the message names the setting and the fix."""


@dataclass(frozen=True)
class OutgoingMessage:
    """A finished RFC 5322 message and its envelope."""

    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


@dataclass(frozen=True)
class SendResult:
    """What became of one message: sent (`ok`), or how it failed."""

    message_id: str
    ok: bool
    # For failures: permanent (5xx) or temporary (4xx, connection trouble).
    permanent: bool = False
    code: int | None = None
    error: str = ""
    # A permanent failure that refuses the recipient's address itself (5.1.x, 5.2.x, a bare 550):
    # it counts towards the subscriber's bounces. Relay or policy refusals (5.7.x) and refused
    # message content (5xx after DATA) do not.
    bounce: bool = False
    # A bounce whose RFC 3463 enhanced code (5.1.x, 5.2.x) names the address itself: certainly this
    # recipient's, so the send loop records it at once and never counts it among the refusals in a
    # row that stop a run (a bare 550 may be a server refusing everyone).
    address_refused: bool = False
    # The server refused the envelope sender (its reply to MAIL FROM): a setting (delivery.sender,
    # the [delivery.smtp] login), never the recipient's fault. When permanent (5xx) every message
    # would meet it: the send loop stops the run, rows queued again.
    sender_refused: bool = False
    # The server refused the message for its size (552 before or after DATA, 5.3.4), or it is over
    # the SIZE the server advertises: the message's problem, not the reader's (`size` bytes;
    # `size_limit` the advertised limit, 0 when unknown). The send loop keeps the row queued.
    too_large: bool = False
    size: int = 0
    size_limit: int = 0
    # The whole message was sent but the connection was lost (or the reply did not come in time)
    # before the server confirmed it: it may have been delivered, so it is never resent at once.
    possibly_delivered: bool = False
    # A temporary failure of the server as a whole, not of this message: no connection could be
    # made, or the server closed it with 421. The send loop pauses instead of using an attempt.
    unreachable: bool = False
    # What is unavailable when `unreachable`, as a clause for the pause message ("the outbox folder
    # /srv/outbox cannot be written (No space left on device)"); empty: the SMTP server.
    outage: str = ""


class Transport(Protocol):
    """What a transport does. Implementations subclass it for `with` (which closes the transport)."""

    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send each message; one result per message, in order. Never raises for one bad recipient."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
