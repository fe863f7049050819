"""Starting the CPU-limited workers ahead of need (digest.cpulimit.start_workers), with real processes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from digest import cpulimit
from digest.parse import start_parse_workers

IMPORTED = "'digest.parse' in __import__('sys').modules"  # evaluated inside the worker


def worker_processes() -> int:
    """This process's live children that are cpulimit workers."""
    count = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # the process ended while we looked
        if ppid == os.getpid() and b"digest.cpulimit import serve" in cmdline:
            count += 1
    return count


@pytest.fixture(autouse=True)
def fresh_pool():
    cpulimit.shutdown_workers()
    yield
    cpulimit.shutdown_workers()


def test_a_started_worker_has_imported_its_preload_before_the_first_task():
    cpulimit.start_workers(1, preload=["digest.parse"])
    assert worker_processes() == 1
    assert cpulimit.run_with_cpu_limit(eval, (IMPORTED,), 5) is True


def test_a_worker_started_on_demand_imports_only_what_its_tasks_need():
    assert cpulimit.run_with_cpu_limit(eval, (IMPORTED,), 5) is False


def test_never_more_workers_than_cpus():
    cpulimit.start_workers(100)
    cpulimit.start_workers()
    assert worker_processes() == (os.cpu_count() or 1)
    assert cpulimit.run_with_cpu_limit(int, ("7",), 5) == 7


def test_parse_workers_start_only_when_parsing_is_cpu_limited():
    start_parse_workers(2, cpu_seconds=0)
    assert worker_processes() == 0
    start_parse_workers(1, cpu_seconds=5)
    assert worker_processes() == 1
    assert cpulimit.run_with_cpu_limit(eval, (IMPORTED,), 5) is True


def test_a_preload_that_fails_to_import_costs_nothing_but_the_head_start():
    cpulimit.start_workers(1, preload=["digest.no_such_module"])
    assert cpulimit.run_with_cpu_limit(int, ("1",), 5) == 1
    assert worker_processes() == 1


def test_a_scheduled_fetch_stores_its_items_and_leaves_no_parse_worker_running(tmp_path):
    """Scheduled fetches are hours apart: digest run must not keep idle parsers (40-120 MB each) alive."""
    from digest import schedule
    from digest.store import open_store
    from digest.store.items import count_items

    feeds = Path(__file__).parent / "data" / "feeds"
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n'
                      f'[[feeds]]\nname = "Publications"\nurl = "{feeds / "wordpress-rss.xml"}"\nkind = "brief"\n',
                      encoding="utf-8")
    schedule.fetch_job(str(config))
    engine = open_store(f"sqlite:///{tmp_path / 'd.db'}")
    assert count_items(engine) > 0
    engine.dispose()
    assert worker_processes() == 0
