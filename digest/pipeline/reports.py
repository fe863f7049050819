"""Use case: reports. What the admin's pages and the public archive read; nothing here writes.

Rules that live here and nowhere else:
- only sent issues are public: the archive's index, pages, series lists and feed read them only;
- an item belongs to a series' archive when it sits in that series' section or lists the series
  in `also_in`;
- a delivery report counts as "waiting" what is queued, being sent or to be retried, and each
  subscriber who bounced once (digest.store.reports.bounced_subscribers);
- the issue page looks ahead (digest.timetable.send_outlook) only for an issue not sent yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from itertools import islice

from sqlalchemy import Engine

from ..config import Settings
from ..models import Issue, IssueEntry, IssueStatus, SectionType, Segment
from ..offers import report_from_json, report_lines
from ..store import issues as issue_store
from ..store.issues import IssueSummary
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
from ..store.runs import IssueTiming, RunNote, issue_timing, recent_runs
from ..store.subscribers import count_by_status, iter_subscribers
from ..timetable import SendOutlook, send_outlook
from .editions import issue_segments
from .managed import uses_current_settings

# How many addresses the issue page offers in its "As subscriber" list, and run notes its report shows.
SUBSCRIBER_CHOICES = 200
REPORT_RUNS = 20

__all__ = [
    "ArchivedIssue", "DeliveryReport", "IssueReport", "IssueReview", "IssueSummary", "IssueTiming", "RunNote",
    "SeriesIssue", "SubscriberChange", "SubscribersOverview", "WeekCounts", "archive_index",
    "delivery_report", "issue_report", "issue_review", "sent_issues", "series_archive", "subscribers_overview",
]


# --- the issue page ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class IssueReview:
    """What the admin's issue page shows besides the preview itself."""

    issue: Issue
    summary: IssueSummary
    timing: IssueTiming | None
    outlook: SendOutlook | None  # what the send job does with it; None once it is sending or sent
    segments: list[Segment]  # what today's subscribers read (the "As segment" choices)
    subscriber_emails: list[str]  # the first SUBSCRIBER_CHOICES addresses (the "As subscriber" list)
    build_notes: tuple[str, ...] = ()  # the last build's report in words (digest.offers): late, held back, too old


@uses_current_settings
def issue_review(settings: Settings, engine: Engine, number: int, now: datetime) -> IssueReview | None:
    """Everything the issue page shows about issue `number` at `now`, or None when there is none."""
    issue, summary = issue_store.get_issue(engine, number), issue_store.get_summary(engine, number)
    if issue is None or summary is None:
        return None
    timing = issue_timing(engine, number)
    is_open = issue.status in (IssueStatus.DRAFT, IssueStatus.APPROVED)
    return IssueReview(
        issue=issue, summary=summary, timing=timing,
        outlook=send_outlook(settings, timing, now) if is_open and timing else None,
        segments=issue_segments(settings, engine, issue),
        subscriber_emails=[s.email for s in islice(iter_subscribers(engine), SUBSCRIBER_CHOICES)],
        build_notes=_build_notes(settings, engine, number),
    )


def _build_notes(settings: Settings, engine: Engine, number: int) -> tuple[str, ...]:
    report = issue_store.build_report(engine, number)
    return tuple(report_lines(report_from_json(report), settings.site.tz)) if report else ()


# --- an issue's delivery ------------------------------------------------------------------------------

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
    # Sent, but the server's confirmation was lost (twice at most): may have arrived; never "failed".
    possibly_delivered: int = 0
    # Reports that arrived after the send (digest.pipeline.bounces): soft bounces and delay warnings.
    soft_bounces: int = 0
    delayed: int = 0


@dataclass(frozen=True)
class IssueReport:
    """The delivery report page: the issue, its list line, its deliveries and its run notes."""

    issue: Issue
    summary: IssueSummary
    delivery: DeliveryReport
    runs: list[RunNote]


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
        # Each complaint report is a `complaint` event; a reader who complained before adds no second
        # `complained` status event, and older stores only have the latter.
        complaints=max(events.get("complaint", 0), events.get("complained", 0)),
        events=events,
        possibly_delivered=counts.get("possibly_delivered", 0),
        soft_bounces=events.get("soft_bounce", 0),
        delayed=events.get("delayed", 0),
    )


def issue_report(engine: Engine, number: int) -> IssueReport | None:
    """Issue `number`'s delivery report with its newest run notes, or None when there is no such issue."""
    issue, summary = issue_store.get_issue(engine, number), issue_store.get_summary(engine, number)
    if issue is None or summary is None:
        return None
    return IssueReport(issue=issue, summary=summary, delivery=delivery_report(engine, number),
                       runs=recent_runs(engine, limit=REPORT_RUNS, issue_number=number))


# --- subscribers ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SubscribersOverview:
    by_status: dict[str, int]
    by_series: list[tuple[str, str, int]]  # (series id, name, confirmed subscribers receiving it)
    weeks: list[WeekCounts]  # sign-ups and leaves per week, oldest first
    changes: list[SubscriberChange]  # the newest first


@uses_current_settings
def subscribers_overview(settings: Settings, engine: Engine, now: datetime) -> SubscribersOverview:
    """Counts by status and series, the weeks' sign-ups and leaves, and the latest changes."""
    series = confirmed_by_series(engine, [s.id for s in settings.series])
    return SubscribersOverview(
        by_status=count_by_status(engine),
        by_series=[(s.id, s.name, series.get(s.id, 0)) for s in settings.series],
        weeks=weekly_changes(engine, now, settings.site.tz),
        changes=recent_changes(engine),
    )


# --- the archive: sent issues only ------------------------------------------------------------------

@dataclass(frozen=True)
class ArchivedIssue:
    issue: Issue
    sent_at: datetime | None


@dataclass(frozen=True)
class SeriesIssue:
    """A sent issue with the items it carried of one series."""

    sent: ArchivedIssue
    entries: list[IssueEntry]


def archive_index(engine: Engine) -> list[IssueSummary]:
    """Every sent issue's list line, newest first (cheap: no sections)."""
    return issue_store.list_issues(engine, (IssueStatus.SENT,))


def sent_issues(engine: Engine, limit: int | None = None) -> list[ArchivedIssue]:
    """The sent issues (the newest `limit` of them), newest first, with when each was sent."""
    found = []
    for summary in archive_index(engine)[:limit]:
        issue = issue_store.get_issue(engine, summary.number)
        if issue is not None and issue.status == IssueStatus.SENT:  # not changed since the list was read
            found.append(ArchivedIssue(issue, summary.sent_at))
    return found


def series_archive(engine: Engine, series_id: str) -> list[SeriesIssue]:
    """The sent issues that carried items of series `series_id`, newest first, with those items."""
    found = []
    for sent in sent_issues(engine):
        entries = [e for s in sent.issue.sections if s.type == SectionType.SERIES for e in s.entries
                   if s.series == series_id or series_id in e.also_in]
        if entries:
            found.append(SeriesIssue(sent, entries))
    return found
