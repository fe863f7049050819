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
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from enum import Enum
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, text

from . import pipeline
from .config import ConfigError, Settings, load_settings
from .cpulimit import shutdown_workers
from .models import IssueStatus
from .store import is_postgres, open_store
from .store.locks import acquire_lock, advisory_key, lock_holder, lock_owner, release_lock, renew_lock
from .store.runs import IssueTiming, hold_for_approval, issue_timings, ran_for, record_run

log = logging.getLogger("digest.schedule")

LOCK_NAME = "digest-scheduler"
JOBS_TABLE = "scheduler_jobs"
JOB_FETCH, JOB_BUILD, JOB_SEND, JOB_SEND_POLL = "fetch", "build", "send", "send-due"
# Outcomes that mean "the build for this fire time is done": a rerun is a no-op.
BUILD_DONE = ("built", "skipped")
SEND_POLL_MINUTES = 1
_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


# --- cron ------------------------------------------------------------------------------------------

def crontab_trigger(expr: str, timezone: ZoneInfo, key: str = "schedule.cron") -> CronTrigger:
    """A CronTrigger for a standard crontab line (0 and 7 = Sunday, as in cron, unlike APScheduler 3)."""
    fields = expr.split()
    if len(fields) != 5:
        raise ConfigError(f"'{key}' is {expr!r}: use five crontab fields (minute hour day month weekday), "
                          "e.g. \"0 9 * * mon\"")
    fields[4] = _cron_weekdays(fields[4])
    try:
        return CronTrigger.from_crontab(" ".join(fields), timezone=timezone)
    except ValueError as exc:
        raise ConfigError(f"'{key}' is {expr!r}: {exc}") from None


def _cron_weekdays(field: str) -> str:
    """Translate numeric crontab weekdays to names, which APScheduler 3 reads the cron way."""
    if not re.search(r"\d", field.split("/")[0]) and "*/" not in field:
        return field
    names: list[str] = []
    for part in field.split(","):
        match = re.fullmatch(r"(\*|\d)(?:-(\d))?(?:/(\d+))?", part)
        if not match:
            return field  # names or a mix: leave it to APScheduler's own validation
        start, end, step = match.groups()
        first, last = (0, 6) if start == "*" else (int(start), int(end) if end else int(start))
        if end is None and step and start != "*":
            last = 6
        names += [_CRON_DAYS[d % 7] for d in range(first, last + 1, int(step or 1))]
    return ",".join(dict.fromkeys(names))


def last_fire_time(trigger: CronTrigger, now: datetime) -> datetime | None:
    """The latest fire time at or before `now` (within a year), or None."""
    for lookback in (timedelta(hours=2), timedelta(days=2), timedelta(days=8), timedelta(days=32),
                     timedelta(days=367)):
        fire, latest = trigger.get_next_fire_time(None, now - lookback), None
        while fire is not None and fire <= now:
            latest, fire = fire, trigger.get_next_fire_time(fire, fire + timedelta(seconds=1))
        if latest is not None:
            return latest.astimezone(UTC)
    return None


def next_fire_time(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The first fire time strictly after `after`."""
    fire = trigger.get_next_fire_time(None, after + timedelta(seconds=1))
    return fire.astimezone(UTC) if fire else None


def build_trigger(settings: Settings) -> CronTrigger:
    return crontab_trigger(settings.schedule.cron, settings.site.tz, "schedule.cron")


def send_trigger(settings: Settings) -> CronTrigger:
    return crontab_trigger(settings.schedule.send_cron, settings.site.tz, "schedule.send_cron")


def fetch_trigger(settings: Settings) -> IntervalTrigger:
    hours = settings.schedule.fetch_every_hours
    if hours < 1:
        raise ConfigError(f"'schedule.fetch_every_hours' is {hours}: use a number of at least 1")
    return IntervalTrigger(hours=hours, timezone=settings.site.tz)


def check_schedule(settings: Settings) -> None:
    """Raise ConfigError if a schedule setting cannot be used (called before `digest run` starts)."""
    build_trigger(settings)
    send_trigger(settings)
    fetch_trigger(settings)
    for address in settings.schedule.staff:
        if "@" not in parseaddr(address)[1] or any(c in address for c in "\r\n"):
            raise ConfigError(f"'schedule.staff' has {address!r}: use plain addresses, e.g. [\"comms@example.org\"]")


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


def due_time(settings: Settings, timing: IssueTiming) -> datetime | None:
    """When an approved issue should go: its explicit send time, else the first send_cron after its build."""
    if timing.send_at is not None:
        return timing.send_at
    return next_fire_time(send_trigger(settings), timing.created_at)


class SendWhen(Enum):
    """What happens to a draft's or approved issue's send, as `send_outlook` sees it."""

    NOT_SCHEDULED = "not scheduled"  # no send time: send_cron never fires after the build
    AT_SEND_TIME = "at its send time"  # the send time is ahead (a draft needs approving by then)
    AT_ONCE = "at once"  # the send time passed: at the send job's next check (a draft: once approved)
    AFTER_FRESH_APPROVAL = "after a fresh approval"  # approved, but too late: held back as stale


@dataclass(frozen=True)
class SendOutlook:
    when: SendWhen
    due: datetime | None = None  # the send time, when there is one
    late: timedelta = timedelta(0)  # past the send time, counted from the approval if that came later


def send_outlook(settings: Settings, timing: IssueTiming, now: datetime) -> SendOutlook:
    """The one send-time rule: what the send job does with this issue at `now` (for a draft: if approved now).

    Approving after the send time is a fresh decision, so lateness counts from the approval; more
    than `schedule.stale_after_hours` late, an approved issue waits for a fresh approval.
    """
    due = due_time(settings, timing)
    if due is None:
        return SendOutlook(SendWhen.NOT_SCHEDULED)
    if due > now:
        return SendOutlook(SendWhen.AT_SEND_TIME, due)
    approved = (timing.approved_at or due) if timing.status == IssueStatus.APPROVED.value else now
    late = now - max(due, approved)
    if late > timedelta(hours=settings.schedule.stale_after_hours):
        return SendOutlook(SendWhen.AFTER_FRESH_APPROVAL, due, late)
    return SendOutlook(SendWhen.AT_ONCE, due, late)


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
        # Fetches are hours apart: idle parse workers (40-120 MB each) are not kept in between.
        shutdown_workers()
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
