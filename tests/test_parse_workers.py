"""The parse worker processes (digest.parse_workers), with real processes: CPU limit, dead and stuck
workers replaced, stray output kept out of the answers, workers kept between fetches and nothing left
running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from digest import parse_workers, schedule
from digest.models import Feed, ItemKind
from digest.parse_workers import CpuLimitExceeded, ParseWorkers, WorkerFailed, stop_idle_workers
from digest.store import open_store
from digest.store.items import count_items

SPIN = "while True: pass"  # exec'd in a worker: burns CPU until the limit ends it


@pytest.fixture(autouse=True)
def no_idle_workers():
    """Each test starts with no parse worker in this process, whatever an earlier test's fetch left."""
    stop_idle_workers()
    yield
    stop_idle_workers()


def _processes() -> dict[int, tuple[int, bytes]]:
    """pid -> (parent pid, command line) of every process now running."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            found[int(stat.parent.name)] = (ppid, (stat.parent / "cmdline").read_bytes())
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
    return found


def workers() -> list[int]:
    """This process's parse workers: the children of its multiprocessing fork server."""
    running = _processes()
    servers = {pid for pid, (ppid, cmdline) in running.items()
               if ppid == os.getpid() and b"multiprocessing.forkserver" in cmdline}
    return [pid for pid, (ppid, _) in running.items() if ppid in servers]


def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Whether `condition()` becomes true within `seconds` (a stopped process ends a moment later)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def gone(pid: int) -> bool:
    """Whether the process `pid` has ended (a zombie not yet reaped counts as ended)."""
    try:
        return b"\nState:\tZ" in Path(f"/proc/{pid}/status").read_bytes()
    except FileNotFoundError:
        return True


def test_a_task_runs_in_a_worker_and_nothing_starts_before_the_first():
    with ParseWorkers(cpu_seconds=5) as pool:
        assert workers() == []  # a fetch where every feed answers 304 starts no process
        assert pool.run(abs, -1) == 1
        assert pool.run(os.getpid) != os.getpid()
        assert len(workers()) == pool.size


def test_without_a_cpu_limit_tasks_run_in_this_process():
    with ParseWorkers(cpu_seconds=0) as pool:  # fetch.parse_cpu_seconds = 0
        assert pool.run(os.getpid) == os.getpid()
        assert workers() == []


def test_an_exception_in_a_task_is_raised_here_and_the_worker_lives_on():
    with ParseWorkers(cpu_seconds=5, workers=1) as pool:
        first = pool.run(os.getpid)
        with pytest.raises(ValueError, match="invalid literal"):
            pool.run(int, "not a number")
        assert pool.run(os.getpid) == first


def test_never_more_workers_than_asked_for_or_than_cpus_however_many_threads_ask():
    cpus = os.cpu_count() or 1
    assert ParseWorkers(cpu_seconds=5, workers=10 * cpus).size == cpus
    with ParseWorkers(cpu_seconds=5, workers=1) as pool:
        results: list[object] = []
        threads = [threading.Thread(target=lambda n=n: results.append(pool.run(time.sleep, 0.2) or n))
                   for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.1)
        assert len(workers()) == 1
        for thread in threads:
            thread.join()
        assert sorted(results) == [0, 1, 2, 3]


def test_the_next_fetch_takes_the_workers_the_last_one_left_until_they_are_stopped():
    with ParseWorkers(cpu_seconds=5, workers=2) as first:
        first.run(abs, -1)
        started = set(workers())
    with pytest.raises(WorkerFailed, match="already stopped"):
        first.run(abs, -2)
    assert set(workers()) == started  # kept, idle, for the next fetch
    with ParseWorkers(cpu_seconds=5, workers=1) as second:  # fewer wanted: the ones left do
        assert second.run(os.getpid) in started
        assert set(workers()) == started
    stop_idle_workers()
    assert eventually(lambda: workers() == [])
    with ParseWorkers(cpu_seconds=5, workers=1) as third:  # none left: a new one starts
        assert third.run(os.getpid) not in started


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: never more than one worker")
def test_a_fetch_wanting_more_workers_than_were_left_replaces_them():
    with ParseWorkers(cpu_seconds=5, workers=1) as first:
        left = first.run(os.getpid)
    with ParseWorkers(cpu_seconds=5, workers=2) as second:
        second.run(abs, -1)
        assert eventually(lambda: gone(left)) and len(workers()) == 2


def test_a_fetch_left_by_an_exception_stops_its_workers():
    with pytest.raises(KeyError), ParseWorkers(cpu_seconds=5) as pool:
        started = pool.run(os.getpid)
        raise KeyError("the fetch failed")
    assert eventually(lambda: gone(started))
    assert eventually(lambda: workers() == [])


FEEDS = Path(__file__).parent / "data" / "feeds"


def test_a_large_body_is_parsed_in_a_process_that_ends_with_its_parse(monkeypatch):
    """A worker kept after a large parse would keep its peak memory while the caller stores the items."""
    body = (FEEDS / "wordpress-rss.xml").read_bytes()
    feed = Feed("wp", "https://feeds.example.net/wp", ItemKind.BRIEF)
    monkeypatch.setattr(parse_workers, "ALONE_BYTES", len(body) - 1)
    with ParseWorkers(cpu_seconds=5, workers=1) as pool:
        large = pool.parse(body, feed, [])
        assert large.error is None and large.items
        assert eventually(lambda: workers() == [])  # its process ended; no pool was started
        small = pool.parse(body[: len(body) // 2], feed, [])  # truncated: still parses (recovered)
        assert small.items
        assert len(workers()) == 1  # a small body goes to the kept worker
    monkeypatch.setattr(parse_workers, "ALONE_BYTES", len(body))
    with ParseWorkers(cpu_seconds=5, workers=1) as pool:
        assert pool.parse(body, feed, []).items == large.items  # the same answer either way


@pytest.mark.slow  # a real worker burns a second of CPU
def test_a_process_of_its_own_keeps_the_cpu_limit():
    with ParseWorkers(cpu_seconds=1, workers=1) as pool, \
            pytest.raises(CpuLimitExceeded, match="more than 1 s of CPU time"):
        pool._run(exec, (SPIN,), alone=True)
    assert eventually(lambda: workers() == [])


@pytest.mark.slow  # a real worker burns a second of CPU
def test_a_task_over_its_cpu_allowance_is_ended_and_its_worker_replaced():
    with ParseWorkers(cpu_seconds=1, workers=1) as pool:
        first = pool.run(os.getpid)
        with pytest.raises(CpuLimitExceeded, match="more than 1 s of CPU time"):
            pool.run(exec, SPIN)
        assert eventually(lambda: gone(first))
        assert pool.run(abs, -3) == 3
        assert pool.run(os.getpid) != first


@pytest.mark.slow
def test_a_worker_that_dies_is_replaced():
    with ParseWorkers(cpu_seconds=5, workers=1) as pool:
        first = pool.run(os.getpid)
        with pytest.raises(WorkerFailed, match="died"):
            pool.run(os._exit, 3)
        assert pool.run(abs, -4) == 4
        assert pool.run(os.getpid) != first


@pytest.mark.slow
def test_a_worker_that_dies_costs_only_its_own_task(monkeypatch):
    # Small backstop: should pebble lose track of the death, the task ends as "stopped answering" in seconds.
    monkeypatch.setattr(parse_workers, "BACKSTOP_FACTOR", 1)
    monkeypatch.setattr(parse_workers, "BACKSTOP_SLACK_SECONDS", 5.0)
    with ParseWorkers(cpu_seconds=5, workers=2) as pool:
        outcomes: dict[str, object] = {}

        def attempt(name: str, func: Callable[..., object], *args: object) -> None:
            try:
                outcomes[name] = pool.run(func, *args)
            except WorkerFailed as exc:
                outcomes[name] = exc

        threads = [threading.Thread(target=attempt, args=("sleeper", time.sleep, 0.5)),
                   threading.Thread(target=attempt, args=("dying", os._exit, 3))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert outcomes["sleeper"] is None
        assert isinstance(outcomes["dying"], WorkerFailed)
        assert pool.run(abs, -5) == 5


@pytest.mark.slow
def test_a_worker_that_stops_answering_is_killed_not_left_running(monkeypatch):
    monkeypatch.setattr(parse_workers, "BACKSTOP_FACTOR", 1)
    monkeypatch.setattr(parse_workers, "BACKSTOP_SLACK_SECONDS", 0.5)
    with ParseWorkers(cpu_seconds=0.5, workers=1) as pool:
        stuck = pool.run(os.getpid)
        with pytest.raises(WorkerFailed, match="stopped answering"):
            pool.run(time.sleep, 60)  # sleeping uses no CPU: only the backstop ends it
        assert eventually(lambda: gone(stuck))
        assert pool.run(abs, -6) == 6


# Its own process, so that the workers' standard output is certainly this probe's (a captured
# pipe), whatever the test process's file descriptors were when its fork server started.
PRINTING_TASK = """
import json
from digest.parse_workers import ParseWorkers
with ParseWorkers(cpu_seconds=5, workers=1) as pool:
    pool.run(print, "stray output")
    answer = pool.run(abs, -4)
print(json.dumps({"answer": answer}))
"""


def test_a_task_that_prints_does_not_corrupt_the_answers():
    result = subprocess.run([sys.executable, "-c", PRINTING_TASK], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"answer": 4} and "stray" not in result.stdout
    assert "stray output" in result.stderr


# Starts workers, prints every process under it, then waits to be killed.
KILLED_CALLER = """
import os, time
from pathlib import Path
from digest.parse_workers import ParseWorkers

def parent(pid):
    # Any process on the machine may end while /proc is read: one that is gone has no parent.
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None

def children(pid):
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and parent(p.name) == pid]

pool = ParseWorkers(cpu_seconds=5, workers=2)
assert pool.run(abs, -1) == 1
below = children(os.getpid())
below += [grandchild for child in below for grandchild in children(child)]
print(*below, flush=True)
time.sleep(600)
"""


@pytest.mark.slow
def test_no_parse_process_outlives_a_caller_that_is_killed():
    """`kill -9` of `digest run` mid-fetch: its workers, fork server and resource tracker all end."""
    caller = subprocess.Popen([sys.executable, "-c", KILLED_CALLER], stdout=subprocess.PIPE, text=True)
    try:
        below = [int(pid) for pid in caller.stdout.readline().split()]
        assert len(below) >= 4  # the fork server, the resource tracker and the two workers
    finally:
        caller.kill()
        caller.wait(30)
        caller.stdout.close()
    assert eventually(lambda: all(gone(pid) for pid in below), seconds=15)


def test_a_scheduled_fetch_stores_its_items_and_leaves_no_parse_worker_running(tmp_path):
    """Scheduled fetches are hours apart: `digest run` keeps no idle parser (tens of MB each) in between."""
    feeds = Path(__file__).parent / "data" / "feeds"
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n'
                      f'[[feeds]]\nname = "Publications"\nurl = "{feeds / "wordpress-rss.xml"}"\nkind = "brief"\n',
                      encoding="utf-8")
    schedule.fetch_job(str(config))
    engine = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    assert count_items(engine) > 0
    engine.dispose()
    assert eventually(lambda: workers() == [])


# Its own process, so that no earlier test's fork server is running: prints this process's children.
PREPARING_FETCH = """
import json, os
from pathlib import Path
from digest.parse_workers import ParseWorkers

def child_cmdline(pid):
    # Any process on the machine may end while /proc is read: one that is gone is nobody's child.
    try:
        if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
            return Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError, ValueError):
        pass
    return None

def children():
    found = (child_cmdline(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return [cmdline for cmdline in found if cmdline is not None]

with ParseWorkers(cpu_seconds=5) as pool:
    before = children()
    pool.prepare()
    after = children()
print(json.dumps([len(before), sum(b"multiprocessing.forkserver" in c for c in after)]))
"""


def test_prepare_starts_the_fork_server_and_no_worker():
    result = subprocess.run([sys.executable, "-c", PREPARING_FETCH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [0, 1]
