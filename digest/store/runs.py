"""The scheduler's notes (`run_log`) and the few issue fields the schedule reads and sets.

`digest status` and the admin pages show the notes ("week skipped: nothing new"); the scheduler
uses `scheduled_for` to make a second run for the same cron fire time a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Column, Engine, Float, MetaData, Row, Table, Unicode, inspect, select

from ..models import IssueStatus
from .schema import issues as issues_table
from .schema import run_log


@dataclass(frozen=True)
class RunNote:
    at: datetime
    job: str
    outcome: str
    detail: str = ""
    scheduled_for: datetime | None = None
    issue_number: int | None = None


@dataclass(frozen=True)
class IssueTiming:
    """When an issue was built, approved and is due; what the send job decides on."""

    number: int
    status: str
    created_at: datetime
    window_end: datetime
    approved_at: datetime | None
    send_at: datetime | None
    sent_at: datetime | None


@dataclass(frozen=True)
class IssueRecord:
    """An issue's bookkeeping as `digest status` and the admin lists show it."""

    number: int
    status: str
    window_start: datetime
    window_end: datetime
    subject: str
    version: str
    created_at: datetime
    updated_at: datetime
    approved_at: datetime | None
    approved_by: str | None
    approved_version: str | None
    send_at: datetime | None
    sending_started_at: datetime | None
    sent_at: datetime | None


def record_run(engine: Engine, job: str, outcome: str, detail: str = "", scheduled_for: datetime | None = None,
               issue_number: int | None = None, now: datetime | None = None) -> RunNote:
    """Append one note to the run log and return it."""
    note = RunNote(at=now or datetime.now(UTC), job=job, outcome=outcome, detail=detail,
                   scheduled_for=scheduled_for, issue_number=issue_number)
    with engine.begin() as conn:
        conn.execute(run_log.insert().values(**note.__dict__))
    return note


def recent_runs(engine: Engine, limit: int = 20, job: str | None = None,
                issue_number: int | None = None) -> list[RunNote]:
    """The newest notes first; only `job`'s, or only those about issue `issue_number`, when given."""
    query = select(run_log).order_by(run_log.c.at.desc(), run_log.c.id.desc()).limit(limit)
    if job:
        query = query.where(run_log.c.job == job)
    if issue_number is not None:
        query = query.where(run_log.c.issue_number == issue_number)
    with engine.connect() as conn:
        return [_note(row) for row in conn.execute(query)]


def ran_for(engine: Engine, job: str, scheduled_for: datetime, outcomes: tuple[str, ...]) -> bool:
    """Whether `job` already has a note with one of `outcomes` for this cron fire time."""
    query = select(run_log.c.id).where(
        run_log.c.job == job, run_log.c.scheduled_for == scheduled_for, run_log.c.outcome.in_(outcomes)
    ).limit(1)
    with engine.connect() as conn:
        return conn.execute(query).first() is not None


def issue_timings(engine: Engine, statuses: tuple[IssueStatus, ...]) -> list[IssueTiming]:
    """Issues in the given statuses, oldest first."""
    query = select(
        issues_table.c.number, issues_table.c.status, issues_table.c.created_at, issues_table.c.window_end,
        issues_table.c.approved_at, issues_table.c.send_at, issues_table.c.sent_at,
    ).where(issues_table.c.status.in_([s.value for s in statuses])).order_by(issues_table.c.number)
    with engine.connect() as conn:
        return [IssueTiming(**row._mapping) for row in conn.execute(query)]


def issue_timing(engine: Engine, number: int) -> IssueTiming | None:
    """One issue's timing, or None if there is no such issue."""
    query = select(*[issues_table.c[name] for name in IssueTiming.__dataclass_fields__]).where(
        issues_table.c.number == number)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return IssueTiming(**row._mapping) if row else None


def set_send_time(engine: Engine, number: int, send_at: datetime | None, now: datetime | None = None) -> bool:
    """Schedule (or with None, unschedule) an issue that is not sent yet; False if it is sending or sent."""
    with engine.begin() as conn:
        result = conn.execute(
            issues_table.update()
            .where(issues_table.c.number == number,
                   issues_table.c.status.in_([IssueStatus.DRAFT.value, IssueStatus.APPROVED.value]))
            .values(send_at=send_at, updated_at=now or datetime.now(UTC))
        )
    return result.rowcount == 1


def hold_for_approval(engine: Engine, number: int, reason: str, now: datetime | None = None) -> bool:
    """Set an approved issue back to draft (its approval is cleared) and note why; False if not approved."""
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        result = conn.execute(
            issues_table.update()
            .where(issues_table.c.number == number, issues_table.c.status == IssueStatus.APPROVED.value)
            .values(status=IssueStatus.DRAFT.value, approved_at=None, approved_by=None, approved_version=None,
                    send_at=None, updated_at=now)
        )
        if result.rowcount != 1:
            return False
        conn.execute(run_log.insert().values(at=now, job="send", outcome="held", detail=reason, issue_number=number))
    return True


def issue_records(engine: Engine, statuses: tuple[IssueStatus, ...] | None = None, limit: int = 100) -> list[IssueRecord]:
    """Issues newest first, optionally only those in `statuses`."""
    columns = [issues_table.c[name] for name in IssueRecord.__dataclass_fields__]
    query = select(*columns).order_by(issues_table.c.number.desc()).limit(limit)
    if statuses:
        query = query.where(issues_table.c.status.in_([s.value for s in statuses]))
    with engine.connect() as conn:
        return [IssueRecord(**row._mapping) for row in conn.execute(query)]


def job_store_next_runs(engine: Engine, table: str) -> dict[str, datetime | None]:
    """Next run time per job id as the scheduler's persistent job store holds it ({} before the first run)."""
    if not inspect(engine).has_table(table):
        return {}
    jobs = Table(table, MetaData(), Column("id", Unicode(191), primary_key=True), Column("next_run_time", Float))
    with engine.connect() as conn:
        return {row.id: None if row.next_run_time is None else datetime.fromtimestamp(row.next_run_time, UTC)
                for row in conn.execute(select(jobs.c.id, jobs.c.next_run_time))}


def _note(row: Row) -> RunNote:
    return RunNote(**{k: row._mapping[k] for k in RunNote.__dataclass_fields__})
