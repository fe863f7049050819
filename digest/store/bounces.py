"""Bounces and complaints that arrive after the send: matching them to the ledger, and recording them once.

`record_report` writes, in one transaction, the report's key (bounce_reports: a key seen before
means the report was acted on already and nothing is written), the subscriber's history event,
their bounce count for a bounce, and the status change the use case asked for
(digest.pipeline.bounces holds the rules; the soft-bounce streak is counted here, inside the
same transaction, so two imports at once cannot both miss it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select
from sqlalchemy.exc import IntegrityError

from ..models import DeliveryStatus, SubscriberStatus
from .schema import bounce_reports, deliveries, subscriber_events, subscribers
from .subscribers import change_status, count_bounce, record_event

# Ledger rows a message went out on: the only ones a later report can be about.
DELIVERED = (DeliveryStatus.SENT.value, DeliveryStatus.POSSIBLY_DELIVERED.value)
# History events that count towards a soft-bounce streak (a hard one counts too).
STREAK_EVENTS = ("soft_bounce", "bounce")


@dataclass(frozen=True)
class Match:
    """The ledger row a report is about."""

    subscriber_id: int
    issue_number: int
    email: str
    status: SubscriberStatus


@dataclass(frozen=True)
class Recorded:
    duplicate: bool = False  # acted on before: nothing written
    new_status: SubscriberStatus | None = None  # the status the subscriber moved to, if any


def match_delivery(engine: Engine, message_id: str, email: str) -> Match | None:
    """The delivery a report names: by the original Message-ID, else the address's latest delivered issue."""
    query = (select(deliveries.c.subscriber_id, deliveries.c.issue_number, subscribers.c.email, subscribers.c.status)
             .join(subscribers, subscribers.c.id == deliveries.c.subscriber_id)
             .where(deliveries.c.status.in_(DELIVERED)))
    with engine.connect() as conn:
        row = None
        if message_id:
            row = conn.execute(query.where(deliveries.c.message_id == message_id)).first()
        if row is None and email:
            row = conn.execute(query.where(subscribers.c.email == email)
                               .order_by(deliveries.c.issue_number.desc()).limit(1)).first()
    if row is None:
        return None
    return Match(row.subscriber_id, row.issue_number, row.email, SubscriberStatus(row.status))


def record_report(engine: Engine, key: str, source: str, kind: str, match: Match, event: str, detail: str,
                  now: datetime, *, status: SubscriberStatus | None = None,
                  from_statuses: tuple[SubscriberStatus, ...] = (), streak: int = 0) -> Recorded:
    """Record one report about `match` once: its key, the history `event`, and a status change.

    The subscriber moves to `status` when they are in one of `from_statuses`; with `streak` > 0
    they become bounced (from the same statuses) once each of the last `streak` issues delivered
    to them has a bounce or soft bounce recorded. A bounce event also counts in `bounce_count`.
    """
    try:
        with engine.begin() as conn:
            if conn.execute(select(bounce_reports.c.key).where(bounce_reports.c.key == key)).first():
                return Recorded(duplicate=True)
            conn.execute(bounce_reports.insert().values(key=key, source=source, kind=kind,
                                                        subscriber_id=match.subscriber_id,
                                                        issue_number=match.issue_number, received_at=now))
            if event == "bounce":
                count_bounce(conn, match.subscriber_id, now, detail, match.issue_number)
            else:
                record_event(conn, match.subscriber_id, event, now, detail, match.issue_number)
            if streak and status is None and _streak_reached(conn, match.subscriber_id, streak):
                status = SubscriberStatus.BOUNCED
                detail = f"{streak} soft bounces in a row; last: {detail}"
            if status is None:
                return Recorded()
            current = conn.execute(select(subscribers.c.status).where(subscribers.c.id == match.subscriber_id)).scalar()
            if current is None or SubscriberStatus(current) not in from_statuses:
                return Recorded()
            moved = change_status(conn, match.subscriber_id, status, now, detail, match.issue_number)
            return Recorded(new_status=status if moved else None)
    except IntegrityError:  # the same report recorded by another process at the same moment
        return Recorded(duplicate=True)


def _streak_reached(conn: Connection, subscriber_id: int, limit: int) -> bool:
    """True when each of the last `limit` issues delivered to the subscriber bounced (softly or not)."""
    issues = list(conn.execute(
        select(deliveries.c.issue_number).where(deliveries.c.subscriber_id == subscriber_id,
                                                deliveries.c.status.in_(DELIVERED))
        .order_by(deliveries.c.issue_number.desc()).limit(limit)).scalars())
    if len(issues) < limit:
        return False
    bounced = set(conn.execute(
        select(subscriber_events.c.issue_number).where(subscriber_events.c.subscriber_id == subscriber_id,
                                                       subscriber_events.c.event.in_(STREAK_EVENTS),
                                                       subscriber_events.c.issue_number.in_(issues))).scalars())
    return bounced.issuperset(issues)


def use_token(engine: Engine, key: str, source: str, now: datetime, keep: timedelta) -> bool:
    """Remember a one-time webhook token (its hash); False if it was used before. Forgets tokens older than `keep`."""
    try:
        with engine.begin() as conn:
            conn.execute(bounce_reports.delete().where(bounce_reports.c.source == source,
                                                       bounce_reports.c.received_at < now - keep))
            if conn.execute(select(bounce_reports.c.key).where(bounce_reports.c.key == key)).first():
                return False
            conn.execute(bounce_reports.insert().values(key=key, source=source, kind="token", received_at=now))
    except IntegrityError:
        return False
    return True
