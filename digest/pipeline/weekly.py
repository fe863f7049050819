"""Use case: the weekly step. Fetch, then build once per cron fire time, then approve and send
(schedule.auto_approve) or tell staff; a fire time that an issue built by hand already reaches has
nothing to build, and a build missed by more than the grace time is noted, not run late.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine

from ..config import Settings
from ..models import FeedStatus
from ..parse_workers import stop_idle_workers
from ..store import issues as issue_store
from ..store.runs import ran_for, record_run
from .audit import SCHEDULER, record
from .ingest import fetch_all
from .issues import build_issue
from .managed import uses_current_settings
from .runs import JOB_BUILD, describe, hours, local_time
from .sending import notify_staff, send_now

log = logging.getLogger("digest.pipeline")

# Outcomes that mean "the build for this fire time is done": a rerun is a no-op.
BUILD_DONE = ("built", "skipped")


@uses_current_settings
def build_for_week(settings: Settings, engine: Engine, fire: datetime, now: datetime) -> int | None:
    """Build the draft for the cron fire time `fire` once, then approve and send it or tell staff.

    Every feed is fetched first (pipeline.ingest.fetch_all), so what was published before the fire
    time is in; the build's run note says how the fetch went, and a failed fetch never stops it.
    Returns the draft's number (None: nothing new, or already done for this fire time). With
    `schedule.auto_approve` the draft is approved and sent at once; otherwise `schedule.staff`
    gets a note with its admin link. Each outcome goes into the run log.
    """
    if ran_for(engine, JOB_BUILD, fire, BUILD_DONE):
        log.info("build for %s already done; nothing to do", local_time(settings, fire))
        return None
    if _covered_by_hand(settings, engine, fire, now):
        return None
    fetched = _fetch_first(settings, engine)
    try:
        issue = build_issue(settings, engine, now=now, until=fire, actor=SCHEDULER,
                            allow_empty=not settings.schedule.skip_if_empty)
    except Exception as exc:
        record_run(engine, JOB_BUILD, "error",
                   f"build for {local_time(settings, fire)} failed: {describe(exc)}{fetched}",
                   scheduled_for=fire, now=now)
        raise
    if issue is None:
        record_run(engine, JOB_BUILD, "skipped",
                   f"week skipped: nothing new up to {local_time(settings, fire)}{fetched}",
                   scheduled_for=fire, now=now)
        log.warning("week skipped: nothing new up to %s", local_time(settings, fire))
        return None
    record_run(engine, JOB_BUILD, "built", f"draft {issue.number} built{fetched}", scheduled_for=fire,
               issue_number=issue.number, now=now)
    log.info("draft %s built for %s", issue.number, local_time(settings, fire))
    if settings.schedule.auto_approve:
        issue_store.approve_issue(engine, issue.number, by="auto-approve", version=issue.version)
        record(engine, SCHEDULER, "issue.approve", issue_number=issue.number,
               detail={"version": issue.version, "why": "schedule.auto_approve"}, now=now)
        send_now(settings, engine, issue.number, now, reason="auto_approve", actor=SCHEDULER)
    else:
        notify_staff(settings, engine, issue.number, now)
    return issue.number


def _fetch_first(settings: Settings, engine: Engine) -> str:
    """Fetch every feed before the weekly build; what the build's run note adds about it.

    A failed fetch never stops the build: the issue is built from what is stored, and items that
    could not be fetched go into the next issue, late. The outcome goes into the build's own note
    (one note per build, at the build's clock), not a fetch note of its own.
    """
    try:
        reports = fetch_all(settings, engine)
    except Exception as exc:  # noqa: BLE001 - whatever stops the fetch must not stop the build
        log.exception("the fetch before the build failed; building from what is stored")
        return f" (the fetch before it failed: {describe(exc)}; built from what was stored)"
    finally:
        stop_idle_workers()  # builds are a week apart: an idle parse worker would hold memory meanwhile
    failed = [r.feed for r in reports if r.status == FeedStatus.ERROR]
    if not failed:
        return f" (fetched {len(reports)} feeds first)"
    return (f" (fetched {len(reports)} feeds first; {len(failed)} failed: {', '.join(failed[:5])}"
            f"{' …' if len(failed) > 5 else ''}: their new items go into the next issue, late)")


def week_done(engine: Engine, fire: datetime) -> bool:
    """Whether the build for the cron fire time `fire` already ran (built, or skipped as empty)."""
    return ran_for(engine, JOB_BUILD, fire, BUILD_DONE)


@uses_current_settings
def record_missed_build(settings: Settings, engine: Engine, fire: datetime, now: datetime) -> None:
    """Note that the build of `fire` was missed by more than `schedule.misfire_grace_hours` (unless an issue built by hand covers it)."""
    if _covered_by_hand(settings, engine, fire, now):
        return
    record_run(engine, JOB_BUILD, "missed",
               f"build of {local_time(settings, fire)} missed by {hours(now - fire)} "
               f"(more than misfire_grace_hours); run `digest build` or wait for the next one",
               scheduled_for=fire, now=now)


def _covered_by_hand(settings: Settings, engine: Engine, fire: datetime, now: datetime) -> bool:
    """Whether an issue (built with `digest build` or in the admin) already reaches the fire time; noted as skipped.

    Its window ends at or after `fire`, so a build up to `fire` would be an empty window, or would
    shrink that issue (and undo its approval).
    """
    issue = issue_store.issue_reaching(engine, fire)
    if issue is None:
        return False
    message = (f"nothing to build for {local_time(settings, fire)}: issue {issue.number} ({issue.status.value}) "
               f"already covers up to {local_time(settings, issue.window.end)}")
    record_run(engine, JOB_BUILD, "skipped", message, scheduled_for=fire, issue_number=issue.number, now=now)
    log.info("%s", message)
    return True
