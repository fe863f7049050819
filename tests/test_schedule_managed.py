"""A running scheduler follows a schedule edited in the store, without a restart, on SQLite and PostgreSQL.

The real `run_scheduler` runs in a thread on a digest.toml without a [schedule] table; the schedule is
saved through the admin's use case, and the test waits (with a deadline, no timing assertion) until
the scheduler's job store holds the new times. A digest.toml with [schedule] keeps its own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.config import load_settings
from digest.pipeline.site_settings import save_schedule
from digest.schedule import RunOptions, _open, run_scheduler
from digest.store import open_store
from digest.store.locks import JOBS_TABLE
from digest.store.runs import job_store_next_runs
from digest.timetable import crontab_trigger, next_fire_time

FAST = RunOptions(lease_seconds=1.5, standby_check_seconds=0.2)
FORM = {"days": ["wed"], "build_time": "06:15", "send_time": "06:45", "fetch_every_hours": "4", "staff": ""}


def write_config(tmp_path: Path, store_url: str, schedule: str = "") -> str:
    path = tmp_path / "digest.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n\n[delivery]\noutbox_dir = "{tmp_path / "outbox"}"\n{schedule}',
                    encoding="utf-8")
    return str(path)


def wait_until(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    pytest.fail(f"gave up waiting: {what}")


@contextmanager
def running_scheduler(config: str) -> Iterator[None]:
    stop = threading.Event()
    thread = threading.Thread(target=run_scheduler, args=(config, stop, FAST), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive(), "the scheduler did not stop"


def next_build(engine) -> datetime | None:
    return job_store_next_runs(engine, JOBS_TABLE).get("build")


def expected(cron: str, tz) -> datetime:
    return next_fire_time(crontab_trigger(cron, tz), datetime.now(UTC))


def test_the_running_scheduler_follows_a_schedule_saved_in_the_store(tmp_path, store_url):
    config = write_config(tmp_path, store_url)
    settings = load_settings(config)
    engine = open_store(settings.store.url)
    tz = settings.site.tz
    try:
        with running_scheduler(config):
            wait_until(lambda: next_build(engine) == expected("0 9 * * mon", tz), "the default Monday 09:00 build job")
            assert save_schedule(settings, engine, FORM, 0, None, datetime.now(UTC))
            wait_until(lambda: next_build(engine) == expected("15 6 * * wed", tz)
                       and job_store_next_runs(engine, JOBS_TABLE)["send"] == expected("45 6 * * wed", tz),
                       "the job store to follow the edit")
        # Each job reads the schedule in force when it runs.
        job_settings, job_engine = _open(config)
        job_engine.dispose()
        assert (job_settings.schedule.cron, job_settings.schedule.send_cron) == ("15 6 * * wed", "45 6 * * wed")
    finally:
        engine.dispose()


def test_a_provisioned_schedule_is_what_the_scheduler_runs(tmp_path, store_url):
    config = write_config(tmp_path, store_url, '\n[schedule]\ncron = "0 7 * * fri"\nsend_cron = "0 8 * * fri"\n')
    settings = load_settings(config)
    engine = open_store(settings.store.url)
    try:
        # A row left from before the file provisioned the schedule must not win over the file.
        from digest.store.managed_settings import save_section
        save_section(engine, "schedule", {"cron": "15 6 * * wed"}, 0, datetime.now(UTC), "earlier")
        with running_scheduler(config):
            wait_until(lambda: next_build(engine) == expected("0 7 * * fri", settings.site.tz), "the file's Friday build")
        job_settings, job_engine = _open(config)
        job_engine.dispose()
        assert job_settings.schedule.cron == "0 7 * * fri"
    finally:
        engine.dispose()
