"""The run log's words: the jobs a scheduler runs, and how a run note shows times and failures."""

from __future__ import annotations

from datetime import datetime, timedelta

from ..config import Settings

# Job names, as the run log and the scheduler's job store record them.
JOB_FETCH, JOB_BUILD, JOB_SEND, JOB_SEND_POLL, JOB_NOTIFY = "fetch", "build", "send", "send-due", "notify"


def local_time(settings: Settings, instant: datetime) -> str:
    """An instant on the site's clock, as run notes show it."""
    return instant.astimezone(settings.site.tz).strftime("%Y-%m-%d %H:%M %Z")


def describe(exc: BaseException) -> str:
    """An exception as one line for a run note."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def hours(delta: timedelta) -> str:
    """A duration in hours, one decimal."""
    return f"{delta.total_seconds() / 3600:.1f} h"
