"""Use case: status. What `digest status` and the admin's health pages show: next runs, the last build, the current draft, the last sent issue, feed health,
run notes.

The last build's outcome (built, skipped, missed, error) is kept apart from the run notes: fetches
add a note every few hours, so a skipped week would soon scroll out of them.

`collect_status` reads; `status_as_dict` gives the JSON shape; the CLI prints either.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import Engine

from ..config import ConfigError, Settings
from ..models import IssueStatus
from ..store.feeds import FeedState, all_feed_states
from ..store.ledger import ledger_counts
from ..store.locks import JOBS_TABLE, active_scheduler
from ..store.runs import IssueRecord, RunNote, issue_records, job_store_next_runs, recent_runs
from ..timetable import build_trigger, fetch_trigger, send_trigger
from .ingest import feeds_to_fetch
from .managed import uses_current_settings
from .runs import JOB_BUILD, JOB_FETCH, JOB_SEND


@dataclass(frozen=True)
class NextRun:
    job: str
    at: datetime | None
    # "job store" (what the running scheduler will do) or "settings" (computed; no scheduler ran yet).
    source: str
    overdue: bool = False


@dataclass(frozen=True)
class IssueFigures:
    issue: IssueRecord
    deliveries: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    now: datetime
    timezone: str
    next_runs: list[NextRun]
    scheduler: str | None
    last_build: RunNote | None
    draft: IssueFigures | None
    last_sent: IssueFigures | None
    feeds: list[FeedState]
    runs: list[RunNote]
    problems: list[str] = field(default_factory=list)


@uses_current_settings
def collect_status(settings: Settings, engine: Engine, now: datetime, runs: int = 10) -> Status:
    """Everything `digest status` shows, read from the store and the schedule settings."""
    next_runs, problems = _next_runs(settings, engine, now)
    current = issue_records(engine, (IssueStatus.DRAFT, IssueStatus.APPROVED, IssueStatus.SENDING), limit=1)
    sent = issue_records(engine, (IssueStatus.SENT,), limit=1)
    last_build = recent_runs(engine, limit=1, job=JOB_BUILD)
    return Status(
        now=now,
        timezone=settings.site.timezone,
        next_runs=next_runs,
        scheduler=active_scheduler(engine),
        last_build=last_build[0] if last_build else None,
        draft=_figures(engine, current[0]) if current else None,
        last_sent=_figures(engine, sent[0]) if sent else None,
        feeds=_feeds(settings, engine),
        runs=recent_runs(engine, limit=runs),
        problems=problems,
    )


def _next_runs(settings: Settings, engine: Engine, now: datetime) -> tuple[list[NextRun], list[str]]:
    stored = job_store_next_runs(engine, JOBS_TABLE)
    runs, problems = [], []
    for job, make in ((JOB_FETCH, fetch_trigger), (JOB_BUILD, build_trigger), (JOB_SEND, send_trigger)):
        if job in stored:
            at = stored[job]
            runs.append(NextRun(job, at, "job store", overdue=at is not None and at < now))
            continue
        try:
            fire = make(settings).get_next_fire_time(None, now)
        except ConfigError as exc:
            problems.append(str(exc))
            fire = None
        runs.append(NextRun(job, fire, "settings"))
    return runs, problems


def _figures(engine: Engine, issue: IssueRecord) -> IssueFigures:
    return IssueFigures(issue=issue, deliveries=ledger_counts(engine, issue.number))


def _feeds(settings: Settings, engine: Engine) -> list[FeedState]:
    """The feeds a fetch takes now (digest.toml's or the store's), in order, with a blank state for those never fetched."""
    states = {s.name: s for s in all_feed_states(engine)}
    return [states.get(f.name) or FeedState(name=f.name, url=f.url) for f in feeds_to_fetch(settings, engine)]


def status_as_dict(status: Status) -> dict:
    """The JSON shape of `digest status --json` (datetimes as ISO 8601 strings)."""
    return _jsonable(asdict(status))


def _jsonable(value: object) -> object:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value
