"""The transport interface every sender uses: one `send_messages()` (after Django's mail backends).

Implementations: outbox (an .eml file per message), smtp, memory (tests). Pick one with
`transport_from_settings(settings)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class OutgoingMessage:
    """A finished RFC 5322 message and its envelope."""

    envelope_from: str
    recipients: tuple[str, ...]
    data: bytes
    message_id: str


@dataclass(frozen=True)
class SendResult:
    message_id: str
    ok: bool
    # For failures: permanent (5xx for the recipient) or temporary (4xx, connection trouble).
    permanent: bool = False
    code: int | None = None
    error: str = ""


class Transport(Protocol):
    def send_messages(self, messages: Sequence[OutgoingMessage]) -> list[SendResult]:
        """Send each message; one result per message, in order. Never raises for one bad recipient."""

    def close(self) -> None:
        """Release connections."""
