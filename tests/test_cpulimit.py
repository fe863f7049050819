"""The CPU-limited workers and the fork server they are forked from (digest.cpulimit), with real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from digest import cpulimit
from digest.__main__ import command_named
from digest.parse import PARSER_PRELOAD, start_parse_server

IMPORTED = "'digest.parse' in __import__('sys').modules"  # evaluated inside the worker


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


def fork_servers() -> list[int]:
    """This process's fork servers (its children running serve_forks)."""
    return [pid for pid, (ppid, cmdline) in _processes().items()
            if ppid == os.getpid() and b"digest.cpulimit import serve_forks" in cmdline]


def workers() -> list[int]:
    """Workers forked by this process's fork servers."""
    servers = set(fork_servers())
    return [pid for pid, (ppid, _) in _processes().items() if ppid in servers]


def eventually(condition, seconds: float = 10.0) -> bool:  # noqa: ANN001
    """Whether `condition()` becomes true within `seconds` (processes end a moment after their sockets close)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def one_feed_config(tmp_path: Path) -> Path:
    """A digest.toml with a SQLite store in tmp_path and the WordPress fixture as its one feed."""
    feeds = Path(__file__).parent / "data" / "feeds"
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n'
                      f'[[feeds]]\nname = "Publications"\nurl = "{feeds / "wordpress-rss.xml"}"\nkind = "brief"\n',
                      encoding="utf-8")
    return config


@pytest.fixture(autouse=True)
def fresh_pool():
    cpulimit.shutdown_workers()
    yield
    cpulimit.shutdown_workers()


def test_a_worker_has_its_servers_preload_imported_before_the_first_task():
    cpulimit.start_fork_server(preload=["digest.parse"])
    assert len(fork_servers()) == 1 and workers() == []
    assert cpulimit.run_with_cpu_limit(eval, (IMPORTED,), 5) is True
    assert len(workers()) == 1


def test_without_a_preload_a_worker_imports_only_what_its_tasks_need():
    assert cpulimit.run_with_cpu_limit(eval, (IMPORTED,), 5) is False


def test_workers_are_forked_not_started_so_a_replacement_is_ready_at_once():
    cpulimit.start_fork_server(preload=PARSER_PRELOAD)
    assert cpulimit.run_with_cpu_limit(abs, (-1,), 5) == 1  # waits for the server's imports
    with pytest.raises(cpulimit.WorkerFailed, match="died"):
        cpulimit.run_with_cpu_limit(os._exit, (3,), 5)
    # A fresh interpreter would have to import feedparser again; a fork of the server has it.
    assert cpulimit.run_with_cpu_limit(eval, ("'feedparser' in __import__('sys').modules",), 5) is True
    assert len(fork_servers()) == 1


def test_never_more_workers_than_cpus_however_many_threads_ask():
    cpus = os.cpu_count() or 1
    results: list[object] = []
    threads = [threading.Thread(target=lambda n=n: results.append(cpulimit.run_with_cpu_limit(
        time.sleep, (0.3,), 5) or n)) for n in range(3 * cpus)]
    for thread in threads:
        thread.start()
    time.sleep(0.15)
    assert len(workers()) == cpus
    for thread in threads:
        thread.join()
    assert sorted(results) == list(range(3 * cpus))
    assert len(workers()) == cpus


def test_the_parse_server_starts_only_when_parsing_is_cpu_limited():
    start_parse_server(cpu_seconds=0)
    assert fork_servers() == []
    start_parse_server(cpu_seconds=5)
    start_parse_server(cpu_seconds=5)
    assert len(fork_servers()) == 1 and workers() == []
    assert cpulimit.run_with_cpu_limit(eval, (IMPORTED,), 5) is True


def test_a_preload_that_fails_to_import_costs_nothing_but_the_head_start():
    cpulimit.start_fork_server(preload=["digest.no_such_module"])
    assert cpulimit.run_with_cpu_limit(int, ("1",), 5) == 1
    assert len(workers()) == 1


def test_a_killed_fork_server_is_replaced_and_its_worker_keeps_working():
    assert cpulimit.run_with_cpu_limit(abs, (-1,), 5) == 1
    (server,) = fork_servers()
    os.kill(server, signal.SIGKILL)
    assert eventually(lambda: server not in fork_servers())
    assert cpulimit.run_with_cpu_limit(abs, (-2,), 5) == 2  # the orphaned worker still answers
    cpulimit.stop_idle_workers()
    assert cpulimit.run_with_cpu_limit(abs, (-3,), 5) == 3  # a new server forks a new worker
    assert len(fork_servers()) == 1 and fork_servers() != [server]


def test_stopping_idle_workers_keeps_the_server_for_the_next_run():
    assert cpulimit.run_with_cpu_limit(abs, (-1,), 5) == 1
    (server,) = fork_servers()
    (worker,) = workers()
    cpulimit.stop_idle_workers()
    assert eventually(lambda: not Path(f"/proc/{worker}").exists())
    assert fork_servers() == [server]
    assert cpulimit.run_with_cpu_limit(abs, (-2,), 5) == 2
    assert fork_servers() == [server] and len(workers()) == 1


def test_shutdown_leaves_no_server_and_no_worker_running():
    assert cpulimit.run_with_cpu_limit(abs, (-1,), 5) == 1
    (server,) = fork_servers()
    (worker,) = workers()
    cpulimit.shutdown_workers()
    assert eventually(lambda: not Path(f"/proc/{worker}").exists() and not Path(f"/proc/{server}").exists())


@pytest.mark.slow
def test_a_worker_that_stops_answering_is_killed_not_left_running(monkeypatch):
    monkeypatch.setattr(cpulimit, "BACKSTOP_FACTOR", 1)
    monkeypatch.setattr(cpulimit, "BACKSTOP_SLACK_SECONDS", 0.5)
    assert cpulimit.run_with_cpu_limit(abs, (-1,), 5) == 1
    (stuck,) = workers()
    with pytest.raises(cpulimit.WorkerFailed, match="stopped answering"):
        cpulimit.run_with_cpu_limit(time.sleep, (60,), 0.5)  # sleeping uses no CPU: only the backstop ends it
    assert eventually(lambda: not Path(f"/proc/{stuck}").exists(), seconds=5)
    assert cpulimit.run_with_cpu_limit(abs, (-2,), 5) == 2


def test_a_task_that_prints_does_not_corrupt_the_answers(capfd):
    assert cpulimit.run_with_cpu_limit(print, ("stray output",), 5) is None
    assert cpulimit.run_with_cpu_limit(abs, (-4,), 5) == 4
    out, err = capfd.readouterr()
    assert "stray output" in err and "stray output" not in out


@pytest.mark.parametrize(("args", "command"), [
    (["fetch", "--json"], "fetch"),
    (["--config", "fetch.toml", "demo"], "demo"),
    (["--config=x.toml", "run"], "run"),
    (["--help"], None),
    (["--version", "fetch"], None),
    ([], None),
    (["--config"], None),
])
def test_the_entry_point_finds_the_command_that_will_run(args, command):
    assert command_named(args) == command


def test_a_scheduled_fetch_stores_its_items_and_leaves_no_parse_worker_running(tmp_path):
    """Scheduled fetches are hours apart: digest run must not keep idle parsers (40-120 MB each) alive."""
    from digest import schedule
    from digest.store import open_store
    from digest.store.items import count_items

    config = one_feed_config(tmp_path)
    schedule.fetch_job(str(config))
    engine = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    assert count_items(engine) > 0
    engine.dispose()
    assert eventually(lambda: workers() == [])
    assert len(fork_servers()) == 1  # kept: the next fetch forks its workers at once


def test_digest_run_prepares_its_first_fetch_at_start_up(tmp_path):
    """prepare_fetch (called by digest run): the fork server runs and the HTTP stack is loaded before any fetch."""
    config = one_feed_config(tmp_path)
    probe = ("import sys; from digest.config import load_settings; from digest import fetch, pipeline;"
             f"pipeline.prepare_fetch(load_settings({str(config)!r})).join(60);"
             "print(fetch._tls_context.cache_info().currsize, 'anyio._backends._asyncio' in sys.modules)")
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)
    assert answer.stdout.split() == ["1", "True"]

    from digest.config import load_settings
    from digest.pipeline import prepare_fetch

    prepare_fetch(load_settings(config)).join(60)
    assert len(fork_servers()) == 1 and workers() == []


def test_a_process_that_hands_its_feeds_to_the_workers_never_imports_feedparser(tmp_path):
    """feedparser loads where parsing runs (the fork server): `digest fetch` itself does not pay for it."""
    config = one_feed_config(tmp_path)
    probe = ("import sys; from digest.config import load_settings; from digest.pipeline import fetch_all;"
             "from digest.store import open_store;"
             f"settings = load_settings({str(config)!r});"
             "reports = fetch_all(settings, open_store(settings.store.url));"
             "print(reports[0].new > 0, 'feedparser' in sys.modules)")
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert answer.stdout.split() == ["True", "False"], answer.stderr


def test_the_entry_point_preloads_what_the_parser_needs():
    from digest import __main__ as entry

    assert entry.PARSER_PRELOAD == PARSER_PRELOAD
