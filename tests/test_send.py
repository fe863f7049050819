"""Sending an issue through a real SMTP server (aiosmtpd on 127.0.0.1), on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from conftest import free_port, start_smtp_server
from send_helpers import (
    NOW,
    SERIES_IDS,
    add_confirmed,
    add_many,
    approved_issue,
    sample_issue,
    sections_in,
    smtp_settings,
)
from sqlalchemy import select

from digest.cli import main
from digest.deliver.sender import RetryPolicy, SenderBusy
from digest.models import IssueStatus, SubscriberStatus
from digest.pipeline.sending import ServerUnreachable, run_worker, send_issue, send_test, work_pending
from digest.signing import PREFERENCES, UNSUBSCRIBE, verify
from digest.store.issues import create_issue, get_issue
from digest.store.ledger import LedgerError, ledger_counts, start_sending
from digest.store.locks import acquire_lock, release_lock
from digest.store.schema import deliveries, subscribers
from digest.store.subscribers import get_subscriber, set_status


@pytest.fixture
def settings(tmp_path, store_url, smtp_server):
    return smtp_settings(tmp_path, store_url, smtp_server.port)


@pytest.fixture
def issue(engine, settings):
    return approved_issue(engine, settings)


def _row(engine, number, subscriber_id):
    with engine.connect() as conn:
        return conn.execute(select(deliveries).where(deliveries.c.issue_number == number,
                                                     deliveries.c.subscriber_id == subscriber_id)).one()


def test_every_subscriber_gets_exactly_the_sections_they_chose(engine, settings, issue, smtp_server):
    everything = add_confirmed(engine, "all@example.net", name="Zoë O'Brien")
    trade = add_confirmed(engine, "trade@example.net", series=("esa-economy-trade",), want_events=False,
                          want_media=False)
    two = add_confirmed(engine, "two@example.net", series=("esa-security-defence", "esa-digital-technology"),
                        want_events=True, want_media=False, language="fr")
    nothing = add_confirmed(engine, "nothing@example.net", series=("no-such-series",), want_events=False,
                            want_media=False)
    add_subscriber_pending = add_confirmed(engine, "pending@example.net")
    set_status(engine, add_subscriber_pending.id, SubscriberStatus.PENDING, NOW)

    report = send_issue(settings, engine, issue)

    assert (report.sent, report.skipped, report.failed, report.status) == (3, 1, 0, "sent")
    expected = {everything.email: {*SERIES_IDS, "events", "media"}, trade.email: {"esa-economy-trade"},
                two.email: {"esa-security-defence", "esa-digital-technology", "events"}}
    for email, sections in expected.items():
        [message] = smtp_server.for_recipient(email)
        assert sections_in(message) == sections, email
        assert not message.defects
    assert smtp_server.for_recipient(nothing.email) == []
    assert smtp_server.for_recipient("pending@example.net") == []
    assert _row(engine, issue, nothing.id).status == "skipped"
    assert get_issue(engine, issue).status == IssueStatus.SENT


def test_messages_are_personalised(engine, settings, issue, smtp_server):
    reader = add_confirmed(engine, "zoe@example.net", name="Zoë O'Brien")
    send_issue(settings, engine, issue)
    [message] = smtp_server.for_recipient(reader.email)
    assert message["To"].addresses[0].display_name == "Zoë O'Brien"
    unsubscribe = message["List-Unsubscribe"].strip("<>")
    assert verify(settings, unsubscribe.rsplit("/", 1)[1], UNSUBSCRIBE) == reader.id
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert f"https://digest.example.org/archive/{issue}" in text
    assert unsubscribe in text and unsubscribe.replace("&", "&amp;") in html
    preferences = [w for w in text.split() if "/preferences/" in w][0].strip("<>()")
    assert verify(settings, preferences.rsplit("/", 1)[1], PREFERENCES) == reader.id
    assert _row(engine, issue, reader.id).message_id == message["Message-ID"]


def test_sending_again_sends_nothing(engine, settings, issue, smtp_server):
    add_many(engine, 25)
    first = send_issue(settings, engine, issue)
    again = send_issue(settings, engine, issue)
    assert first.sent == 25 and again.sent == 0 and again.status == "sent"
    assert len(smtp_server.received) == 25


def test_only_approved_issues_are_sent(engine, settings, smtp_server):
    draft = create_issue(engine, sample_issue(), {"issue": {}, "sections": []}, NOW)
    add_confirmed(engine, "a@example.net")
    with pytest.raises(LedgerError, match="approve it first"):
        send_issue(settings, engine, draft.number)
    with pytest.raises(LedgerError, match="no issue 42"):
        send_issue(settings, engine, 42)
    assert smtp_server.received == []


def test_whoever_unsubscribes_mid_send_is_skipped(engine, settings, issue, smtp_server):
    emails = add_many(engine, 40)
    last = get_subscriber(engine, emails[-1])
    settings = replace(settings, delivery=replace(settings.delivery, batch_size=5))

    def unsubscribe_last(done: int, total: int) -> None:
        if done == 1:
            set_status(engine, last.id, SubscriberStatus.UNSUBSCRIBED, NOW)

    report = send_issue(settings, engine, issue, progress=unsubscribe_last)
    assert report.sent == 39 and report.skipped == 1
    assert smtp_server.for_recipient(last.email) == []
    assert _row(engine, issue, last.id).status == "skipped"


def test_temporary_failures_retry_and_permanent_ones_bounce(engine, settings, issue, smtp_server):
    later = add_confirmed(engine, "later@example.net")
    gone = add_confirmed(engine, "gone@example.net")
    fine = add_confirmed(engine, "fine@example.net")
    smtp_server.replies["later@example.net"] = ["451 4.3.0 try again later", None]
    smtp_server.replies["gone@example.net"] = ["550 5.1.1 no such user"]

    report = send_issue(settings, engine, issue)

    assert (report.sent, report.failed, report.retried, report.bounced) == (2, 1, 1, 0)
    assert len(smtp_server.for_recipient(later.email)) == 1 and len(smtp_server.for_recipient(fine.email)) == 1
    assert smtp_server.for_recipient(gone.email) == []
    assert _row(engine, issue, later.id).attempts == 2 and _row(engine, issue, later.id).status == "sent"
    failed = _row(engine, issue, gone.id)
    assert failed.status == "failed_permanent" and "550" in failed.last_error
    with engine.connect() as conn:
        bounce_count, status = conn.execute(select(subscribers.c.bounce_count, subscribers.c.status)
                                            .where(subscribers.c.id == gone.id)).one()
    assert (bounce_count, status) == (1, "confirmed")  # below bounce_threshold (2)
    assert report.status == "sent"


def test_reaching_the_bounce_threshold_marks_the_subscriber_bounced(engine, tmp_path, store_url, smtp_server):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, bounce_threshold=1)
    number = approved_issue(engine, settings)
    gone = add_confirmed(engine, "gone@example.net")
    smtp_server.replies["gone@example.net"] = ["550 5.1.1 no such user"]
    report = send_issue(settings, engine, number)
    assert (report.failed, report.bounced) == (1, 1)
    assert get_subscriber(engine, gone.id).status == SubscriberStatus.BOUNCED


def test_temporary_failures_are_given_up_after_max_attempts(engine, tmp_path, store_url, smtp_server):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, max_attempts=2)
    number = approved_issue(engine, settings)
    stuck = add_confirmed(engine, "stuck@example.net")
    smtp_server.replies["stuck@example.net"] = ["452 4.2.2 mailbox full"] * 3
    report = send_issue(settings, engine, number)
    assert (report.sent, report.retried, report.gave_up, report.bounced) == (0, 1, 1, 0)
    row = _row(engine, number, stuck.id)
    assert row.status == "failed_permanent" and row.last_error.startswith("gave up after 2 attempts: 452")
    assert get_subscriber(engine, stuck.id).status == SubscriberStatus.CONFIRMED  # not the reader's fault


def test_a_server_outage_pauses_and_resumes(engine, tmp_path, store_url):
    port = free_port()
    settings = smtp_settings(tmp_path, store_url, port, max_attempts=3)
    number = approved_issue(engine, settings)
    emails = add_many(engine, 30)
    holder = {}
    # The server comes up only after the sender has found it down several times.
    timer = threading.Timer(1.0, lambda: holder.update(zip(("server", "controller"), start_smtp_server(port), strict=True)))
    timer.start()
    try:
        report = send_issue(settings, engine, number)
    finally:
        timer.join()
        server = holder["server"]
        holder["controller"].stop()
    assert report.sent == 30 and report.gave_up == 0 and report.retried >= 2
    assert Counter(r for _, rcpts, _ in server.received for r in rcpts) == Counter(emails)


def test_late_subscribers_get_the_issue_they_missed(engine, settings, issue, smtp_server):
    add_many(engine, 3)
    send_issue(settings, engine, issue)
    newcomer = add_confirmed(engine, "new@example.net")
    assert send_issue(settings, engine, issue).sent == 0
    report = send_issue(settings, engine, issue, late=True)
    assert report.sent == 1 and len(smtp_server.for_recipient(newcomer.email)) == 1
    assert len(smtp_server.received) == 4


def test_a_second_sender_on_sqlite_is_refused_with_a_clear_message(tmp_path, sqlite_url, smtp_server):
    from digest.store import open_store

    engine = open_store(sqlite_url)
    settings = smtp_settings(tmp_path, sqlite_url, smtp_server.port)
    number = approved_issue(engine, settings)
    add_many(engine, 3)
    assert acquire_lock(engine, "send", "send@elsewhere:1:abcd", 60)
    with pytest.raises(SenderBusy, match=r"another sender \(send@elsewhere:1:abcd\)"):
        send_issue(settings, engine, number)
    assert smtp_server.received == []


def test_workers_send_issues_left_in_sending(engine, settings, issue, smtp_server):
    emails = add_many(engine, 12)
    start_sending(engine, issue, NOW)
    [report] = work_pending(settings, engine, "worker@test:1:abcd", batch_size=5)
    assert report.sent == 12 and report.status == "sent"
    assert sorted(r for _, rcpts, _ in smtp_server.received for r in rcpts) == sorted(emails)
    assert work_pending(settings, engine, "worker@test:1:abcd") == []


def test_a_worker_works_pass_after_pass_until_stopped(engine, settings, issue, smtp_server):
    emails = add_many(engine, 4)
    start_sending(engine, issue, NOW)
    stop, passes = threading.Event(), []

    def on_pass(reports):
        passes.append(reports)
        if len(passes) == 2:
            stop.set()

    assert run_worker(settings, engine, interval=0.01, on_pass=on_pass, stop=stop) == []
    [first], second = passes
    assert first.sent == 4 and first.status == "sent" and second == []
    assert sorted(r for _, rcpts, _ in smtp_server.received for r in rcpts) == sorted(emails)


def test_a_worker_waits_out_another_sender_on_sqlite_but_one_pass_is_refused(tmp_path, sqlite_url, smtp_server):
    from digest.store import open_store

    engine = open_store(sqlite_url)
    settings = smtp_settings(tmp_path, sqlite_url, smtp_server.port)
    number = approved_issue(engine, settings)
    add_many(engine, 3)
    start_sending(engine, number, NOW)
    assert acquire_lock(engine, "send", "send@elsewhere:1:abcd", 60)
    with pytest.raises(SenderBusy):
        run_worker(settings, engine, once=True)
    stop, told, passes = threading.Event(), [], []

    def on_busy(exc):
        told.append(str(exc))
        release_lock(engine, "send", "send@elsewhere:1:abcd")  # the other sender finishes

    def on_pass(reports):
        passes.append(reports)
        if reports:
            stop.set()

    run_worker(settings, engine, interval=0.01, on_pass=on_pass, on_busy=on_busy, stop=stop)
    assert len(told) == 1 and "send@elsewhere:1:abcd" in told[0]
    assert passes[0] == [] and passes[-1][0].sent == 3
    assert len(smtp_server.received) == 3


def test_a_send_started_by_hand_stops_at_once_when_the_server_takes_no_connection(engine, tmp_path, store_url):
    settings = smtp_settings(tmp_path, store_url, free_port())  # nothing listens there
    number = approved_issue(engine, settings)
    add_many(engine, 3)
    with pytest.raises(ServerUnreachable, match="127.0.0.1"):
        send_issue(settings, engine, number, check_server=True)
    assert ledger_counts(engine, number).get("queued") == 3  # queued, nothing tried
    assert get_issue(engine, number).status == IssueStatus.SENDING
    with pytest.raises(ServerUnreachable):
        run_worker(settings, engine, once=True)
    assert ledger_counts(engine, number).get("queued") == 3


def test_a_sent_issue_needs_no_server_to_say_there_is_nothing_to_send(engine, tmp_path, store_url, settings,
                                                                      issue, smtp_server):
    add_many(engine, 2)
    assert send_issue(settings, engine, issue).sent == 2
    down = smtp_settings(tmp_path, store_url, free_port())
    again = send_issue(down, engine, issue, check_server=True)
    assert (again.sent, again.status) == (0, "sent")
    assert run_worker(down, engine, once=True) == []  # nothing being sent: no check
    add_many(engine, 1, prefix="newcomer")
    with pytest.raises(ServerUnreachable):  # --late has a newcomer to send to, so it checks
        send_issue(down, engine, issue, late=True, check_server=True)
    with pytest.raises(ServerUnreachable):  # the newcomer's row waits in the ledger: a worker takes it up
        run_worker(down, engine, once=True)


def test_a_test_send_reaches_staff_and_leaves_the_ledger_alone(engine, settings, issue, smtp_server):
    add_confirmed(engine, "trade@example.net", series=("esa-economy-trade",), want_events=False, want_media=False)
    results = send_test(settings, engine, issue, ["editor@example.org", "chief@example.org"])
    assert all(r.ok for r in results)
    [full] = smtp_server.for_recipient("editor@example.org")
    assert sections_in(full) == {*SERIES_IDS, "events", "media"}
    send_test(settings, engine, issue, ["editor@example.org"], subscriber_email="trade@example.net")
    assert sections_in(smtp_server.for_recipient("editor@example.org")[1]) == {"esa-economy-trade"}
    assert ledger_counts(engine, issue)["queued"] == 0 and sum(ledger_counts(engine, issue).values()) == 0
    assert get_issue(engine, issue).status == IssueStatus.APPROVED
    with pytest.raises(LookupError, match="no subscriber"):
        send_test(settings, engine, issue, ["editor@example.org"], subscriber_email="nobody@example.net")


# --- the command line ------------------------------------------------------------------------------

def _config(tmp_path, settings, extra: str = "", smtp_extra: str = "") -> str:
    path = tmp_path / "digest.toml"
    path.write_text(f"""
[store]
url = "{settings.store.url}"

[web]
base_url = "https://digest.example.org"

[delivery]
transport = "smtp"
retry_delay = 0.05
{extra}
[delivery.smtp]
host = "127.0.0.1"
port = {settings.delivery.smtp.port}
connections = 2
{smtp_extra}
""", encoding="utf-8")
    return str(path)


def test_digest_send_json_report_and_exit_codes(engine, settings, issue, smtp_server, tmp_path):
    config = _config(tmp_path, settings)
    add_many(engine, 5)
    runner = CliRunner()
    result = runner.invoke(main, ["--config", config, "send", "--issue", str(issue), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sent"] == 5 and report["status"] == "sent" and report["ledger"]["sent"] == 5
    assert set(report) >= {"issue", "sent", "failed", "bounced", "skipped", "duration", "rate", "open"}
    again = runner.invoke(main, ["--config", config, "send", "--issue", str(issue), "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["sent"] == 0
    plain = runner.invoke(main, ["--config", config, "send", "--issue", str(issue)])
    assert plain.exit_code == 0 and "already sent to everyone" in plain.output
    missing = runner.invoke(main, ["--config", config, "send", "--issue", "77"])
    assert missing.exit_code == 2 and "no issue 77" in missing.output
    lonely = runner.invoke(main, ["--config", config, "send", "--issue", str(issue), "--subscriber", "a@b.org"])
    assert lonely.exit_code == 2 and "--test" in lonely.output


def test_digest_send_test_and_worker_once(engine, settings, issue, smtp_server, tmp_path):
    config = _config(tmp_path, settings)
    add_many(engine, 4)
    runner = CliRunner()
    result = runner.invoke(main, ["--config", config, "send", "--issue", str(issue), "--test", "ed@example.org"])
    assert result.exit_code == 0 and "test send to ed@example.org: sent" in result.output
    start_sending(engine, issue, NOW)
    worker = runner.invoke(main, ["--config", config, "worker", "--once", "--batch", "2", "--json"])
    assert worker.exit_code == 0, worker.output
    assert json.loads(worker.stdout)["sent"] == 4
    assert len(smtp_server.received) == 5


@pytest.mark.timeout(60)  # a worker that loops on instead of exiting fails here, not at the global limit
def test_a_looping_worker_exits_1_when_the_run_is_stopped(engine, settings, issue, smtp_server, tmp_path):
    # Every pass would stop the same way (a relay refusing everyone): the worker says so and exits.
    config = _config(tmp_path, settings, "stop_after_refusals = 3")
    emails = add_many(engine, 6)
    for email in emails:
        smtp_server.replies[email] = ["554 5.7.1 Relay access denied"] * 5
    start_sending(engine, issue, NOW)
    worker = CliRunner().invoke(main, ["--config", config, "worker", "--interval", "0.1"])
    assert worker.exit_code == 1 and isinstance(worker.exception, SystemExit), worker.output
    assert "error: stopped: 3 messages in a row were refused" in worker.output
    assert "Relay access denied" in worker.output
    counts = ledger_counts(engine, issue)
    assert counts["queued"] == 6 and counts["failed_permanent"] == 0 and smtp_server.received == []


def test_given_up_messages_make_digest_send_exit_1(engine, settings, issue, smtp_server, tmp_path):
    config = _config(tmp_path, settings, "max_attempts = 1")
    add_confirmed(engine, "full@example.net")
    smtp_server.replies["full@example.net"] = ["452 4.2.2 mailbox full"]
    result = CliRunner().invoke(main, ["--config", config, "send", "--issue", str(issue)])
    assert result.exit_code == 1 and "1 given up" in result.output


def test_an_address_no_header_can_carry_fails_only_its_own_row(engine, settings, issue, smtp_server):
    bad = add_confirmed(engine, "bad@example.net")
    with engine.begin() as conn:  # e.g. a row edited by hand: the store itself validates addresses
        conn.execute(subscribers.update().where(subscribers.c.id == bad.id).values(email="two words@example.net"))
    good = add_confirmed(engine, "good@example.net")
    report = send_issue(settings, engine, issue)
    assert (report.sent, report.failed, report.status) == (1, 1, "sent")
    row = _row(engine, issue, bad.id)
    assert row.status == "failed_permanent" and row.last_error.startswith("cannot build the message")
    assert len(smtp_server.for_recipient(good.email)) == 1


def test_digest_send_exits_1_while_another_sender_holds_the_sqlite_lock(tmp_path, sqlite_url, smtp_server):
    from digest.store import open_store

    engine = open_store(sqlite_url)
    settings = smtp_settings(tmp_path, sqlite_url, smtp_server.port)
    number = approved_issue(engine, settings)
    add_many(engine, 2)
    acquire_lock(engine, "send", "worker@elsewhere:7:abcd", 60)
    result = CliRunner().invoke(main, ["--config", _config(tmp_path, settings), "send", "--issue", str(number)])
    assert result.exit_code == 1 and "another sender (worker@elsewhere:7:abcd)" in result.output
    worker = CliRunner().invoke(main, ["--config", _config(tmp_path, settings), "worker", "--once"])
    assert worker.exit_code == 1 and "SQLite allows one at a time" in worker.output
    assert smtp_server.received == []


def test_a_sender_setting_no_header_can_carry_stops_sending_and_fails_nobody(engine, tmp_path, store_url,
                                                                             smtp_server):
    from digest.deliver.editions import EditionError

    settings = smtp_settings(tmp_path, store_url, smtp_server.port)
    # Such a sender no longer loads from a config (tests/test_config.py); sending still refuses it.
    settings = replace(settings, delivery=replace(settings.delivery, sender="Digest <not an address>"))
    number = approved_issue(engine, settings)
    add_many(engine, 5)
    with pytest.raises(EditionError, match="cannot build the en edition of issue 1"):
        send_issue(settings, engine, number)
    assert ledger_counts(engine, number)["queued"] == 5  # back in the queue, for after the fix
    assert smtp_server.received == []
    config = _config(tmp_path, settings, 'sender = "Digest <not an address>"')
    result = CliRunner().invoke(main, ["--config", config, "send", "--issue", str(number)])
    assert result.exit_code == 2 and "'delivery.sender' is 'Digest <not an address>'" in result.output


def test_smtp_settings_that_cannot_work_exit_2_and_keep_the_queue(engine, settings, issue, smtp_server, tmp_path,
                                                                   monkeypatch):
    monkeypatch.delenv("DIGEST_TEST_NO_PASSWORD", raising=False)
    config = _config(tmp_path, settings, smtp_extra='username = "digest"\npassword_env = "DIGEST_TEST_NO_PASSWORD"')
    add_many(engine, 3)
    result = CliRunner().invoke(main, ["--config", config, "send", "--issue", str(issue)])
    assert result.exit_code == 2 and "DIGEST_TEST_NO_PASSWORD is empty" in result.output
    assert ledger_counts(engine, issue)["queued"] == 3 and smtp_server.received == []


# --- backoff, progress, rate limit, languages -----------------------------------------------------

def test_retry_delays_double_from_retry_delay_up_to_retry_max_delay():
    policy = RetryPolicy(retry_delay=60.0, retry_max_delay=200.0)
    assert [policy.delay(attempt) for attempt in (1, 2, 3, 4, 10)] == [60.0, 120.0, 200.0, 200.0, 200.0]


def test_each_retry_is_written_to_the_ledger_after_the_backoff(engine, tmp_path, store_url, smtp_server):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, retry_delay=1000.0, retry_max_delay=3000.0)
    number = approved_issue(engine, settings)
    later = add_confirmed(engine, "later@example.net")
    smtp_server.replies[later.email] = ["451 4.3.0 try later"] * 3
    start_sending(engine, number, NOW)
    for attempt, delay in ((1, 1000), (2, 2000), (3, 3000)):  # doubling, then capped
        before = datetime.now(UTC)
        [report] = work_pending(settings, engine, "worker@test:1:x:abcd")  # a pass does not wait for retries
        after = datetime.now(UTC)
        row = _row(engine, number, later.id)
        retry_at = row.next_attempt_at.replace(tzinfo=UTC) if row.next_attempt_at.tzinfo is None else row.next_attempt_at
        assert (row.status, row.attempts, report.retried) == ("failed_temporary", attempt, 1)
        assert before + timedelta(seconds=delay) <= retry_at <= after + timedelta(seconds=delay)
        with engine.begin() as conn:  # let the retry come due now
            conn.execute(deliveries.update().where(deliveries.c.subscriber_id == later.id)
                         .values(next_attempt_at=NOW))


def test_progress_is_reported_after_every_finished_row(engine, settings, issue, smtp_server):
    add_many(engine, 30)
    calls = []
    report = send_issue(settings, engine, issue, progress=lambda done, total: calls.append((done, total)))
    assert report.sent == 30
    assert calls == [(n, 30) for n in range(1, 31)]


def test_the_progress_bar_shows_done_total_and_rate():
    from io import StringIO

    from rich.console import Console

    from digest.cli.send import _progress_bar

    clock = iter([100.0, 104.0])  # started, then 4 s later
    bar = _progress_bar("issue 7", on=Console(file=StringIO(), width=120), clock=lambda: next(clock))
    with bar as progress:
        progress(200, 1000)
        shown = Console(file=StringIO(), width=120, record=True)
        shown.print(bar.bar.make_tasks_table(bar.bar.tasks))
    text = shown.export_text()
    assert "issue 7" in text and "200/1000" in text and "50 msg/s" in text and "20%" in text


def test_the_progress_bar_shows_one_report_per_redraw_and_always_the_last():
    from io import StringIO

    from rich.console import Console

    from digest.cli.send import _progress_bar

    now = [100.0]
    bar = _progress_bar("issue 7", on=Console(file=StringIO(), width=120), clock=lambda: now[0])

    def completed() -> float:
        return bar.bar.tasks[0].completed

    with bar as progress:
        now[0] = 100.2
        progress(10, 30)
        assert completed() == 10
        now[0] = 100.25  # within the same redraw: not passed on
        progress(11, 30)
        assert completed() == 10
        now[0] = 100.31
        progress(12, 30)
        assert completed() == 12
        now[0] = 100.32  # the last one always is, however soon
        progress(30, 30)
        assert completed() == 30


def test_the_rate_limit_is_shared_out_over_the_connections(engine, tmp_path, store_url, smtp_server, monkeypatch):
    from digest.deliver import smtp as transports

    settings = smtp_settings(tmp_path, store_url, smtp_server.port,
                             smtp={"host": "127.0.0.1", "port": smtp_server.port, "connections": 2, "rate_limit": 40.0})
    number = approved_issue(engine, settings)
    add_many(engine, 20)
    limiters: list[RecordingLimiter] = []

    class RecordingLimiter(transports.RateLimiter):
        """The transports' limiter on a clock of its own that only its sleeps move (no wall time here),
        noting that clock after each wait: the time each message was let through."""

        def __init__(self, rate: float):
            self.now, self.slots = 0.0, []
            super().__init__(rate, clock=lambda: self.now, sleep=self._advance)
            limiters.append(self)

        def _advance(self, seconds: float) -> None:
            self.now += seconds

        def wait(self) -> None:
            super().wait()
            self.slots.append(self.now)

    monkeypatch.setattr(transports, "RateLimiter", RecordingLimiter)
    report = send_issue(settings, engine, number)
    assert report.sent == 20 and len(limiters) == 2  # one per connection (and sending thread)
    assert [1 / limiter.interval for limiter in limiters] == [20.0, 20.0]  # 40 per second over 2 connections
    assert sum(len(limiter.slots) for limiter in limiters) == 20
    for limiter in limiters:
        assert all(b - a >= 0.05 - 1e-9 for a, b in itertools.pairwise(limiter.slots))  # 1/20 s apart


def test_subjects_arrive_in_each_subscribers_language(engine, settings, issue, smtp_server):
    for language in ("en", "fr", "de"):
        add_confirmed(engine, f"{language}@example.net", language=language)
    send_issue(settings, engine, issue)
    subjects = {lang: smtp_server.for_recipient(f"{lang}@example.net")[0]["Subject"] for lang in ("en", "fr", "de")}
    assert subjects == {"en": "Europa Progressiva Foundation digest — 23 November 2026",
                        "fr": "Digest Europa Progressiva Foundation — 23 novembre 2026",
                        "de": "Europa Progressiva Foundation Digest — 23. November 2026"}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_server_refusing_the_sender_stops_the_send_and_fails_nobody(engine, tmp_path, store_url):
    """530 at MAIL FROM: `digest send` stops (exit 1, naming the reply and the settings); every row stays
    queued, nobody failed or bounced. A test send just reports the refusal."""
    from test_transports import authenticator

    server, controller = start_smtp_server(authenticator=authenticator, auth_required=True,
                                           auth_require_tls=False)
    try:
        settings = smtp_settings(tmp_path, store_url, server.port, bounce_threshold=1)
        number = approved_issue(engine, settings)
        add_many(engine, 6)
        config = _config(tmp_path, settings)
        result = CliRunner().invoke(main, ["--config", config, "send", "--issue", str(number)])
        test = CliRunner().invoke(main, ["--config", config, "send", "--issue", str(number), "--test", "ed@example.org"])
    finally:
        controller.stop()
    assert result.exit_code == 1, result.output
    assert "refuses the sender digest@example.org: 530" in result.output
    assert "'delivery.sender'" in result.output and "[delivery.smtp]" in result.output
    counts = ledger_counts(engine, number)
    assert counts["queued"] == 6 and counts["failed_permanent"] == counts["failed_temporary"] == 0
    assert server.received == []
    assert all(get_subscriber(engine, f"reader{i}@example.net").status == SubscriberStatus.CONFIRMED
               for i in range(6))
    with engine.connect() as conn:
        assert conn.execute(select(subscribers.c.bounce_count)).scalars().all() == [0] * 6
    assert test.exit_code == 1 and "test send to ed@example.org: FAILED the server refuses the sender" in test.output
