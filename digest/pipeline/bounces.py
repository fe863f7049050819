"""Use case: bounces and complaints that arrive after the send (DSNs, ARF reports, provider webhooks).

Rules that live here and nowhere else:
- a report is matched to the ledger by the original message's Message-ID (digest sends no VERP
  address), else by its recipient's most recent delivered issue; a report about an address digest
  never delivered an issue to is "unmatched" and changes nothing (a forged bounce cannot unsubscribe
  a stranger);
- a hard bounce (Action failed, 5.0.x/5.1.x/5.2.x; SES Permanent, Postmark HardBounce, Mailgun
  permanent) marks a confirmed or pending subscriber `bounced` at once;
- a soft bounce (Action failed with another code; SES Transient, Postmark SoftBounce, Mailgun
  permanent after retries) is recorded against its issue; when each of the last
  `delivery.soft_bounce_limit` issues delivered to the subscriber soft-bounced (or bounced), they
  are `bounced`. An issue delivered without a bounce breaks the streak: a later success resets it;
- a delay warning (Action delayed, Mailgun temporary) is recorded in the history and counts nowhere;
- a complaint (ARF, SES Complaint, Postmark SpamComplaint, Mailgun complained) marks the
  subscriber `complained` whatever their status: suppressed for good (list imports and staff
  never bring the address back; only the reader's own new sign-up does);
- each event is acted on once: its key is stored, and importing the same mailbox (or receiving the
  same webhook) again changes nothing;
- every event is in the subscriber's history with its issue number, so the issue's delivery report
  counts it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Engine

from ..bounces import (
    MailboxError,
    MalformedReport,
    ReportEvent,
    ReportKind,
    clean,
    parse_report,
    read_messages,
)
from ..config import Settings
from ..models import SubscriberStatus
from ..store.bounces import match_delivery, record_report, use_token
from ..store.runs import record_run
from ..subscriber_fields import InvalidSubscriber, normalise_email

log = logging.getLogger(__name__)

__all__ = ["BounceSummary", "MailboxError", "Malformed", "import_reports", "note_subscription_request",
           "record_events", "use_webhook_token"]
JOB_WEBHOOKS = "webhooks"  # the run log's job name for what the webhooks tell staff

# History event names, by kind.
EVENTS = {ReportKind.HARD: "bounce", ReportKind.SOFT: "soft_bounce", ReportKind.DELAYED: "delayed",
          ReportKind.COMPLAINT: "complaint"}
LIVE = (SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING)
ANY_BUT_COMPLAINED = tuple(s for s in SubscriberStatus if s != SubscriberStatus.COMPLAINED)


@dataclass(frozen=True)
class Malformed:
    position: str  # "message 3" in an mbox, the file name in a Maildir, the path of a single file
    reason: str


@dataclass(frozen=True)
class Unmatched:
    position: str
    recipient: str
    message_id: str


@dataclass
class BounceSummary:
    """What one import or webhook call did."""

    messages: int = 0
    hard: int = 0
    soft: int = 0
    delayed: int = 0
    complaints: int = 0
    duplicates: int = 0  # acted on before: nothing changed
    bounced: int = 0  # subscribers who became bounced
    complained: int = 0  # subscribers who became complained
    unmatched: list[Unmatched] = field(default_factory=list)
    malformed: list[Malformed] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"messages": self.messages, "hard": self.hard, "soft": self.soft, "delayed": self.delayed,
                "complaints": self.complaints, "duplicates": self.duplicates, "bounced": self.bounced,
                "complained": self.complained,
                "unmatched": [{"position": u.position, "recipient": u.recipient, "message_id": u.message_id}
                              for u in self.unmatched],
                "malformed": [{"position": m.position, "reason": m.reason} for m in self.malformed]}


def import_reports(settings: Settings, engine: Engine, path: Path, now: datetime | None = None) -> BounceSummary:
    """Act on every report in a message file, an mbox or a Maildir; raises MailboxError when PATH is unreadable.

    A message that is no usable report is listed as malformed with its position and changes nothing.
    """
    summary = BounceSummary()
    for position, data in read_messages(path):
        summary.messages += 1
        try:
            events = parse_report(data)
        except MalformedReport as exc:
            summary.malformed.append(Malformed(position, str(exc)))
            continue
        for event in events:
            _apply(settings, engine, event, position, now or datetime.now(UTC), summary)
    return summary


def record_events(settings: Settings, engine: Engine, events: tuple[ReportEvent, ...], position: str,
                  now: datetime | None = None) -> BounceSummary:
    """Act on the events of one webhook call (already authenticated and parsed by the front door)."""
    summary = BounceSummary(messages=1)
    for event in events:
        _apply(settings, engine, event, position, now or datetime.now(UTC), summary)
    return summary


def use_webhook_token(engine: Engine, source: str, token_key: str, max_age: timedelta,
                      now: datetime | None = None) -> bool:
    """Spend a signed request's one-time token (its hash); False when it was used before: a replay."""
    now = now or datetime.now(UTC)
    return use_token(engine, token_key, f"{source}-token", now, keep=max_age * 2)


def note_subscription_request(engine: Engine, topic_arn: str, subscribe_url: str, now: datetime | None = None) -> None:
    """An SNS subscription waiting for staff to confirm it: logged and kept in the run log (`digest status`).

    digest never visits SubscribeURL itself: a URL arriving in a POST is not followed on its own say-so.
    """
    detail = (f"SNS topic {clean(topic_arn, 300)} asks to deliver its notifications here: "
              f"open {clean(subscribe_url, 1500)} to confirm")
    log.warning("%s", detail)
    record_run(engine, JOB_WEBHOOKS, "subscription request", detail[:2000], now=now or datetime.now(UTC))


def _apply(settings: Settings, engine: Engine, event: ReportEvent, position: str, now: datetime,
           summary: BounceSummary) -> None:
    try:
        recipient = normalise_email(event.recipient) if event.recipient else ""
    except InvalidSubscriber:
        recipient = ""
    match = match_delivery(engine, event.original_message_id, recipient)
    if match is None:
        summary.unmatched.append(Unmatched(position, event.recipient, event.original_message_id))
        return
    detail = f"issue {match.issue_number}: {event.detail}"
    status, from_statuses, streak = None, LIVE, 0
    if event.kind == ReportKind.HARD:
        status = SubscriberStatus.BOUNCED
    elif event.kind == ReportKind.SOFT:
        streak = settings.delivery.soft_bounce_limit
    elif event.kind == ReportKind.COMPLAINT:
        status, from_statuses = SubscriberStatus.COMPLAINED, ANY_BUT_COMPLAINED
    recorded = record_report(engine, event.key, event.source, event.kind.value, match, EVENTS[event.kind], detail,
                             now, status=status, from_statuses=from_statuses, streak=streak)
    if recorded.duplicate:
        summary.duplicates += 1
        return
    counter = {ReportKind.HARD: "hard", ReportKind.SOFT: "soft", ReportKind.DELAYED: "delayed",
               ReportKind.COMPLAINT: "complaints"}[event.kind]
    setattr(summary, counter, getattr(summary, counter) + 1)
    if recorded.new_status == SubscriberStatus.BOUNCED:
        summary.bounced += 1
    elif recorded.new_status == SubscriberStatus.COMPLAINED:
        summary.complained += 1
    log.info("%s %s for subscriber %s (issue %s): %s", event.source, event.kind.value, match.subscriber_id,
             match.issue_number, recorded.new_status or "status unchanged")
