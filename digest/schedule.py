"""The weekly run behind `digest run`: APScheduler wiring over the pipeline's use cases, one active scheduler.

The jobs call pipeline.ingest.fetch_all, pipeline.weekly.build_for_week (fetch every feed, build, then
approve and send or tell staff) and pipeline.sending.send_due_issues; the rules are theirs, the timing
is this module's.

Jobs live in a persistent job store in the digest database (table `scheduler_jobs`), so a missed
build or send is seen on the next start and runs once (misfire grace + coalescing). On every start a
reconciler also checks that the current cron period has its issue and that approved issues past
their send time go out, unless the send time is older than `schedule.stale_after_hours`: then the
issue is set back to draft for a fresh approval. Data-level idempotency (one build per cron fire
time, one issue per window, the send ledger) means a job run twice does its work once.

Only one scheduler acts: it holds a database lock (store.locks.SchedulerLock: a PostgreSQL advisory
lock on a dedicated connection; a renewed lease row on SQLite). Others wait as standbys and take over when it goes.
Jobs are module-level functions whose only argument is the config path, so they serialise into
the job store; they run one at a time in one worker thread. Each job reads the settings in force
when it runs (digest.toml's, with the store's schedule, branding and series: pipeline.managed), and
the acting scheduler re-registers its jobs on every turn of its lock loop, so a schedule edited in
the admin replaces the old triggers within a third of the lease, without a restart.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from .config import ConfigError, Settings, load_settings
from .pipeline.ingest import scheduled_fetch
from .pipeline.managed import current_settings
from .pipeline.runs import JOB_BUILD, JOB_FETCH, JOB_SEND, JOB_SEND_POLL, local_time
from .pipeline.sending import resume_interrupted_sends, send_due_issues
from .pipeline.weekly import build_for_week, record_missed_build, week_done
from .store import open_store
from .store.locks import JOBS_TABLE, SchedulerLock
from .timetable import build_trigger, check_schedule, fetch_trigger, last_fire_time, send_trigger

log = logging.getLogger("digest.schedule")

SEND_POLL_MINUTES = 1


def reconcile(settings: Settings, engine: Engine, now: datetime) -> None:
    """On start: build the current period's issue if it was missed, resume stuck sends, send what is due."""
    fire = last_fire_time(build_trigger(settings), now)
    grace = timedelta(hours=settings.schedule.misfire_grace_hours)
    if fire is not None and week_done(engine, fire):
        log.info("build for %s already done; nothing to do", local_time(settings, fire))
    elif fire is not None:
        if now - fire <= grace:
            log.info("catching up the missed build of %s", local_time(settings, fire))
            _attempt(build_for_week, settings, engine, fire, now)
        else:
            record_missed_build(settings, engine, fire, now)
    _attempt(resume_interrupted_sends, settings, engine, now)
    _attempt(send_due_issues, settings, engine, now)
    log.info("start-up check done")


def _attempt(step: Callable[..., object], *args: object) -> None:
    # One failed catch-up step (already in the run log) must not stop the others.
    try:
        step(*args)
    except Exception:
        log.exception("catch-up step %s failed", step.__name__)


# --- jobs (what the job store holds: module-level functions taking the config path) ----------------

def _open(config_path: str) -> tuple[Settings, Engine]:
    """The settings in force now (digest.toml's, with the store's schedule, branding and series) and the store."""
    settings = load_settings(config_path)
    engine = open_store(settings.store.url)
    return current_settings(settings, engine), engine


def fetch_job(config_path: str) -> None:
    """Scheduled fetch of every feed."""
    settings, engine = _open(config_path)
    try:
        scheduled_fetch(settings, engine)
    finally:
        engine.dispose()


def build_job(config_path: str) -> None:
    """Scheduled build of the draft for the cron fire time just passed."""
    settings, engine = _open(config_path)
    now = datetime.now(UTC)
    fire = last_fire_time(build_trigger(settings), now) or now
    try:
        build_for_week(settings, engine, fire, now)
    finally:
        engine.dispose()


def send_job(config_path: str) -> None:
    """Scheduled send (at send_cron, and every minute for issues given their own send time)."""
    settings, engine = _open(config_path)
    try:
        send_due_issues(settings, engine, datetime.now(UTC))
    finally:
        engine.dispose()


def reconcile_job(config_path: str) -> None:
    """The start-up check, run once as the first job of an acting scheduler."""
    settings, engine = _open(config_path)
    try:
        reconcile(settings, engine, datetime.now(UTC))
    finally:
        engine.dispose()


def desired_jobs(settings: Settings) -> dict[str, tuple[object, BaseTrigger]]:
    """Job id -> (function, trigger) for the persistent job store."""
    return {
        JOB_FETCH: (fetch_job, fetch_trigger(settings)),
        JOB_BUILD: (build_job, build_trigger(settings)),
        JOB_SEND: (send_job, send_trigger(settings)),
        JOB_SEND_POLL: (send_job, IntervalTrigger(minutes=SEND_POLL_MINUTES, timezone=settings.site.tz)),
    }


def make_scheduler(settings: Settings, engine: Engine) -> BackgroundScheduler:
    """A scheduler on the persistent job store; jobs run one at a time."""
    return BackgroundScheduler(
        timezone=settings.site.tz,
        jobstores={"default": SQLAlchemyJobStore(engine=engine, tablename=JOBS_TABLE),
                   "volatile": MemoryJobStore()},
        executors={"default": ThreadPoolExecutor(1)},
        job_defaults={"coalesce": True, "max_instances": 1,
                      "misfire_grace_time": settings.schedule.misfire_grace_hours * 3600},
    )


def ensure_jobs(scheduler: BackgroundScheduler, settings: Settings, config_path: str) -> None:
    """Add missing jobs; keep existing ones (and their missed run times) unless their trigger changed."""
    grace = settings.schedule.misfire_grace_hours * 3600
    for job_id, (func, trigger) in desired_jobs(settings).items():
        job = scheduler.get_job(job_id, jobstore="default")
        if job is None:
            scheduler.add_job(func, trigger, args=[config_path], id=job_id, name=job_id, jobstore="default")
        elif _trigger_key(job.trigger) != _trigger_key(trigger) or job.args != (config_path,):
            # A changed schedule starts afresh from now; an unchanged one keeps its missed run time.
            scheduler.add_job(func, trigger, args=[config_path], id=job_id, name=job_id, jobstore="default",
                              replace_existing=True)
            log.info("job %s rescheduled: %s", job_id, trigger)
        elif job.misfire_grace_time != grace:
            scheduler.modify_job(job_id, jobstore="default", misfire_grace_time=grace)


def follow_settings(scheduler: BackgroundScheduler, settings: Settings, engine: Engine, config_path: str) -> None:
    """Re-register the jobs from the schedule in force now, so an edit made in the admin replaces the old triggers.

    Called on every turn of the acting scheduler's loop (a third of the lease, 20 s by default). A
    schedule that cannot be used keeps the jobs as they are: the admin checks a schedule before saving it.
    """
    try:
        ensure_jobs(scheduler, current_settings(settings, engine), config_path)
    except ConfigError as exc:
        log.error("the schedule in the store cannot be used (%s); keeping the jobs as they were", exc)


def _trigger_key(trigger: object) -> str:
    """What makes two triggers the same schedule (an interval's start date is just when it was made)."""
    if isinstance(trigger, IntervalTrigger):
        return f"interval {trigger.interval} {trigger.timezone}"
    return repr(trigger)


# --- the one acting scheduler ---------------------------------------------------------------------

@dataclass(frozen=True)
class RunOptions:
    lease_seconds: float = 60.0
    standby_check_seconds: float = 10.0


def run_scheduler(config_path: str, stop: threading.Event, options: RunOptions = RunOptions()) -> None:
    """Act as the scheduler while holding the lock, else wait as a standby; returns when `stop` is set."""
    settings = load_settings(config_path)
    engine = open_store(settings.store.url)
    check_schedule(current_settings(settings, engine))
    lock = SchedulerLock(engine, options.lease_seconds)
    told_standby = False
    try:
        while not stop.is_set():
            try:
                told_standby = _take_turn(config_path, settings, engine, lock, stop, options, told_standby)
            except Exception:  # noqa: BLE001 - e.g. the database is away: keep trying, never exit
                log.exception("the scheduler hit an error; trying again in %s s", options.standby_check_seconds)
                stop.wait(options.standby_check_seconds)
    finally:
        engine.dispose()


def _take_turn(config_path: str, settings: Settings, engine: Engine, lock: SchedulerLock,
               stop: threading.Event, options: RunOptions, told_standby: bool) -> bool:
    """Act while the lock is ours, else wait one standby interval; returns whether standby was announced."""
    if lock.acquire():
        log.info("this process is the active scheduler (%s)", lock.holder)
        try:
            _act(config_path, settings, engine, lock, stop, options)
        finally:
            lock.release()
        return False
    if not told_standby:
        log.warning("another scheduler is active (%s); waiting as a standby", lock.owner())
    stop.wait(options.standby_check_seconds)
    return True


def _act(config_path: str, settings: Settings, engine: Engine, lock: SchedulerLock, stop: threading.Event,
         options: RunOptions) -> None:
    # APScheduler 3 cannot share a job store between running schedulers: start only under the lock.
    scheduler = make_scheduler(current_settings(settings, engine), engine)
    scheduler.start(paused=True)
    try:
        ensure_jobs(scheduler, current_settings(settings, engine), config_path)
        scheduler.add_job(reconcile_job, args=[config_path], id="reconcile", jobstore="volatile",
                          next_run_time=datetime.now(UTC))
        scheduler.resume()
        for job in scheduler.get_jobs(jobstore="default"):
            log.info("job %s: next run %s", job.id, job.next_run_time)
        while not stop.wait(options.lease_seconds / 3):
            if not lock.renew():
                log.error("lost the scheduler lock; stopping and waiting as a standby")
                return
            follow_settings(scheduler, settings, engine, config_path)
    finally:
        scheduler.shutdown(wait=True)
