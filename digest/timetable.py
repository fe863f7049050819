"""When things happen: crontab lines read in the site timezone, and the one rule for when an issue goes out.

Pure functions of settings, stored timings and a clock; the scheduler (digest.schedule), `digest
status` and the admin pages all ask here, so they can never disagree about a send time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from .config import ConfigError, Settings
from .models import IssueStatus
from .store.runs import IssueTiming

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


# --- the send-time rule -------------------------------------------------------------------------

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
