"""The weekly run behind `digest run`: APScheduler jobs that call pipeline functions, one active scheduler.

Jobs live in a persistent job store in the digest database (table `scheduler_jobs`), so a missed
build or send is seen on the next start and runs once (misfire grace + coalescing). On every start a
reconciler also checks that the current cron period has its issue and that approved issues past
their send time go out, unless the send time is older than `schedule.stale_after_hours`: then the
issue is set back to draft for a fresh approval. Data-level idempotency (one build per cron fire
time, one issue per window, the send ledger) means a job run twice does its work once.

Only one scheduler acts: it holds a database lock (a PostgreSQL advisory lock on a dedicated
connection; a renewed lease row on SQLite). Others wait as standbys and take over when it goes.
Jobs are module-level functions whose only argument is the config path, so they serialise into
the job store; they run one at a time in one worker thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, text

from . import pipeline
from .config import Settings, load_settings
from .cpulimit import stop_idle_workers
from .models import IssueStatus
from .store import is_postgres, open_store
from .store.locks import acquire_lock, advisory_key, lock_holder, lock_owner, release_lock, renew_lock
from .store.runs import hold_for_approval, issue_timings, ran_for, record_run
from .timing import (
    SendWhen,
    build_trigger,
    check_schedule,
    fetch_trigger,
    last_fire_time,
    send_outlook,
    send_trigger,
)

log = logging.getLogger("digest.schedule")

LOCK_NAME = "digest-scheduler"
JOBS_TABLE = "scheduler_jobs"
JOB_FETCH, JOB_BUILD, JOB_SEND, JOB_SEND_POLL = "fetch", "build", "send", "send-due"
# Outcomes that mean "the build for this fire time is done": a rerun is a no-op.
BUILD_DONE = ("built", "skipped")
SEND_POLL_MINUTES = 1


# --- the work, with an explicit clock ----------------------------------------------------------------

def build_for(settings: Settings, engine: Engine, fire: datetime, now: datetime) -> int | None:
    """Build the draft for the cron fire time `fire` once; returns its number (None: empty or done)."""
    if ran_for(engine, JOB_BUILD, fire, BUILD_DONE):
        log.info("build for %s already done; nothing to do", _local(settings, fire))
        return None
    try:
        issue = pipeline.build_issue(settings, engine, now=now, until=fire)
    except Exception as exc:
        record_run(engine, JOB_BUILD, "error", f"build for {_local(settings, fire)} failed: {_describe(exc)}",
                   scheduled_for=fire, now=now)
        raise
    if issue is None:
        record_run(engine, JOB_BUILD, "skipped", f"week skipped: nothing new up to {_local(settings, fire)}",
                   scheduled_for=fire, now=now)
        log.warning("week skipped: nothing new up to %s", _local(settings, fire))
        return None
    record_run(engine, JOB_BUILD, "built", f"draft {issue.number} built", scheduled_for=fire,
               issue_number=issue.number, now=now)
    log.info("draft %s built for %s", issue.number, _local(settings, fire))
    if settings.schedule.auto_approve:
        from .store.issues import approve_issue

        approve_issue(engine, issue.number, by="auto-approve", version=issue.version)
        send_now(settings, engine, issue.number, now, reason="auto_approve")
    else:
        notify_staff(settings, engine, issue.number, now)
    return issue.number


def send_due_issues(settings: Settings, engine: Engine, now: datetime) -> list[int]:
    """Send every approved issue whose send time has come; hold the stale ones for a fresh approval."""
    sent = []
    for timing in issue_timings(engine, (IssueStatus.APPROVED,)):
        outlook = send_outlook(settings, timing, now)
        if outlook.when == SendWhen.AFTER_FRESH_APPROVAL:
            reason = (f"issue {timing.number} missed its send time {_local(settings, outlook.due)} by "
                      f"{_hours(outlook.late)}, more than stale_after_hours={settings.schedule.stale_after_hours}; "
                      "approve it again to send it")
            if hold_for_approval(engine, timing.number, reason, now=now):
                log.warning("%s", reason)
            continue
        if outlook.when != SendWhen.AT_ONCE:
            continue
        try:
            send_now(settings, engine, timing.number, now, reason=f"due {_local(settings, outlook.due)}")
        except Exception:  # noqa: BLE001 - noted in the run log; the next issue still goes
            log.exception("sending issue %s failed", timing.number)
            continue
        sent.append(timing.number)
    return sent


def send_now(settings: Settings, engine: Engine, number: int, now: datetime, reason: str) -> None:
    """Send (or resume sending) one issue through the pipeline and note the outcome."""
    log.info("sending issue %s (%s)", number, reason)
    try:
        report = pipeline.send_issue(settings, engine, number)
    except Exception as exc:
        record_run(engine, JOB_SEND, "error", f"issue {number}: {_describe(exc)}", issue_number=number, now=now)
        raise
    record_run(engine, JOB_SEND, "sent", f"issue {number} ({reason}): {_send_summary(report)}",
               issue_number=number, now=datetime.now(UTC))


def reconcile(settings: Settings, engine: Engine, now: datetime) -> None:
    """On start: build the current period's issue if it was missed, resume stuck sends, send what is due."""
    fire = last_fire_time(build_trigger(settings), now)
    grace = timedelta(hours=settings.schedule.misfire_grace_hours)
    if fire is not None and ran_for(engine, JOB_BUILD, fire, BUILD_DONE):
        log.info("build for %s already done; nothing to do", _local(settings, fire))
    elif fire is not None:
        if now - fire <= grace:
            log.info("catching up the missed build of %s", _local(settings, fire))
            _attempt(build_for, settings, engine, fire, now)
        else:
            record_run(engine, JOB_BUILD, "missed",
                       f"build of {_local(settings, fire)} missed by {_hours(now - fire)} "
                       f"(more than misfire_grace_hours); run `digest build` or wait for the next one",
                       scheduled_for=fire, now=now)
    for timing in issue_timings(engine, (IssueStatus.SENDING,)):
        _attempt(send_now, settings, engine, timing.number, now, reason="resuming an interrupted send")
    _attempt(send_due_issues, settings, engine, now)
    log.info("start-up check done")


def _attempt(step, *args, **kwargs) -> None:  # noqa: ANN001
    # One failed catch-up step (already in the run log) must not stop the others.
    try:
        step(*args, **kwargs)
    except Exception:
        log.exception("catch-up step %s failed", step.__name__)


def notify_staff(settings: Settings, engine: Engine, number: int, now: datetime) -> None:
    """Email the staff list that draft `number` is ready, with its admin preview link.

    Never raises for a refusal or a transport setting: the build is done either way, and a
    "notify-failed" note says what went wrong.
    """
    if not settings.schedule.staff:
        return
    from .deliver.transports import TransportError, transport_from_settings

    link = f"{settings.web.base_url.rstrip('/')}/admin/issues/{number}"
    messages = [_staff_note(settings, address, number, link) for address in settings.schedule.staff]
    try:
        transport = transport_from_settings(settings)
        try:
            failed = [r.error for r in transport.send_messages(messages) if not r.ok]
        finally:
            transport.close()
    except TransportError as exc:  # e.g. the password variable empty, the login refused
        failed = [str(exc)]
    outcome, detail = ("notified", f"staff told draft {number} is ready") if not failed else \
        ("notify-failed", f"telling staff about draft {number} failed: {'; '.join(failed)}")
    record_run(engine, "notify", outcome, detail, issue_number=number, now=now)


def _staff_note(settings: Settings, address: str, number: int, link: str):  # noqa: ANN202
    from .deliver.transport import OutgoingMessage

    msg = EmailMessage()
    msg["From"] = settings.delivery.sender
    msg["To"] = address
    msg["Subject"] = f"{settings.site.name} digest: draft {number} is ready for review"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=parseaddr(settings.delivery.sender)[1].rpartition("@")[2] or None)
    approval = "It goes out automatically" if settings.schedule.auto_approve else \
        "It goes out at the next send time once approved (at once if approved after it)"
    msg.set_content(f"Draft {number} of the {settings.site.name} digest is ready.\n\n"
                    f"Preview, edit and approve it here:\n{link}\n\n{approval}.\n")
    return OutgoingMessage(envelope_from=parseaddr(settings.delivery.sender)[1],
                           recipients=(parseaddr(address)[1],), data=msg.as_bytes(), message_id=msg["Message-ID"])


def _send_summary(report: object) -> str:
    fields = ("sent", "failed", "skipped", "queued")
    parts = [f"{name} {getattr(report, name)}" for name in fields if isinstance(getattr(report, name, None), int)]
    return ", ".join(parts) or "done"


def _local(settings: Settings, instant: datetime) -> str:
    return instant.astimezone(settings.site.tz).strftime("%Y-%m-%d %H:%M %Z")


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _hours(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 3600:.1f} h"


# --- jobs (what the job store holds: module-level functions taking the config path) ----------------

def _open(config_path: str) -> tuple[Settings, Engine]:
    settings = load_settings(config_path)
    return settings, open_store(settings.store.url)


def fetch_job(config_path: str) -> None:
    """Scheduled fetch of every feed."""
    settings, engine = _open(config_path)
    try:
        reports = pipeline.fetch_all(settings, engine)
        errors = [r for r in reports if getattr(r, "status", "") == "error"]
        record_run(engine, JOB_FETCH, "error" if errors and len(errors) == len(reports) else "fetched",
                   f"{len(reports)} feeds, {len(errors)} with errors")
    except Exception as exc:
        record_run(engine, JOB_FETCH, "error", _describe(exc))
        raise
    finally:
        # Fetches are hours apart: idle parse workers (40-120 MB each) are not kept in between; the
        # fork server (≈25 MB) is, so the next fetch forks its workers in milliseconds.
        stop_idle_workers()
        engine.dispose()


def build_job(config_path: str) -> None:
    """Scheduled build of the draft for the cron fire time just passed."""
    settings, engine = _open(config_path)
    now = datetime.now(UTC)
    fire = last_fire_time(build_trigger(settings), now) or now
    try:
        build_for(settings, engine, fire, now)
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


def desired_jobs(settings: Settings) -> dict[str, tuple[object, object]]:
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


def _trigger_key(trigger: object) -> str:
    """What makes two triggers the same schedule (an interval's start date is just when it was made)."""
    if isinstance(trigger, IntervalTrigger):
        return f"interval {trigger.interval} {trigger.timezone}"
    return repr(trigger)


# --- the one acting scheduler ---------------------------------------------------------------------

class SchedulerLock:
    """The database lock that makes one scheduler act: PostgreSQL advisory lock or SQLite lease row."""

    def __init__(self, engine: Engine, lease_seconds: float):
        self.engine, self.lease_seconds = engine, lease_seconds
        self.holder = lock_holder("scheduler")
        self._conn = None

    def acquire(self) -> bool:
        if not is_postgres(self.engine):
            return acquire_lock(self.engine, LOCK_NAME, self.holder, self.lease_seconds)
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": advisory_key(LOCK_NAME)}).scalar():
            self._conn = conn
            return True
        conn.close()
        return False

    def renew(self) -> bool:
        """Still ours? Renews the lease; on PostgreSQL checks the lock's session is alive."""
        if not is_postgres(self.engine):
            return renew_lock(self.engine, LOCK_NAME, self.holder, self.lease_seconds)
        try:
            self._conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - a dead session means the lock is gone
            return False

    def release(self) -> None:
        if not is_postgres(self.engine):
            release_lock(self.engine, LOCK_NAME, self.holder)
        elif self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(LOCK_NAME)})
                self._conn.close()
            except Exception:  # noqa: BLE001 - the session is gone, and the lock with it
                self._conn.invalidate()
            self._conn = None

    def owner(self) -> str:
        return active_scheduler(self.engine) or "unknown"


def active_scheduler(engine: Engine) -> str | None:
    """Who holds the scheduler lock: the lease holder (SQLite), or the PostgreSQL backend pid."""
    if not is_postgres(engine):
        return lock_owner(engine, LOCK_NAME)
    key = advisory_key(LOCK_NAME)
    query = text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                 "AND classid = :hi AND objid = :lo AND objsubid = 1")
    with engine.connect() as conn:
        pid = conn.execute(query, {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalar()
    return None if pid is None else f"PostgreSQL session pid {pid} (advisory lock)"


@dataclass(frozen=True)
class RunOptions:
    lease_seconds: float = 60.0
    standby_check_seconds: float = 10.0


def run_scheduler(config_path: str, stop: threading.Event, options: RunOptions = RunOptions()) -> None:
    """Act as the scheduler while holding the lock, else wait as a standby; returns when `stop` is set."""
    settings = load_settings(config_path)
    check_schedule(settings)
    engine = open_store(settings.store.url)
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
    # Only the active scheduler fetches: a standby never starts the parse workers' fork server.
    pipeline.prepare_fetch(settings)  # the first scheduled fetch then costs what later ones do
    # APScheduler 3 cannot share a job store between running schedulers: start only under the lock.
    scheduler = make_scheduler(settings, engine)
    scheduler.start(paused=True)
    try:
        ensure_jobs(scheduler, settings, config_path)
        scheduler.add_job(reconcile_job, args=[config_path], id="reconcile", jobstore="volatile",
                          next_run_time=datetime.now(UTC))
        scheduler.resume()
        for job in scheduler.get_jobs(jobstore="default"):
            log.info("job %s: next run %s", job.id, job.next_run_time)
        while not stop.wait(options.lease_seconds / 3):
            if not lock.renew():
                log.error("lost the scheduler lock; stopping and waiting as a standby")
                return
    finally:
        scheduler.shutdown(wait=True)
