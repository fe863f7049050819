"""Sending through the faults of issue 16, each on a real SMTP server (aiosmtpd on 127.0.0.1) and a
real store: a server that stores a message and then drops the connection, one that acknowledges
slowly, size limits before and after DATA, the JSON report when a send fails, the ledger's text,
pipelined refusals, and the SQLite store locked by another process mid-send."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from conftest import start_smtp_server
from send_helpers import (
    Offers,
    SlowAck,
    StoreThenDrop,
    Wrapped,
    add_confirmed,
    add_many,
    approved_issue,
    size_limit,
    smtp_settings,
)
from sqlalchemy import select

import digest.store as store_module
from digest.cli import main
from digest.deliver.editions import edition_messages
from digest.deliver.sender import MessagesTooLarge
from digest.pipeline.sending import send_issue, work_pending
from digest.store import open_store
from digest.store.issues import get_issue, require_issue
from digest.store.ledger import ledger_counts, start_sending
from digest.store.locks import lock_holder, lock_owner, release_lock
from digest.store.schema import deliveries


@pytest.fixture
def server():
    smtp, controller = start_smtp_server()
    yield smtp, controller
    controller.stop()


def _rows(engine, number):
    with engine.connect() as conn:
        return {row.subscriber_id: row for row in conn.execute(select(deliveries).where(
            deliveries.c.issue_number == number))}


def _copies(smtp) -> Counter:
    return Counter(r for _, rcpts, _ in smtp.received for r in rcpts)


def _config(tmp_path, store_url, port, **smtp_extra) -> str:
    extra = "".join(f"{key} = {value!r}\n".replace("'", '"') for key, value in smtp_extra.items())
    path = tmp_path / "digest.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n[web]\nbase_url = "https://digest.example.org"\n'
                    f'[delivery]\ntransport = "smtp"\nretry_delay = 0.05\n[delivery.smtp]\nport = {port}\n{extra}',
                    encoding="utf-8")
    return str(path)


# --- possibly delivered: the reply to the final "." lost ------------------------------------------------

def test_a_message_stored_then_dropped_is_sent_twice_at_most_and_never_given_up(engine, tmp_path, store_url, server):
    # Each message is stored, then the connection drops before the server's reply: digest reconnected and
    # sent it again at once, on every attempt (6 copies each with max_attempts 3), then said "given up".
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, max_attempts=3)
    number = approved_issue(engine, settings)
    emails = add_many(engine, 4)
    controller.handler = drop = StoreThenDrop(controller.handler)
    report = send_issue(settings, engine, number)
    assert (report.possibly_delivered, report.gave_up, report.sent, report.failed) == (4, 0, 0, 0)
    assert _copies(smtp) == Counter({email: 2 for email in emails}) and drop.drops == 8
    counts = ledger_counts(engine, number)
    assert (counts["possibly_delivered"], counts["failed_permanent"], report.status) == (4, 0, "sent")
    for row in _rows(engine, number).values():
        assert row.possibly_delivered_at is not None and row.last_error.startswith("possibly delivered")
        assert "gave up" not in row.last_error


def test_a_possibly_delivered_message_waits_for_the_retry_delay(engine, tmp_path, store_url, server):
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, retry_delay=3600.0, retry_max_delay=7200.0)
    number = approved_issue(engine, settings)
    lost = add_confirmed(engine, "lost@example.net")
    fine = add_many(engine, 2)
    controller.handler = StoreThenDrop(controller.handler, addresses=(lost.email,))
    start_sending(engine, number, datetime.now(UTC))
    before = datetime.now(UTC)
    (report,) = work_pending(settings, engine, lock_holder("worker"))
    assert (report.sent, report.retried, report.possibly_delivered) == (2, 1, 0)
    assert _copies(smtp) == Counter({lost.email: 1, **dict.fromkeys(fine, 1)})  # not resent at once
    row = _rows(engine, number)[lost.id]
    assert row.status == "failed_temporary" and row.attempts == 1
    assert row.next_attempt_at >= before + timedelta(seconds=3600)
    assert get_issue(engine, number).status.value == "sending"


def test_a_slow_acknowledgement_is_waited_for(engine, tmp_path, store_url, server):
    # A 1 s acknowledgement against a 0.3 s command timeout: 4 subscribers received 9 messages.
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port,
                             smtp={"host": "127.0.0.1", "port": smtp.port, "connections": 2, "timeout": 0.3})
    number = approved_issue(engine, settings)
    emails = add_many(engine, 4)
    controller.handler = SlowAck(controller.handler, delay=1.0)
    report = send_issue(settings, engine, number)
    assert (report.sent, report.possibly_delivered, report.retried) == (4, 0, 0)
    assert _copies(smtp) == Counter(dict.fromkeys(emails, 1))


# --- size refusals ---------------------------------------------------------------------------------------

def test_a_size_refusal_after_data_keeps_every_row_queued_and_the_issue_unsent(engine, tmp_path, store_url, server):
    # Postfix with message_size_limit below the edition, no SIZE in EHLO: every message got 552 after
    # DATA, every row failed_permanent, the issue "sent" with nothing delivered, exit 0.
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, bounce_threshold=1)
    number = approved_issue(engine, settings)
    add_many(engine, 6)  # fewer than stop_after_refusals: that check never fires
    controller.handler = Offers(controller.handler, pipelining=False, size=False)
    size_limit(controller, 2000)  # smaller than any edition
    with pytest.raises(MessagesTooLarge) as stopped:
        send_issue(settings, engine, number)
    message = str(stopped.value)
    assert "6 messages are too large" in message and "552 Error: Too much mail data" in message
    assert "does not say its limit" in message and "message_size_limit" in message and "max_html_kib" in message
    assert "the en edition with" in message and "0 smaller messages were sent" in message
    counts = ledger_counts(engine, number)
    assert counts["queued"] == 6 and counts["failed_permanent"] == counts["failed_temporary"] == 0
    assert get_issue(engine, number).status.value == "sending" and smtp.received == []
    report = stopped.value.report
    assert (report.sent, report.failed, report.too_large, report.status) == (0, 0, 6, "sending")


def test_a_size_limit_at_mail_from_sends_the_segments_that_fit(engine, tmp_path, store_url, server):
    # Editions of 49-66 KB against a 58,000-byte limit: the whole run stopped at the first 552 to MAIL FROM.
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port)
    number = approved_issue(engine, settings)
    small = [add_confirmed(engine, f"small{i}@example.net", series=("esa-economy-trade",), want_events=False,
                           want_media=False) for i in range(3)]
    big = [add_confirmed(engine, f"big{i}@example.net") for i in range(2)]  # every section
    messages = edition_messages(settings, require_issue(engine, number))
    small_size = max(len(messages(s).data) for s in small)
    big_size = min(len(messages(s).data) for s in big)
    assert small_size < big_size
    size_limit(controller, (small_size + big_size) // 2)
    with pytest.raises(MessagesTooLarge) as stopped:
        send_issue(settings, engine, number)
    message = str(stopped.value)
    assert "2 messages are too large" in message and f"up to {(small_size + big_size) // 2:,} bytes" in message
    assert "esa-security-defence" in message and "3 smaller messages were sent" in message
    assert sorted(_copies(smtp)) == sorted(s.email for s in small)
    rows = _rows(engine, number)
    assert {rows[s.id].status for s in small} == {"sent"} and {rows[s.id].status for s in big} == {"queued"}
    assert stopped.value.report.sent == 3


def test_digest_send_json_prints_the_report_when_it_exits_1(engine, tmp_path, store_url, server):
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port)
    number = approved_issue(engine, settings)
    add_many(engine, 3)
    size_limit(controller, 2000)
    result = CliRunner().invoke(main, ["--config", _config(tmp_path, store_url, smtp.port), "send", "--issue",
                                       str(number), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert (report["issue"], report["status"], report["sent"], report["too_large"], report["exit_code"]) == (
        number, "sending", 0, 3, 1)
    assert report["ledger"]["queued"] == 3 and "too large" in report["error"]


def test_digest_send_json_prints_a_report_when_it_cannot_start(engine, tmp_path, store_url):
    number = approved_issue(engine, smtp_settings(tmp_path, store_url, 1))
    add_many(engine, 1)
    from conftest import free_port

    result = CliRunner().invoke(main, ["--config", _config(tmp_path, store_url, free_port()), "send", "--issue",
                                       str(number), "--json"])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["issue"] == number and "cannot connect" in report["error"] and report["exit_code"] == 1
    unknown = CliRunner().invoke(main, ["--config", _config(tmp_path, store_url, free_port()), "send", "--issue",
                                        "99", "--json"])
    assert unknown.exit_code == 2
    report = json.loads(unknown.stdout)
    assert (report["issue"], report["exit_code"], report["sent"]) == (99, 2, 0) and "no issue 99" in report["error"]


def test_the_ledger_states_the_reply_code_once(engine, tmp_path, store_url, server):
    smtp, _ = server
    settings = smtp_settings(tmp_path, store_url, smtp.port)
    number = approved_issue(engine, settings)
    gone = add_confirmed(engine, "gone@example.net")
    smtp.replies[gone.email] = ["550 5.1.1 no such user"]
    send_issue(settings, engine, number)
    assert _rows(engine, number)[gone.id].last_error == "550 5.1.1 no such user"


def test_pipelined_refusals_are_reported_per_recipient_and_nothing_is_sent_for_them(engine, tmp_path, store_url,
                                                                                  server):
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, bounce_threshold=1)
    number = approved_issue(engine, settings)
    fine = add_many(engine, 3)
    gone = add_confirmed(engine, "gone@example.net")
    smtp.replies[gone.email] = ["550 5.1.1 no such user"]
    controller.handler = offers = Offers(controller.handler, pipelining=True)
    report = send_issue(settings, engine, number)
    assert (report.sent, report.failed, report.bounced) == (3, 1, 1) and offers.helo_names
    assert sorted(_copies(smtp)) == sorted(fine)
    assert _rows(engine, number)[gone.id].status == "failed_permanent"


# --- the store failing mid-send ---------------------------------------------------------------------------

class LockStoreAt(Wrapped):
    """After accepting the `at`-th message, another connection takes the SQLite database with BEGIN
    EXCLUSIVE and holds it until `release()` (a backup, a long write, an open sqlite3 shell)."""

    def __init__(self, inner, path, at: int):
        super().__init__(inner)
        self.path, self.at, self.seen, self.holder = path, at, 0, None
        self.locked = threading.Event()

    async def handle_DATA(self, server, session, envelope):
        reply = await super().handle_DATA(server, session, envelope)
        self.seen += 1
        if self.seen == self.at:
            self.holder = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self.holder.execute("BEGIN EXCLUSIVE")
            self.locked.set()
        return reply

    def release(self) -> None:
        if self.holder is not None:
            self.holder.execute("ROLLBACK")
            self.holder.close()


def test_a_store_locked_mid_send_stops_with_a_plain_message_and_loses_nothing(tmp_path, server, monkeypatch):
    # The send used to end in a raw SQLAlchemy traceback. The busy timeout is shortened (30 s in the store)
    # so that the test does not wait for it.
    real_pragmas = store_module._sqlite_pragmas

    def short_busy_timeout(dbapi_connection, record):
        real_pragmas(dbapi_connection, record)
        dbapi_connection.execute("PRAGMA busy_timeout=300")

    monkeypatch.setattr(store_module, "_sqlite_pragmas", short_busy_timeout)
    path = tmp_path / "digest.db"
    store_url = f"sqlite:///{path}"
    engine = open_store(store_url)
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port)
    number = approved_issue(engine, settings)
    emails = add_many(engine, 20)
    controller.handler = lock = LockStoreAt(controller.handler, str(path), at=3)
    try:
        result = CliRunner().invoke(main, ["--config", _config(tmp_path, store_url, smtp.port, connections=2),
                                           "send", "--issue", str(number)])
    finally:
        lock.release()
    assert lock.locked.is_set()
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"the store (sqlite:///{path}, store.url) failed during the send: database is locked" in result.output
    assert "Another process may hold the SQLite database locked" in result.output and "run `digest send" in result.output
    assert "Traceback" not in result.output and "sqlalchemy" not in result.output.lower()
    controller.handler = lock.inner
    # The failed send could not release its lease on the send lock either (the store was locked). A new
    # process takes over a dead one's lease at once; this test's process is alive, so it releases it.
    release_lock(engine, "send", lock_owner(engine, "send"))
    report = send_issue(settings, engine, number)
    assert report.status == "sent"
    assert get_issue(engine, number).status.value == "sent"
    copies = _copies(smtp)
    assert set(copies) == set(emails)  # nobody lost
    assert sum(copies.values()) - len(emails) <= 2  # at most one duplicate per SMTP connection
    engine.dispose()
