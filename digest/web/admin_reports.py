"""Figures for the admin report pages: an issue's deliveries, the subscriber overview and its chart.

The chart is inline SVG built here (bars per week, sign-ups above the axis, leaves below), so the
page needs no JavaScript and no inline style.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from ..config import Settings
from ..store.ledger import ledger_counts
from ..store.reports import (
    SubscriberChange,
    WeekCounts,
    bounced_subscribers,
    confirmed_by_series,
    issue_events,
    recent_changes,
    weekly_changes,
)
from ..store.subscribers import count_by_status


@dataclass(frozen=True)
class DeliveryReport:
    deliveries: dict[str, int]
    sent: int
    failed: int
    bounced: int
    skipped: int
    waiting: int
    unsubscribes: int
    complaints: int
    events: dict[str, int]


def delivery_report(engine: Engine, number: int) -> DeliveryReport:
    """Sent, failed, bounced, still waiting, and the unsubscribes the issue caused."""
    counts = ledger_counts(engine, number)
    events = issue_events(engine, number)
    return DeliveryReport(
        deliveries=counts,
        sent=counts.get("sent", 0),
        failed=counts.get("failed_permanent", 0),
        bounced=bounced_subscribers(engine, number),
        skipped=counts.get("skipped", 0),
        waiting=sum(counts.get(s, 0) for s in ("queued", "sending", "failed_temporary")),
        unsubscribes=events.get("unsubscribed", 0),
        complaints=events.get("complained", 0),
        events=events,
    )


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    height: float
    label: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    axis_y: float
    signups: list[Bar]
    leaves: list[Bar]
    ticks: list[tuple[float, str]]
    peak: int
    bar_width: float


@dataclass(frozen=True)
class SubscribersOverview:
    by_status: dict[str, int]
    by_series: list[tuple[str, str, int]]
    weeks: list[WeekCounts]
    chart: Chart
    changes: list[SubscriberChange]


def subscribers_overview(settings: Settings, engine: Engine, now: datetime) -> SubscribersOverview:
    """Counts by status and series, the weekly chart and the latest changes."""
    weeks = weekly_changes(engine, now, settings.site.tz)
    series = confirmed_by_series(engine, [s.id for s in settings.series])
    return SubscribersOverview(
        by_status=count_by_status(engine),
        by_series=[(s.id, s.name, series.get(s.id, 0)) for s in settings.series],
        weeks=weeks,
        chart=weekly_chart(weeks),
        changes=recent_changes(engine),
    )


def weekly_chart(weeks: list[WeekCounts], width: int = 720, height: int = 220) -> Chart:
    """Bar geometry: sign-ups rise from the middle axis, leaves hang below it."""
    peak = max([1] + [max(w.signups, w.leaves) for w in weeks])
    left, bottom_pad = 36.0, 24.0
    half = (height - bottom_pad) / 2
    axis = half
    slot = (width - left) / max(1, len(weeks))
    bar = slot * 0.36
    signups, leaves, ticks = [], [], []
    for i, week in enumerate(weeks):
        x = left + i * slot + slot * 0.12
        up = half * 0.92 * week.signups / peak
        down = half * 0.92 * week.leaves / peak
        label = week.week.strftime("%d %b")
        signups.append(Bar(x, axis - up, up, f"week of {label}: {week.signups} sign-ups"))
        leaves.append(Bar(x + bar, axis, down, f"week of {label}: {week.leaves} left"))
        if i % 2 == 0 or len(weeks) <= 8:
            ticks.append((x + bar, label))
    return Chart(width, height, axis, signups, leaves, ticks, peak, bar)
