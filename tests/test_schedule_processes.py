"""`digest run` as real processes on one database: a missed weekly build caught up exactly once across
restarts, two schedulers (one acts, one waits and takes over), a stale send held for approval."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from admin_fixtures import READERS, admin_store, set_next_run
from compose_fixtures import NOW, WINDOW

from digest.models import IssueStatus
from digest.schedule import ensure_jobs, make_scheduler
from digest.store.issues import approve_issue, get_issue, get_summary, list_issues
from digest.store.locks import JOBS_TABLE
from digest.store.runs import job_store_next_runs, recent_runs, set_send_time

pytestmark = pytest.mark.slow
DIGEST = str(Path(sys.executable).with_name("digest"))
WAIT = 60.0  # generous upper bound for a line to appear; normally a second or two


def parse_processes_of(pid: int) -> int:
    """How many parse processes (multiprocessing's fork server and resource tracker) `pid` has as children."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        count += ppid == pid and b"from multiprocessing." in cmdline
    return count


class RunProcess:
    """One `digest run` with its log in a file we can poll."""

    def __init__(self, config: Path, log: Path, *extra: str):
        self.log = log
        self._file = log.open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen([DIGEST, "--config", str(config), "run", "--lease-seconds", "4",
                                      "--standby-check-seconds", "0.5", *extra],
                                     stdout=self._file, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, needle: str, count: int = 1) -> None:
        deadline = time.monotonic() + WAIT
        while self.text().count(needle) < count:
            if self.proc.poll() is not None:
                raise AssertionError(f"digest run exited ({self.proc.returncode}) before {needle!r}:\n{self.text()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {needle!r} after {WAIT}s:\n{self.text()}")
            time.sleep(0.1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=WAIT)
        finally:
            self._file.close()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=WAIT)
        self._file.close()


@pytest.fixture
def processes():
    started: list[RunProcess] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.kill()


def write_config(store, path: Path, cron: str, send_cron: str = "0 11 1 1 *", extra: str = "") -> Path:
    feeds = "".join(f'[[feeds]]\nname = "{f.name}"\nurl = "{f.url}"\nkind = "{f.kind.value}"\n\n'
                    for f in store.settings.feeds)
    # These processes build on the real clock: the first window must reach back to the fixture week
    # whatever today's date is.
    window_days = (datetime.now(UTC) - WINDOW.start).days + 2
    path.write_text(
        f'[site]\ntimezone = "Europe/Brussels"\n[store]\nurl = "{store.settings.store.url}"\n'
        f'[digest]\nwindow_days = {window_days}\n'
        f'[delivery]\noutbox_dir = "{store.settings.resolve_path(store.settings.delivery.outbox_dir)}"\n'
        f'[schedule]\ncron = "{cron}"\nsend_cron = "{send_cron}"\nfetch_every_hours = 24\n{extra}\n{feeds}',
        encoding="utf-8")
    return path


def weekly_cron_at(moment: datetime) -> str:
    """A weekly crontab line firing at `moment` (site time, whole minute)."""
    local = moment.astimezone(store_tz())
    return f"{local.minute} {local.hour} * * {(local.weekday() + 1) % 7}"


def store_tz():
    from zoneinfo import ZoneInfo

    return ZoneInfo("Europe/Brussels")


def test_a_missed_weekly_build_is_caught_up_exactly_once(tmp_path, store_url, processes):
    store = admin_store(tmp_path, store_url, build=False)
    fire = (datetime.now(UTC) - timedelta(minutes=10)).replace(second=0, microsecond=0)
    config = write_config(store, tmp_path / "digest.toml", weekly_cron_at(fire))
    from digest.config import load_settings

    settings = load_settings(config)
    # The scheduler ran last week and went down before this week's build: its job is overdue.
    scheduler = make_scheduler(settings, store.engine)
    scheduler.start(paused=True)
    ensure_jobs(scheduler, settings, str(config.resolve()))
    scheduler.shutdown(wait=False)
    set_next_run(settings, store.engine, "build", fire)

    first = RunProcess(config, tmp_path / "first.log")
    processes.append(first)
    first.wait_for("start-up check done")
    first.wait_for("already done; nothing to do")  # the job store's misfired run came too, and did nothing
    assert first.stop() == 0
    builds = [n for n in recent_runs(store.engine, job="build") if n.outcome == "built"]
    assert len(builds) == 1 and builds[0].scheduled_for == fire
    assert [s.number for s in list_issues(store.engine)] == [1]
    assert job_store_next_runs(store.engine, JOBS_TABLE)["build"] == fire + timedelta(days=7)

    second = RunProcess(config, tmp_path / "second.log")
    processes.append(second)
    second.wait_for("start-up check done")
    assert second.stop() == 0
    assert "already done; nothing to do" in second.text() and "draft 1 built" not in second.text()
    assert len([n for n in recent_runs(store.engine, job="build") if n.outcome == "built"]) == 1
    assert [s.number for s in list_issues(store.engine)] == [1]


def test_two_schedulers_one_acts_the_other_waits_and_takes_over(tmp_path, store_url, processes):
    store = admin_store(tmp_path, store_url, build=False)
    config = write_config(store, tmp_path / "digest.toml", "0 9 1 1 *")
    first = RunProcess(config, tmp_path / "first.log")
    processes.append(first)
    first.wait_for("this process is the active scheduler")
    second = RunProcess(config, tmp_path / "second.log")
    processes.append(second)
    second.wait_for("another scheduler is active")
    second.wait_for("waiting as a standby")
    time.sleep(1.5)  # several standby checks pass: it must still not act
    assert "this process is the active scheduler" not in second.text()
    assert parse_processes_of(second.proc.pid) == 0  # a standby never fetches: no parse process
    first.kill()  # kill -9: no clean release of the lock
    second.wait_for("this process is the active scheduler")
    second.wait_for("start-up check done")
    assert second.stop() == 0
    assert "scheduler stopped" in second.text()


def test_a_stale_send_is_held_for_approval_and_a_due_one_goes_once(tmp_path, sqlite_url, processes):
    store = admin_store(tmp_path, sqlite_url, build=True)
    config = write_config(store, tmp_path / "digest.toml", "0 9 1 1 *", extra="stale_after_hours = 24")
    number = store.issue.number
    approve_issue(store.engine, number, by="Anna", version=store.issue.version, now=NOW)
    # The machine was down for two days: the send time passed 30 hours ago.
    set_send_time(store.engine, number, datetime.now(UTC) - timedelta(hours=30))
    run = RunProcess(config, tmp_path / "stale.log")
    processes.append(run)
    run.wait_for("start-up check done")
    assert run.stop() == 0
    summary = get_summary(store.engine, number)
    assert summary.status == IssueStatus.DRAFT and summary.approved_by is None
    assert "missed its send time" in run.text()
    held = [n for n in recent_runs(store.engine, job="send") if n.outcome == "held"]
    assert len(held) == 1 and held[0].issue_number == number
    outbox = store.settings.resolve_path(store.settings.delivery.outbox_dir)
    assert not list(outbox.glob("*.eml"))

    # Approved again (a fresh decision) with its send time an hour ago: it goes, once.
    approve_issue(store.engine, number, by="Anna", version=get_issue(store.engine, number).version)
    set_send_time(store.engine, number, datetime.now(UTC) - timedelta(hours=1))
    for name in ("again.log", "third.log"):
        run = RunProcess(config, tmp_path / name)
        processes.append(run)
        run.wait_for("start-up check done")
        assert run.stop() == 0
    assert get_summary(store.engine, number).status == IssueStatus.SENT
    assert len(list(outbox.glob("*.eml"))) == len(READERS)
    assert "rescheduled" not in run.text()  # an unchanged schedule keeps its stored jobs
