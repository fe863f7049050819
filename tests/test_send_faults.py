"""Delivery under faults, with real `digest` processes: kill -9, a server that goes away, two
senders at once on SQLite, two workers on PostgreSQL. Each subprocess reads a config file pointing at
the test store and the test SMTP server (aiosmtpd in this process)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import free_port, start_smtp_server
from send_helpers import NOW, add_many, approved_issue, smtp_settings

from digest.models import IssueStatus
from digest.store import open_store
from digest.store.issues import get_issue
from digest.store.ledger import ledger_counts, start_sending

pytestmark = pytest.mark.slow
DIGEST = [str(Path(sys.executable).parent / "digest")]


def _config(tmp_path: Path, store_url: str, port: int, connections: int = 1, batch: int = 20,
            timeout: float = 5.0) -> Path:
    path = tmp_path / "digest.toml"
    path.write_text(f"""
[store]
url = "{store_url}"

[web]
base_url = "https://digest.example.org"

[delivery]
transport = "smtp"
batch_size = {batch}
retry_delay = 0.1
retry_max_delay = 0.5
max_attempts = 50

[delivery.smtp]
host = "127.0.0.1"
port = {port}
connections = {connections}
timeout = {timeout}
""", encoding="utf-8")
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "DIGEST_SECRET": "fault-test-secret"}


def _digest(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*DIGEST, "--config", str(config), *args], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class SlowSink:
    """Wraps the conftest handler: each message takes `delay` seconds to be accepted, as on a real
    server, so that a run lasts long enough to be killed in the middle of it."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay

    async def handle_RCPT(self, *args):
        return await self.inner.handle_RCPT(*args)

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.delay)
        return await self.inner.handle_DATA(server, session, envelope)


class GatedSink(SlowSink):
    """Holds every message at DATA until messages from `connections` connections are waiting, then
    lets them all through: a second sender is sure to get a share, however slowly it starts."""

    def __init__(self, inner, connections: int):
        super().__init__(inner, 0.0)
        self.connections, self.waiting, self.gate = connections, set(), asyncio.Event()

    async def handle_DATA(self, server, session, envelope):
        self.waiting.add(id(session))
        if len(self.waiting) >= self.connections:
            self.gate.set()
        with contextlib.suppress(TimeoutError):  # never hang the test: it fails on its assertions instead
            await asyncio.wait_for(self.gate.wait(), 60)
        return await super().handle_DATA(server, session, envelope)


def _slow_server(delay: float):
    server, controller = start_smtp_server()
    controller.handler = SlowSink(controller.handler, delay)
    return server, controller


@pytest.fixture
def slow_server():
    """The test SMTP server taking 4 ms per message (a few hundred messages: about a second or two)."""
    server, controller = _slow_server(0.004)
    yield server
    controller.stop()


def _open_rows(store_url: str, number: int) -> int:
    engine = open_store(store_url, migrate=False)
    try:
        counts = ledger_counts(engine, number)
    finally:
        engine.dispose()
    return counts["queued"] + counts["sending"] + counts["failed_temporary"]


def _copies(*servers) -> Counter:
    return Counter(r for server in servers for _, rcpts, _ in list(server.received) for r in rcpts)


def _prepared(tmp_path: Path, store_url: str, port: int, subscribers: int, **config) -> tuple[Path, int, list[str]]:
    engine = open_store(store_url)
    number = approved_issue(engine, smtp_settings(tmp_path, store_url, port))
    emails = add_many(engine, subscribers)
    engine.dispose()
    return _config(tmp_path, store_url, port, **config), number, emails


def test_kill_9_while_messages_flow_loses_nothing(tmp_path, sqlite_url, slow_server):
    total, rounds = 400, 20
    config, number, emails = _prepared(tmp_path, sqlite_url, slow_server.port, total)
    rng = random.Random(20261125)
    kills = mid_send = 0
    for round_number in range(rounds):
        start = len(slow_server.received)
        remaining = total - len(_copies(slow_server))
        # A random point while messages flow, leaving enough for the rounds still to come.
        target = start + rng.randint(1, max(1, remaining // (rounds - round_number + 1)))
        proc = _digest(config, "send", "--issue", str(number), "--wait", "30")
        deadline = time.monotonic() + 30
        while len(slow_server.received) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        at_kill = len(slow_server.received)
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate()
        if proc.returncode == -9 and at_kill > start and _open_rows(sqlite_url, number) > 0:
            mid_send += 1  # received messages since this sender started, and rows still open
    assert kills >= 15 and mid_send >= 15, (kills, mid_send)
    for _ in range(5):  # restart until done
        done = subprocess.run([*DIGEST, "--config", str(config), "send", "--issue", str(number), "--json",
                               "--wait", "30"], env=_env(), capture_output=True, text=True, timeout=120)
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stderr
    copies = _copies(slow_server)
    assert set(copies) == set(emails)  # every subscriber has at least one copy
    duplicates = sum(n - 1 for n in copies.values())
    assert duplicates <= kills, (duplicates, kills)
    engine = open_store(sqlite_url)
    assert get_issue(engine, number).status == IssueStatus.SENT
    assert ledger_counts(engine, number)["sent"] == total
    engine.dispose()


def test_the_smtp_server_stopping_mid_run_delays_but_loses_nothing(tmp_path, sqlite_url):
    port = free_port()
    first, controller = start_smtp_server(port)
    config, number, emails = _prepared(tmp_path, sqlite_url, port, 200, connections=2)
    proc = _digest(config, "send", "--issue", str(number), "--json")
    deadline = time.monotonic() + 60
    while len(first.received) < 40 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    controller.stop()
    time.sleep(1.5)  # the sender finds the server down and pauses
    second, controller = start_smtp_server(port)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        controller.stop()
    assert proc.returncode == 0, err
    report = json.loads(out)
    assert report["status"] == "sent" and report["gave_up"] == 0
    copies = _copies(first, second)
    assert set(copies) == set(emails)
    assert len(second.received) > 0


def test_two_senders_at_once_on_sqlite_send_each_message_once(tmp_path, sqlite_url, smtp_server):
    config, number, emails = _prepared(tmp_path, sqlite_url, smtp_server.port, 150, connections=2)
    procs = [_digest(config, "send", "--issue", str(number), "--wait", "60", "--json") for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert sorted(json.loads(out)["sent"] for out, _ in outputs) == [0, 150]
    assert _copies(smtp_server) == Counter(emails)


@pytest.mark.postgres
def test_two_workers_on_postgres_share_the_work_without_sending_a_row_twice(tmp_path, postgres_url):
    # The first messages wait at DATA until both workers' connections (two each) have one waiting.
    smtp_server, controller = start_smtp_server()
    controller.handler = GatedSink(controller.handler, connections=3)
    try:
        config, number, emails = _prepared(tmp_path, postgres_url, smtp_server.port, 300, connections=2, batch=10,
                                           timeout=90.0)
        engine = open_store(postgres_url)
        start_sending(engine, number, NOW)
        procs = [_digest(config, "worker", "--once", "--json") for _ in range(2)]
        outputs = [p.communicate(timeout=180) for p in procs]
    finally:
        controller.stop()
    assert [p.returncode for p in procs] == [0, 0], outputs
    sent = [json.loads(out)["sent"] if out.strip() else 0 for out, _ in outputs]
    assert sum(sent) == 300 and min(sent) > 0, outputs  # both workers sent a share
    assert _copies(smtp_server) == Counter(emails)
    assert ledger_counts(engine, number)["sent"] == 300
    assert get_issue(engine, number).status == IssueStatus.SENT
    engine.dispose()


@pytest.mark.postgres
def test_a_killed_worker_on_postgres_leaves_its_rows_to_the_next_one(tmp_path, postgres_url, smtp_server):
    config, number, emails = _prepared(tmp_path, postgres_url, smtp_server.port, 200, connections=1, batch=10)
    engine = open_store(postgres_url)
    start_sending(engine, number, NOW)
    rng = random.Random(6)
    kills = 0
    for _ in range(3):
        proc = _digest(config, "worker", "--once")
        time.sleep(rng.uniform(0.8, 1.5))
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.communicate()
    # Rows the dead workers claimed are taken over at once: their processes are gone (same host).
    done = subprocess.run([*DIGEST, "--config", str(config), "worker", "--once"], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    copies = _copies(smtp_server)
    assert set(copies) == set(emails)
    assert sum(n - 1 for n in copies.values()) <= kills
    assert get_issue(engine, number).status == IssueStatus.SENT
    engine.dispose()
