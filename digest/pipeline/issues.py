"""Use case: issues. Build, edit, approve, cancel and schedule an issue (the weekly build-and-notify step: pipeline.weekly).

Rules that live here and nowhere else:
- the default window (open draft's start, else the end of the last sent issue, else `window_days`);
- a reader never gets an item twice: windows of issues that are not cancelled never overlap;
- every stored item is offered to exactly one sent issue: an item fetched after its window's issue
  was built goes into the next issue, late (digest.offers has the rule, with stabilisation);
- approval is of exactly the version previewed, and tells what the send job will now do with it;
- a scheduled send time lies in the future, and only a draft or approved issue has one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from ..compose import EditorialError, compose_issue, default_window, edit_editorial, has_news
from ..config import Settings
from ..manifest import issue_to_manifest, issue_version
from ..models import EDITORIAL_FIELDS, Account, Editorial, Issue, IssueStatus, Role, Window
from ..offers import (
    TOO_OLD_SHOWN,
    Offers,
    choose_offers,
    late_cutoff,
    report_from_json,
    report_lines,
    report_to_json,
)
from ..related import POOL_PER_SERIES, POOL_RECENT
from ..store import issues as issue_store
from ..store.issues import (
    OPEN_STATUSES,
    ConcurrentChange,
    IssueNotFound,
    IssueStateError,
    IssueSummary,
    require_issue,
)
from ..store.items import (
    changed_since,
    events_starting_between,
    items_between,
    items_in_series,
    late_candidates,
    latest_items,
    newest_item_id,
    too_old_items,
)
from ..store.runs import IssueTiming, issue_timing, set_send_time
from ..timetable import SendOutlook, send_outlook
from .accounts import NotAllowed, why_not
from .audit import EDITS, last_editor, record
from .editions import Everyone, edition_for, issue_segments
from .ingest import feed_health
from .managed import uses_current_settings

log = logging.getLogger("digest.pipeline")

T = TypeVar("T")


# --- reading --------------------------------------------------------------------------------------

def list_issues(engine: Engine, statuses: tuple[IssueStatus, ...] | None = None) -> list[IssueSummary]:
    """Every issue (or those in `statuses`), newest first, without their manifests."""
    return issue_store.list_issues(engine, statuses)


def find_issue(engine: Engine, number: int) -> Issue | None:
    """The issue numbered `number`, or None."""
    return issue_store.get_issue(engine, number)


def get_issue(engine: Engine, number: int) -> Issue:
    """The issue numbered `number`; IssueNotFound (a LookupError) when there is none."""
    return require_issue(engine, number)


def issue_summary(engine: Engine, number: int) -> IssueSummary | None:
    """An issue's list row (status, who approved, when sent), or None."""
    return issue_store.get_summary(engine, number)


# --- building and editing -------------------------------------------------------------------------

@uses_current_settings
def build_issue(settings: Settings, engine: Engine, now: datetime, since: datetime | None = None,
                until: datetime | None = None, allow_empty: bool = False, actor: Account | None = None) -> Issue | None:
    """Compose the draft issue for a window (creating or refreshing it); None when nothing is new.

    Default window: the open draft's start (else the end of the last sent issue, else
    `window_days` back on the site's clock) to `now`. The open draft, or the issue with exactly
    this window, is refreshed, keeping its editorial choices; otherwise a new draft gets the next
    number. Raises ValueError for an empty window, IssueStateError when the window's issue was
    sent, WindowConflict when the window overlaps another issue that is not cancelled or would
    reopen a cancelled issue while another is open (a reader must never get an item twice).
    """
    built = _build_window(settings, engine, now, since, until, allow_empty)
    if built is not None:
        record(engine, actor, "issue.build", issue_number=built.number,
               detail={"version": built.version, "window": _window_words(built)}, now=now)
    return built


def _build_window(settings: Settings, engine: Engine, now: datetime, since: datetime | None,
                  until: datetime | None, allow_empty: bool) -> Issue | None:
    now = now.replace(microsecond=0)  # windows to the second read better and match across refreshes

    def attempt() -> Issue | None:
        current = issue_store.open_issue(engine)
        start = since or (current.window.start if current else None) or issue_store.last_sent_end(engine)
        window = default_window(until or now, start, settings.digest.window_days, settings.site.tz)
        if not window.start < window.end:
            raise ValueError(f"the window {window.start.isoformat()} .. {window.end.isoformat()} is empty; "
                             "--since must be before --until (and before now)")
        target = issue_store.issue_for_window(engine, Window(window.start, window.end)) or current
        issue_store.refuse_window_conflict(engine, window, target, settings.site.tz)
        issue, offers = _compose_offers(settings, engine, window, now, target.editorial if target else Editorial())
        # Nothing new is no issue, and never a reason to move or empty an open draft of another window.
        news = has_news(issue) or bool(offers.late_items)
        if not (allow_empty or news) and (target is None or target.window != window):
            return None
        return _save_issue(settings, engine, target, issue, now, offers)

    return _retry_on_race(attempt)


def _window_words(issue: Issue) -> str:
    return f"{issue.window.start.isoformat(timespec='minutes')} .. {issue.window.end.isoformat(timespec='minutes')}"


@uses_current_settings
def rebuild_issue(settings: Settings, engine: Engine, number: int, now: datetime,
                  actor: Account | None = None) -> Issue:
    """Compose a draft or approved issue's window again from the stored items (even if nothing is new)."""
    issue = require_issue(engine, number)
    if issue.status not in OPEN_STATUSES:
        raise IssueStateError(f"issue {number} is {issue.status.value}; only a draft or approved issue can be "
                              "rebuilt, a sent issue never changes")
    rebuilt = _build_window(settings, engine, now, issue.window.start, issue.window.end, allow_empty=True)
    assert rebuilt is not None  # allow_empty always builds
    record(engine, actor, "issue.rebuild", issue_number=number, detail={"version": rebuilt.version}, now=now)
    return rebuilt


@uses_current_settings
def edit_issue(settings: Settings, engine: Engine, number: int, now: datetime, actor: Account | None = None,
               **changes: Any) -> Issue:
    """Change a draft's editorial choices (intro, subject, lead, texts, drop, undrop, pin, unpin) and recompose it.

    `texts` holds other languages' subject, intro and lead (compose.edit_editorial); given for the
    site language, they are the issue's own subject, intro and lead.

    An approved issue returns to draft when its version changes. Raises IssueNotFound,
    IssueStateError (not a draft/approved issue) or EditorialError (e.g. an unknown item key, a
    subject too long). The audit trail records `actor` and what was asked.
    """
    changes = _site_language_texts(settings, changes)

    def attempt() -> Issue:
        current = require_issue(engine, number)
        if current.status not in OPEN_STATUSES:
            raise IssueStateError(f"issue {number} is {current.status.value}; only a draft or approved issue can be edited")
        editorial = edit_editorial(current, **changes)
        issue, offers = _compose_offers(settings, engine, current.window, now, editorial)
        return _save_issue(settings, engine, current, issue, now, offers)

    edited = _retry_on_race(attempt)
    asked = {k: (v if isinstance(v, str | dict) else list(v)) for k, v in changes.items() if v}
    record(engine, actor, "issue.edit", issue_number=number, detail={**asked, "version": edited.version}, now=now)
    return edited


def _site_language_texts(settings: Settings, changes: dict[str, Any]) -> dict[str, Any]:
    """`texts` given for the site language are its subject, intro and lead (the issue's own fields)."""
    texts = changes.get("texts")
    site = settings.site.language
    if not isinstance(texts, dict) or site not in texts:
        return changes
    texts = dict(texts)
    own = texts.pop(site)
    own = {f: "" for f in EDITORIAL_FIELDS} if own is None else own
    if (not isinstance(own, dict) or set(own) - set(EDITORIAL_FIELDS)
            or not all(isinstance(v, str | None) for v in own.values())):
        raise EditorialError(f"texts in {site!r}: give subject, intro and lead as strings")
    merged = {**changes, "texts": texts} if texts else {k: v for k, v in changes.items() if k != "texts"}
    merged.update({f: own[f] or "" for f in EDITORIAL_FIELDS if f in own and f not in changes})
    return merged


def editorial_json(editorial: Editorial) -> dict[str, Any]:
    """The lead text and other languages' texts as the manifest's issue.editorial adds them (only when
    written, so an issue without them keeps the version it always had)."""
    extra: dict[str, Any] = {}
    if editorial.lead:
        extra["lead"] = editorial.lead
    if editorial.texts:
        extra["texts"] = {t.language: {"subject": t.subject, "intro": t.intro, "lead": t.lead} for t in editorial.texts}
    return extra


def _manifest_of(issue: Issue, settings: Settings, segments: Any = None) -> dict[str, Any]:
    manifest = issue_to_manifest(issue, settings, segments)
    manifest["issue"].setdefault("editorial", {}).update(editorial_json(issue.editorial))
    return manifest


def issue_changed(before: Issue, after: Issue) -> bool:
    """Whether an edit changed what readers get (its version) or the editorial choices."""
    return after.version != before.version or after.editorial != before.editorial


@uses_current_settings
def compose_window(settings: Settings, engine: Engine, window: Window, now: datetime, editorial: Editorial) -> Issue:
    """Read what the window needs from the store and compose it (the pure compose_issue does the work)."""
    return _compose_offers(settings, engine, window, now, editorial)[0]


def _compose_offers(settings: Settings, engine: Engine, window: Window, now: datetime,
                    editorial: Editorial) -> tuple[Issue, Offers]:
    """compose_window, with what the build offered, held back and passed over (digest.offers)."""
    offers = _offers(settings, engine, window, now)
    items = [*offers.window_items, *offers.late_items]
    horizon = window.end + timedelta(days=settings.digest.upcoming_events_days)
    events = events_starting_between(engine, window.end, horizon)
    present = {sid for item in [*items, *events] for sid in item.series}
    candidates = latest_items(engine, POOL_RECENT, before=window.end)
    for series in settings.series:
        if series.id in present:
            candidates += items_in_series(engine, series.id, POOL_PER_SERIES, before=window.end)
    # An item held back may still be being edited: not linked either, until it settles.
    candidates = [c for c in candidates if c.key not in offers.held_keys]
    issue = compose_issue(offers.window_items, window, settings.series, settings, now, editorial, events, candidates,
                          late=offers.late_items)
    return replace(issue, feeds=feed_health(settings, engine)), offers


def _offers(settings: Settings, engine: Engine, window: Window, now: datetime) -> Offers:
    """The window's unoffered items, the late candidates and the too old ones, split by digest.offers."""
    # First issue: nothing was sent, so nothing can have come in late; the window cuts by date.
    first = issue_store.last_sent_end(engine) is None
    late_days, settle = settings.digest.late_item_days, settings.fetch.stabilise_minutes
    cutoff = late_cutoff(window, late_days, first)
    seen_up_to = newest_item_id(engine)  # before the reads: what they see was stored by then
    too_old_count, too_old = (0, []) if first else too_old_items(engine, cutoff, TOO_OLD_SHOWN)
    return choose_offers(
        items_between(engine, window.start, window.end, unoffered=True),
        [] if first else late_candidates(engine, cutoff, window.start),
        window, now, changed_since(engine, now - timedelta(minutes=settle), cutoff) if settle else {},
        first_issue=first, late_item_days=late_days, stabilise_minutes=settle,
        too_old=too_old, too_old_count=too_old_count, seen_up_to=seen_up_to)


def _save_issue(settings: Settings, engine: Engine, target: Issue | None, issue: Issue, now: datetime,
                offers: Offers) -> Issue:
    """Store a composed issue: refresh `target` (keeping its number and creation time) or create a draft."""
    if target is not None:
        issue = replace(issue, number=target.number, created_at=target.created_at)
    manifest = _manifest_of(issue, settings)
    version = issue_version(manifest)
    manifest["issue"]["version"] = version
    issue = replace(issue, version=version)
    report = report_to_json(offers.report)
    if target is not None:
        before = issue_store.build_report(engine, target.number)
        changed = not offers.report.same_as(report_from_json(before) if before else None)
        return issue_store.refresh_issue(engine, target, issue, manifest, now, report, report_changed=changed)
    return issue_store.create_issue(engine, issue, manifest, now, report)


def _retry_on_race(attempt: Callable[[], T], tries: int = 5) -> T:
    """Run `attempt` again when a concurrent builder changed or numbered an issue first."""
    for n in range(tries):
        try:
            return attempt()
        except (ConcurrentChange, IntegrityError):
            if n == tries - 1:
                raise
    raise AssertionError("unreachable: the loop returns or raises")


# --- the approval gate and the send time ----------------------------------------------------------

@dataclass(frozen=True)
class Approval:
    """An approved issue and what the send job now does with it."""

    issue: Issue
    outlook: SendOutlook


def approve_issue(settings: Settings, engine: Engine, number: int, by: Account | str, version: str,
                  now: datetime | None = None) -> Approval:
    """Approve exactly `version` of a draft, recording who; StaleVersion when the draft changed since.

    NotAllowed when `by`'s role may not approve, or (`review.require_second_person`) `by` edited it
    last. A plain name for `by` is a caller that checked who it acts for (the scheduler's
    auto-approval, the demo). Approving an approved issue at the same version changes nothing.
    IssueNotFound, IssueStateError (not a draft).
    """
    if isinstance(by, str):
        by = Account(email="", role=Role.ADMIN, name=by)
    if reason := approval_refusal(settings, engine, number, by):
        raise NotAllowed(reason)
    now = now or datetime.now(UTC)
    issue = issue_store.approve_issue(engine, number, by=by.label, version=version, now=now)
    record(engine, by, "issue.approve", issue_number=number, detail={"version": version}, now=now)
    return Approval(issue, send_outlook(settings, _timing(engine, number), now))


def approval_refusal(settings: Settings, engine: Engine, number: int, actor: Account) -> str:
    """Why `actor` may not approve issue `number`, as a sentence for a page; '' when they may."""
    if reason := why_not(actor, "approve"):
        return reason
    if settings.review.require_second_person:
        last = last_editor(engine, number, EDITS)
        if last and last == (actor.email or actor.label):
            return ("You edited this issue last, and this site asks for a second person to approve "
                    "(review.require_second_person): ask another approver.")
    return ""


def cancel_issue(engine: Engine, number: int, now: datetime | None = None, actor: Account | None = None) -> Issue:
    """Cancel a draft or approved issue: it is never sent; building its window again reopens it."""
    cancelled = issue_store.set_status(engine, number, IssueStatus.CANCELLED, now or datetime.now(UTC))
    record(engine, actor, "issue.cancel", issue_number=number, now=now)
    return cancelled


def set_status(engine: Engine, number: int, status: IssueStatus, now: datetime | None = None) -> Issue:
    """Move an issue along its lifecycle (store.issues.TRANSITIONS); approval goes through approve_issue."""
    return issue_store.set_status(engine, number, status, now or datetime.now(UTC))


def schedule_send(settings: Settings, engine: Engine, number: int, send_at: datetime | None,
                  now: datetime | None = None, actor: Account | None = None) -> None:
    """Give a draft or approved issue its own send time (None: back to `schedule.send_cron`).

    ValueError for a time more than a minute in the past; IssueStateError when the issue is being
    sent or was sent (IssueNotFound when there is none).
    """
    now = now or datetime.now(UTC)
    check_send_time(engine, number, send_at, now)
    if not set_send_time(engine, number, send_at, now):
        _refuse_schedule(require_issue(engine, number))
    record(engine, actor, "issue.schedule", issue_number=number,
           detail={"send_at": send_at.isoformat() if send_at else "the regular send time"}, now=now)


def check_send_time(engine: Engine, number: int, send_at: datetime | None, now: datetime) -> None:
    """What schedule_send would refuse, checked before asking staff to confirm: the same errors."""
    if send_at is not None and send_at < now - timedelta(minutes=1):
        raise ValueError("That time has passed: pick a time in the future or use Send now.")
    issue = require_issue(engine, number)
    if issue.status not in OPEN_STATUSES:
        _refuse_schedule(issue)


def _refuse_schedule(issue: Issue) -> None:
    raise IssueStateError(f"issue {issue.number} is {issue.status.value}; only a draft or approved issue can be scheduled")


def _timing(engine: Engine, number: int) -> IssueTiming:
    timing = issue_timing(engine, number)
    if timing is None:
        raise IssueNotFound(f"there is no issue {number}; `digest status` lists the issues")
    return timing


# --- what `digest build` and `digest issue show` print ------------------------------------------

@uses_current_settings
def issue_manifest(settings: Settings, engine: Engine, issue: Issue | int) -> dict[str, Any]:
    """The manifest of `issue` (an Issue, or its number) as `digest build --json` writes it.

    It lists the segments of today's subscribers only while the issue is a draft or approved: a
    sending or sent issue's manifest is what was sent, and today's subscribers say nothing about it.
    IssueNotFound for an unknown number.
    """
    issue = require_issue(engine, issue) if isinstance(issue, int) else issue
    segments = issue_segments(settings, engine, issue) if issue.status in OPEN_STATUSES else None
    return _manifest_of(issue, settings, segments)


@uses_current_settings
def build_notes(settings: Settings, engine: Engine, issue: Issue | int) -> list[str]:
    """What the issue's last build says in plain words: items included late, held back, too old.

    Empty when there is nothing to say (or the issue was built before digest kept build reports).
    """
    number = issue if isinstance(issue, int) else issue.number
    report = issue_store.build_report(engine, number)
    return report_lines(report_from_json(report), settings.site.tz) if report else []


@uses_current_settings
def edition_notes(settings: Settings, engine: Engine, issue: Issue) -> list[str]:
    """What rendering the full edition says in each language readers get (e.g. "shorten it").

    The full edition is the largest a reader can get, and labels and dates differ in length between
    languages, so each is checked: the site language, then every other language today's subscribers
    read. RenderError (naming file and line) for a template problem; the issue stays as it is.
    """
    site = settings.site.language
    languages = [site, *sorted({s.language for s in issue_segments(settings, engine, issue)} - {site})]
    return [note for language in languages
            for note in edition_for(settings, engine, issue, Everyone(language)).edition.notes]
