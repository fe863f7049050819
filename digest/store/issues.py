"""Issues in the store: drafts created and refreshed by builds, approval, the status lifecycle.

Statuses: draft → approved → sending → sent, and cancelled. An issue's content lives in its
manifest (JSON, see digest/manifest.py); the columns status, version, window and the editorial
choices are authoritative and `get_issue` applies them over the manifest. Sent (and sending)
issues never change. Every write checks what it read (status, version) in its WHERE clause, so two
processes can race safely: the loser gets ConcurrentChange (or IntegrityError for a new number)
and retries.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, Connection, Engine, func, select

from ..manifest import issue_from_manifest
from ..models import Editorial, EditorialTexts, Issue, IssueStatus, Window
from .items import mark_offered, mark_window_offered
from .schema import issues as issues_table

OPEN_STATUSES = (IssueStatus.DRAFT, IssueStatus.APPROVED)
# Which status may follow which through set_status (approval goes through approve_issue).
TRANSITIONS = {
    IssueStatus.DRAFT: {IssueStatus.CANCELLED},
    IssueStatus.APPROVED: {IssueStatus.DRAFT, IssueStatus.SENDING, IssueStatus.CANCELLED},
    IssueStatus.SENDING: {IssueStatus.SENT},
    IssueStatus.SENT: set(),
    IssueStatus.CANCELLED: {IssueStatus.DRAFT},
}


class IssueError(Exception):
    """An issue operation that cannot be done; the message says why and what to do."""


class IssueNotFound(IssueError, LookupError):
    """There is no issue with that number."""


class IssueStateError(IssueError):
    """The issue's status does not allow this (e.g. a sent issue never changes)."""


class StaleVersion(IssueStateError):
    """The issue changed since the version the caller saw."""


class WindowConflict(IssueStateError):
    """A build whose window would give readers an item twice: it overlaps another issue's window, or
    would reopen a cancelled issue while another one is open."""


class ConcurrentChange(IssueError):
    """Another process changed the issue between our read and our write; read again and retry."""


@dataclass(frozen=True)
class IssueSummary:
    """One line of the issue list: no sections, cheap to read for many issues."""

    number: int
    status: IssueStatus
    window: Window
    subject: str
    version: str
    items: int
    created_at: datetime
    updated_at: datetime
    approved_at: datetime | None = None
    approved_by: str | None = None
    approved_version: str | None = None
    sending_started_at: datetime | None = None
    sent_at: datetime | None = None


# --- reads ----------------------------------------------------------------------------------------

def get_issue(engine: Engine, number: int) -> Issue | None:
    """The issue from its stored manifest, with status, version and editorial from the columns."""
    with engine.connect() as conn:
        row = conn.execute(select(issues_table).where(issues_table.c.number == number)).first()
    return _issue(row) if row else None


def require_issue(engine: Engine, number: int) -> Issue:
    """get_issue, raising IssueNotFound with a hint when there is no such issue."""
    issue = get_issue(engine, number)
    if issue is None:
        raise IssueNotFound(f"there is no issue {number}; `digest issue list` lists the issues")
    return issue


def latest_sent_issue(engine: Engine) -> Issue | None:
    """The sent issue with the latest window end, or None before the first send."""
    return _first(engine, [IssueStatus.SENT], issues_table.c.window_end.desc())


def last_sent_end(engine: Engine) -> datetime | None:
    """Where the next default window starts: the latest window end of a sending or sent issue."""
    query = select(func.max(issues_table.c.window_end)).where(
        issues_table.c.status.in_([IssueStatus.SENDING.value, IssueStatus.SENT.value]))
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def open_issue(engine: Engine) -> Issue | None:
    """The draft or approved issue a build refreshes (the oldest if, unusually, there are several)."""
    return _first(engine, OPEN_STATUSES, issues_table.c.number)


def issue_reaching(engine: Engine, moment: datetime) -> Issue | None:
    """The issue that is not cancelled whose window ends latest, if that end is at or after `moment`."""
    query = (select(issues_table).where(issues_table.c.status != IssueStatus.CANCELLED.value,
                                        issues_table.c.window_end >= moment)
             .order_by(issues_table.c.window_end.desc()).limit(1))
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _issue(row) if row else None


def issue_for_window(engine: Engine, window: Window) -> Issue | None:
    """The issue (any status) with exactly this window; there is at most one."""
    query = select(issues_table).where(issues_table.c.window_start == window.start,
                                       issues_table.c.window_end == window.end)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    return _issue(row) if row else None


def overlapping_issues(engine: Engine, window: Window) -> list[IssueSummary]:
    """Issues that are not cancelled whose window shares an instant with `window` (ends exclusive)."""
    query = select(issues_table).where(
        issues_table.c.window_start < window.end, issues_table.c.window_end > window.start,
        issues_table.c.status != IssueStatus.CANCELLED.value).order_by(issues_table.c.number)
    with engine.connect() as conn:
        return [_summary(r) for r in conn.execute(query)]


def refuse_window_conflict(engine: Engine, window: Window, target: Issue | None, tz: ZoneInfo) -> None:
    """Raise WindowConflict unless building `window` into `target` (None: a new issue) is safe.

    Safe means: no other issue that is not cancelled overlaps the window (each item reaches a
    reader once), and `target`, if cancelled, is reopened only while no other issue is open.
    """
    mine = target.number if target is not None else None
    for other in overlapping_issues(engine, window):
        if mine is None and other.window == window:
            # Another builder created this very window since the caller looked: not a conflict but a
            # race, which the caller's retry turns into refreshing that issue.
            raise ConcurrentChange(f"issue {other.number} was just created for this window by another builder")
        if other.number != mine:
            raise WindowConflict(f"the window {_span(window, tz)} overlaps issue {other.number} ({other.status.value}, "
                                 f"{_span(other.window, tz)}): its items would reach readers twice; "
                                 + _overlap_hint(other, tz))
    if target is not None and target.status == IssueStatus.CANCELLED:
        open_now = open_issue(engine)  # never the target itself: a cancelled issue is not open
        if open_now is not None:
            raise WindowConflict(
                f"building {_span(window, tz)} would reopen cancelled issue {target.number} while issue "
                f"{open_now.number} is {open_now.status.value} ({_span(open_now.window, tz)}); cancel issue "
                f"{open_now.number} first (`digest issue cancel {open_now.number}`), or keep working on it")


def _overlap_hint(other: IssueSummary, tz: ZoneInfo) -> str:
    if other.status in OPEN_STATUSES:
        return (f"refresh issue {other.number} by building its window (`digest build` with no --since), "
                f"or cancel it first (`digest issue cancel {other.number}`)")
    return f"start the window at its end or later (--since {other.window.end.astimezone(tz).isoformat()})"


def _span(window: Window, tz: ZoneInfo) -> str:
    return f"{window.start.astimezone(tz):%Y-%m-%d %H:%M} → {window.end.astimezone(tz):%Y-%m-%d %H:%M}"


def list_issues(engine: Engine, statuses: Iterable[IssueStatus] | None = None) -> list[IssueSummary]:
    """Issues, newest number first, optionally only those with these statuses."""
    query = select(issues_table).order_by(issues_table.c.number.desc())
    if statuses is not None:
        query = query.where(issues_table.c.status.in_([IssueStatus(s).value for s in statuses]))
    with engine.connect() as conn:
        return [_summary(r) for r in conn.execute(query)]


def get_summary(engine: Engine, number: int) -> IssueSummary | None:
    """The list line of one issue, with who approved which version and when it was sent."""
    with engine.connect() as conn:
        row = conn.execute(select(issues_table).where(issues_table.c.number == number)).first()
    return _summary(row) if row else None


def _first(engine: Engine, statuses: Iterable[IssueStatus], order: ColumnElement[Any]) -> Issue | None:
    query = select(issues_table).where(issues_table.c.status.in_([s.value for s in statuses])).order_by(order)
    with engine.connect() as conn:
        row = conn.execute(query.limit(1)).first()
    return _issue(row) if row else None


def _issue(row: Any) -> Issue:
    issue = issue_from_manifest(row.manifest)
    return replace(
        issue,
        number=row.number,
        status=IssueStatus(row.status),
        window=Window(row.window_start, row.window_end),
        editorial=_editorial(row),
        version=row.version,
        created_at=row.created_at,
    )


# The `texts` column: {"fr": {"subject": …, "intro": …, "lead": …}, …} for languages other than the
# site's, and the site language's lead under DEFAULT_TEXTS (the columns intro and subject hold its
# other texts; a language code is never "default").
DEFAULT_TEXTS = "default"


def _editorial(row: Any) -> Editorial:
    stored = row.texts if isinstance(row.texts, dict) else {}
    texts = tuple(
        EditorialTexts(language, **{f: str(v) for f, v in fields.items() if f in ("subject", "intro", "lead")})
        for language, fields in sorted(stored.items()) if language != DEFAULT_TEXTS and isinstance(fields, dict))
    lead = stored.get(DEFAULT_TEXTS, {}).get("lead", "") if isinstance(stored.get(DEFAULT_TEXTS), dict) else ""
    return Editorial(intro=row.intro, subject=row.subject, dropped=tuple(row.dropped), pinned=tuple(row.pinned),
                     lead=str(lead), texts=texts)


def texts_json(editorial: Editorial) -> dict[str, dict[str, str]] | None:
    """The `texts` column's JSON for these choices (None when staff wrote nothing beyond subject and intro)."""
    stored = {t.language: {f: v for f, v in (("subject", t.subject), ("intro", t.intro), ("lead", t.lead)) if v}
              for t in editorial.texts}
    if editorial.lead:
        stored[DEFAULT_TEXTS] = {"lead": editorial.lead}
    return stored or None


def _summary(row: Any) -> IssueSummary:
    manifest = row.manifest
    return IssueSummary(
        number=row.number, status=IssueStatus(row.status), window=Window(row.window_start, row.window_end),
        subject=manifest["issue"].get("subject", row.subject), version=row.version,
        items=sum(len(s.get("items", ())) for s in manifest.get("sections", ())),
        created_at=row.created_at, updated_at=row.updated_at, approved_at=row.approved_at,
        approved_by=row.approved_by, approved_version=row.approved_version,
        sending_started_at=row.sending_started_at, sent_at=row.sent_at,
    )


# --- writes ---------------------------------------------------------------------------------------

def create_issue(engine: Engine, issue: Issue, manifest: dict, now: datetime, build_report: dict | None = None) -> Issue:
    """Store a new draft under the next number; IntegrityError when another builder won the race.

    `build_report` is digest.offers' report of the build as JSON (what it offered, held back, passed over).
    """
    with engine.begin() as conn:
        number = conn.execute(select(func.coalesce(func.max(issues_table.c.number), 0))).scalar_one() + 1
        stored = _patched(manifest, number=number, status=IssueStatus.DRAFT.value)
        conn.execute(issues_table.insert().values(
            number=number, status=IssueStatus.DRAFT.value, created_at=now, updated_at=now,
            build_report=build_report, **_content(issue, stored)))
    return replace(issue, number=number, status=IssueStatus.DRAFT, created_at=now)


def refresh_issue(engine: Engine, current: Issue, issue: Issue, manifest: dict, now: datetime,
                  build_report: dict | None = None, report_changed: bool = False) -> Issue:
    """Replace `current`'s content with a fresh composition; a new version returns it to draft.

    Nothing is written when nothing changed (`report_changed`: the build report did, which is
    written without touching the version or the approval). A cancelled issue is reopened as a draft. Raises
    IssueStateError for sending/sent issues and ConcurrentChange when `current` is out of date.
    """
    if current.status in (IssueStatus.SENDING, IssueStatus.SENT):
        raise IssueStateError(f"issue {current.number} is {current.status.value}; a sent issue never changes")
    same_version = issue.version == current.version and current.status != IssueStatus.CANCELLED
    status = current.status if same_version else IssueStatus.DRAFT
    result = replace(issue, number=current.number, status=status, created_at=current.created_at)
    if same_version and issue.window == current.window and not report_changed:
        return result
    values = {"status": status.value, "updated_at": now, **_content(issue, _patched(
        manifest, number=current.number, status=status.value))}
    if build_report is not None:
        values["build_report"] = build_report
    if not same_version:
        values.update(approved_at=None, approved_by=None, approved_version=None)
    _update_checked(engine, current, values)
    return result


def approve_issue(engine: Engine, number: int, by: str, version: str, now: datetime | None = None) -> Issue:
    """Approve exactly `version` of a draft, recording who; refuses a stale version.

    Approving an already approved issue at the same version is a no-op (returns it unchanged).
    """
    now = now or datetime.now(UTC)
    issue = require_issue(engine, number)
    if version != issue.version:
        raise StaleVersion(f"issue {number} changed since version {version or '(none)'} was previewed; "
                           f"the current version is {issue.version}: preview it again, then approve that")
    if issue.status == IssueStatus.APPROVED:
        return issue
    if issue.status != IssueStatus.DRAFT:
        raise IssueStateError(f"issue {number} is {issue.status.value}; only a draft can be approved")
    _update_checked(engine, issue, {
        "status": IssueStatus.APPROVED.value, "approved_at": now, "approved_by": " ".join(by.split())[:200],
        "approved_version": version, "manifest": _patched(_manifest(engine, number), status=IssueStatus.APPROVED.value),
    })
    return replace(issue, status=IssueStatus.APPROVED)


def set_status(engine: Engine, number: int, status: IssueStatus, now: datetime | None = None) -> Issue:
    """Move an issue along its lifecycle (see TRANSITIONS); approval goes through approve_issue.

    Atomic: of two processes moving an approved issue to sending, exactly one succeeds; the
    other gets IssueStateError.
    """
    now = now or datetime.now(UTC)
    status = IssueStatus(status)
    issue = require_issue(engine, number)
    if status not in TRANSITIONS[issue.status]:
        hint = " (use approve_issue / `digest approve`)" if status == IssueStatus.APPROVED else ""
        raise IssueStateError(f"issue {number} is {issue.status.value}; it cannot become {status.value}{hint}")
    values: dict[str, Any] = {"status": status.value, "updated_at": now,
                              "manifest": _patched(_manifest(engine, number), status=status.value)}
    if status == IssueStatus.SENDING:
        values["sending_started_at"] = now
    elif status == IssueStatus.SENT:
        values["sent_at"] = now
    elif status == IssueStatus.DRAFT:
        values.update(approved_at=None, approved_by=None, approved_version=None)
    try:
        with engine.begin() as conn:
            _checked(conn, issue, values)
            if status == IssueStatus.SENDING:
                _mark_items_offered(conn, issue)
    except ConcurrentChange:
        raise IssueStateError(f"issue {number} changed while moving it to {status.value}; check its status") from None
    return replace(issue, status=status)


def _update_checked(engine: Engine, seen: Issue, values: dict) -> None:
    """UPDATE the issue only if its status and version are still what we read."""
    with engine.begin() as conn:
        _checked(conn, seen, values)


def _checked(conn: Connection, seen: Issue, values: dict) -> None:
    result = conn.execute(issues_table.update().where(
        issues_table.c.number == seen.number,
        issues_table.c.status == seen.status.value,
        issues_table.c.version == seen.version,
    ).values(**values))
    if result.rowcount != 1:
        raise ConcurrentChange(f"issue {seen.number} was changed by someone else meanwhile; try again")


def build_report(engine: Engine, number: int) -> dict | None:
    """Issue `number`'s last build report (JSON, see digest.offers), or None (none kept, or no such issue)."""
    with engine.connect() as conn:
        return conn.execute(select(issues_table.c.build_report).where(issues_table.c.number == number)).scalar()


def _mark_items_offered(conn: Connection, issue: Issue) -> None:
    """The issue starts sending: what its last build offered (and passed over) is offered, once and for all."""
    report = conn.execute(select(issues_table.c.build_report)
                          .where(issues_table.c.number == issue.number)).scalar()
    if report is None:  # built before migration 0005: its window cut by publication date
        mark_window_offered(conn, issue.number, issue.window.end)
        return
    mark_offered(conn, issue.number, report.get("offered", []), datetime.fromisoformat(report["cutoff"]),
                 int(report.get("seen_up_to", 0)))


def _manifest(engine: Engine, number: int) -> dict:
    with engine.connect() as conn:
        return conn.execute(select(issues_table.c.manifest).where(issues_table.c.number == number)).scalar_one()


def _content(issue: Issue, manifest: dict) -> dict:
    ed = issue.editorial
    return {
        "window_start": issue.window.start, "window_end": issue.window.end,
        "intro": ed.intro, "subject": ed.subject, "dropped": list(ed.dropped), "pinned": list(ed.pinned),
        "texts": texts_json(ed), "manifest": manifest, "version": issue.version,
    }


def _patched(manifest: dict, **head: Any) -> dict:
    patched = copy.deepcopy(manifest)
    patched["issue"].update(head)
    return patched
