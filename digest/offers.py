"""Which stored items a build offers: the window's, late ones, and the ones that wait or are too old (pure).

Every stored item (events aside) is offered to exactly one sent issue:
- the issue whose window holds its publication instant, if the item was stored before that issue's
  last build and had settled;
- else the next issue, as a **late** item, if it was published at most `digest.late_item_days`
  before that issue's window starts; older ones are listed as **too old, not sent**.
A first issue (no issue sent before it) offers nothing late: it cuts its window by publication date.

**Stabilisation**: an item whose content changed within `fetch.stabilise_minutes` of the build's clock
(an edit a fetch saw, or a new item's own feed date: store.items) is held back for the next build, unless holding it back would make it miss every later issue:
when it was published before `window end - late_item_days`, the next issue could not take it late,
so it is offered as it stands (and the report says so). Holding back only ever moves an item to a
later build: a rebuild of the same draft, or the next issue as a late item.

Events are listed by their start date in every issue before they start, so they are never late,
held back or too old here. Clock and settings are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .models import Item, ItemKind, Window

# How many too-old items the report names (the count covers them all).
TOO_OLD_SHOWN = 20


@dataclass(frozen=True)
class Noted:
    """An item as the build report names it."""

    key: str
    title: str
    published: datetime | None = None
    changed_at: datetime | None = None


@dataclass(frozen=True)
class BuildReport:
    """What one build offered, held back and passed over; stored with the issue (issues.build_report).

    When the issue starts sending, `offered` (and every unoffered item published before `cutoff`
    that was stored by then, `seen_up_to` being the newest item id) is marked offered by it.
    """

    built_at: datetime
    first_issue: bool
    cutoff: datetime  # items published before it are past offering: too old (or before a first issue)
    seen_up_to: int = 0
    offered: tuple[str, ...] = ()
    late: tuple[Noted, ...] = ()
    held_back: tuple[Noted, ...] = ()
    unsettled: tuple[Noted, ...] = ()  # changed recently, offered anyway: waiting would lose them
    too_old: tuple[Noted, ...] = ()
    too_old_count: int = 0
    stabilise_minutes: int = 0
    late_item_days: int = 0

    def same_as(self, other: BuildReport | None) -> bool:
        """Whether the two say the same (the build time aside)."""
        return other is not None and _without_time(self) == _without_time(other)


@dataclass(frozen=True)
class Offers:
    """A build's choice: the items compose places, and the report."""

    window_items: tuple[Item, ...]
    late_items: tuple[Item, ...]
    report: BuildReport
    held_keys: frozenset[str] = field(default_factory=frozenset)


def late_cutoff(window: Window, late_item_days: int, first_issue: bool) -> datetime:
    """The earliest publication instant this window's issue still offers (its start for a first issue)."""
    return window.start if first_issue else window.start - timedelta(days=late_item_days)


def choose_offers(window_items: Iterable[Item], late_candidates: Iterable[Item], window: Window, now: datetime,
                  changed_at: Mapping[str, datetime], *, first_issue: bool, late_item_days: int,
                  stabilise_minutes: int, too_old: Sequence[Item] = (), too_old_count: int = 0,
                  seen_up_to: int = 0) -> Offers:
    """Split the window's items and the late candidates into offered and held back; report the too old.

    `changed_at` maps keys to when their content last changed. A change counts when it lies within
    `stabilise_minutes` of the build's clock, on either side: a fetch storing an edit while the
    build runs counts too, while a change stamped far ahead of the build's clock (a build run for a
    past moment, as tests do) says nothing about the item's state then.
    """
    settle = timedelta(minutes=stabilise_minutes)
    next_cutoff = window.end - timedelta(days=late_item_days)  # the next issue's oldest late item
    cutoff = late_cutoff(window, late_item_days, first_issue)
    kept: dict[str, list[Item]] = {"window": [], "late": []}
    held: list[Noted] = []
    unsettled: list[Noted] = []
    late_noted: list[Noted] = []
    sources = [("window", list(window_items)), ("late", [] if first_issue else list(late_candidates))]
    for source, items in sources:
        for item in items:
            when = item.effective_published
            if source == "late" and (item.kind == ItemKind.EVENT or when is None or not cutoff <= when < window.start):
                continue
            changed = changed_at.get(item.key)
            recent = (stabilise_minutes > 0 and item.kind != ItemKind.EVENT and changed is not None
                      and now - settle < changed < now + settle)
            if recent and when is not None and when >= next_cutoff:
                held.append(_noted(item, changed))
                continue
            if recent:
                unsettled.append(_noted(item, changed))
            kept[source].append(item)
            if source == "late":
                late_noted.append(_noted(item))
    offered = [i.key for i in [*kept["window"], *kept["late"]] if i.kind != ItemKind.EVENT]
    report = BuildReport(
        built_at=now, first_issue=first_issue, cutoff=cutoff, seen_up_to=seen_up_to,
        offered=tuple(dict.fromkeys(offered)), late=tuple(late_noted), held_back=tuple(held),
        unsettled=tuple(unsettled), too_old=() if first_issue else tuple(_noted(i) for i in too_old[:TOO_OLD_SHOWN]),
        too_old_count=0 if first_issue else too_old_count,
        stabilise_minutes=stabilise_minutes, late_item_days=late_item_days,
    )
    return Offers(tuple(kept["window"]), tuple(kept["late"]), report, frozenset(n.key for n in held))


def _noted(item: Item, changed: datetime | None = None) -> Noted:
    return Noted(key=item.key, title=item.title, published=item.effective_published, changed_at=changed)


def _without_time(report: BuildReport) -> dict[str, Any]:
    data = report_to_json(report)
    data.pop("built_at")
    return data


# --- the report as JSON (issues.build_report) and in plain words ----------------------------------

def report_to_json(report: BuildReport) -> dict[str, Any]:
    """The report as the JSON the store keeps."""
    return {
        "built_at": report.built_at.isoformat(), "first_issue": report.first_issue,
        "cutoff": report.cutoff.isoformat(), "seen_up_to": report.seen_up_to, "offered": list(report.offered),
        "late": [_noted_json(n) for n in report.late], "held_back": [_noted_json(n) for n in report.held_back],
        "unsettled": [_noted_json(n) for n in report.unsettled], "too_old": [_noted_json(n) for n in report.too_old],
        "too_old_count": report.too_old_count, "stabilise_minutes": report.stabilise_minutes,
        "late_item_days": report.late_item_days,
    }


def report_from_json(data: Mapping[str, Any]) -> BuildReport:
    """The report the store kept (the inverse of report_to_json)."""
    return BuildReport(
        built_at=datetime.fromisoformat(data["built_at"]), first_issue=bool(data["first_issue"]),
        cutoff=datetime.fromisoformat(data["cutoff"]), seen_up_to=int(data.get("seen_up_to", 0)),
        offered=tuple(data.get("offered", ())),
        late=tuple(_noted_from(n) for n in data.get("late", ())),
        held_back=tuple(_noted_from(n) for n in data.get("held_back", ())),
        unsettled=tuple(_noted_from(n) for n in data.get("unsettled", ())),
        too_old=tuple(_noted_from(n) for n in data.get("too_old", ())),
        too_old_count=int(data.get("too_old_count", 0)), stabilise_minutes=int(data.get("stabilise_minutes", 0)),
        late_item_days=int(data.get("late_item_days", 0)),
    )


def _noted_json(noted: Noted) -> dict[str, Any]:
    return {"key": noted.key, "title": noted.title,
            "published": noted.published.isoformat() if noted.published else None,
            "changed_at": noted.changed_at.isoformat() if noted.changed_at else None}


def _noted_from(data: Mapping[str, Any]) -> Noted:
    return Noted(key=data["key"], title=data.get("title", ""),
                 published=datetime.fromisoformat(data["published"]) if data.get("published") else None,
                 changed_at=datetime.fromisoformat(data["changed_at"]) if data.get("changed_at") else None)


def report_lines(report: BuildReport, tz: Any) -> list[str]:
    """The report in plain words, one line per kind of item (none when there is nothing to say)."""
    lines = []

    def at(value: datetime | None) -> str:
        return f"{value.astimezone(tz):%d %b %Y %H:%M}" if value else "an unknown time"

    def title(noted: Noted) -> str:
        return "“" + " ".join(noted.title.split())[:120] + "”"

    if report.late:
        named = "; ".join(f"{title(n)} (published {at(n.published)})" for n in report.late)
        lines.append(f"Came in late, included: {len(report.late)} item(s) published before this window that no "
                     f"earlier issue offered (fetched after it was built, or held back from it while still being "
                     f"edited): {named}.")
    for n in report.held_back:
        ready = n.changed_at + timedelta(minutes=report.stabilise_minutes) if n.changed_at else None
        lines.append(f"Held back: {title(n)} changed at {at(n.changed_at)}, less than {report.stabilise_minutes} "
                     f"minutes (fetch.stabilise_minutes) before this build, so it may still be being edited. It waits "
                     f"for the next build: rebuild after {at(ready)} to include it here, otherwise the next issue "
                     "takes it.")
    for n in report.unsettled:
        lines.append(f"Included while still changing: {title(n)} changed at {at(n.changed_at)}, less than "
                     f"{report.stabilise_minutes} minutes before this build, but it was published more than "
                     f"{report.late_item_days} days (digest.late_item_days) before the next issue would start, "
                     "so waiting would mean it is never sent.")
    if report.too_old_count:
        named = "; ".join(f"{title(n)} (published {at(n.published)})" for n in report.too_old)
        more = report.too_old_count - len(report.too_old)
        lines.append(f"Too old, not sent: {report.too_old_count} item(s) that no sent issue offered (fetched "
                     f"after it was built) were published more than {report.late_item_days} days (digest.late_item_days) before this "
                     f"window: {named}" + (f"; and {more} more." if more > 0 else "."))
    return lines
