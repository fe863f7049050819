"""Reads for the admin pages: subscriber trends, recent changes and what an issue caused.

Nothing here writes. Week buckets are computed in Python from the event rows of the period asked
for, so SQLite and PostgreSQL agree without dialect-specific date functions.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, Text, cast, distinct, func, select

from ..models import SubscriberStatus
from .schema import subscriber_events, subscribers

# Web sign-ups complete as "confirmed" (double opt-in); imports and admin adds as "subscribed".
SIGNUP_EVENTS = ("subscribed", "confirmed")
LEAVE_EVENTS = ("unsubscribed", "complained", "bounced", "erased")


@dataclass(frozen=True)
class WeekCounts:
    week: date  # the Monday starting the week, site timezone
    signups: int
    leaves: int


@dataclass(frozen=True)
class SubscriberChange:
    at: datetime
    event: str
    email: str  # empty once the subscriber was erased
    issue_number: int | None
    detail: str


def weekly_changes(engine: Engine, now: datetime, tz: ZoneInfo, weeks: int = 12) -> list[WeekCounts]:
    """Sign-ups and leaves (unsubscribed, complained, bounced, erased) per week, oldest week first."""
    this_monday = now.astimezone(tz).date() - timedelta(days=now.astimezone(tz).weekday())
    first = this_monday - timedelta(weeks=weeks - 1)
    since = datetime.combine(first, datetime.min.time(), tzinfo=tz)
    query = select(subscriber_events.c.event, subscriber_events.c.at).where(
        subscriber_events.c.at >= since, subscriber_events.c.event.in_(SIGNUP_EVENTS + LEAVE_EVENTS))
    signups: Counter[date] = Counter()
    leaves: Counter[date] = Counter()
    with engine.connect() as conn:
        for event, at in conn.execute(query):
            local = at.astimezone(tz).date()
            week = local - timedelta(days=local.weekday())
            (signups if event in SIGNUP_EVENTS else leaves)[week] += 1
    days = [first + timedelta(weeks=i) for i in range(weeks)]
    return [WeekCounts(week=d, signups=signups[d], leaves=leaves[d]) for d in days]


def recent_changes(engine: Engine, limit: int = 30) -> list[SubscriberChange]:
    """The newest subscriber events with the address they concern."""
    query = (
        select(subscriber_events.c.at, subscriber_events.c.event, subscribers.c.email,
               subscriber_events.c.issue_number, subscriber_events.c.detail)
        .select_from(subscriber_events.outerjoin(subscribers, subscribers.c.id == subscriber_events.c.subscriber_id))
        .order_by(subscriber_events.c.at.desc(), subscriber_events.c.id.desc())
        .limit(limit)
    )
    with engine.connect() as conn:
        return [SubscriberChange(at=r.at, event=r.event, email=r.email or "", issue_number=r.issue_number,
                                 detail=r.detail or "") for r in conn.execute(query)]


def confirmed_by_series(engine: Engine, series_ids: list[str]) -> dict[str, int]:
    """Confirmed subscribers receiving each series (those who chose none receive all)."""
    query = (
        select(cast(subscribers.c.series, Text), func.count())
        .where(subscribers.c.status == SubscriberStatus.CONFIRMED.value)
        .group_by(cast(subscribers.c.series, Text))
    )
    counts = dict.fromkeys(series_ids, 0)
    with engine.connect() as conn:
        for raw, n in conn.execute(query):
            chosen = json.loads(raw) if raw else []
            for series_id in chosen or series_ids:
                if series_id in counts:
                    counts[series_id] += n
    return counts


def issue_events(engine: Engine, number: int) -> dict[str, int]:
    """Subscriber events an issue caused (unsubscribed, complained, bounce…), by event name."""
    query = (
        select(subscriber_events.c.event, func.count())
        .where(subscriber_events.c.issue_number == number)
        .group_by(subscriber_events.c.event)
    )
    with engine.connect() as conn:
        return {event: n for event, n in conn.execute(query)}


def bounced_subscribers(engine: Engine, number: int) -> int:
    """Subscribers whose address bounced on this issue, each once.

    A 5xx records a `bounce` event and, at the bounce threshold, a `bounced` status event too: the
    same subscriber. Erased subscribers' events have no subscriber id left; each of their `bounce`
    events still stands for one subscriber (a subscriber has one delivery per issue).
    """
    events = subscriber_events
    bounce_events = events.c.event.in_(("bounce", "bounced"))
    known = select(func.count(distinct(events.c.subscriber_id))).select_from(events).where(
        events.c.issue_number == number, bounce_events, events.c.subscriber_id.is_not(None))
    erased = select(func.count()).select_from(events).where(
        events.c.issue_number == number, events.c.event == "bounce", events.c.subscriber_id.is_(None))
    with engine.connect() as conn:
        return conn.execute(known).scalar_one() + conn.execute(erased).scalar_one()
