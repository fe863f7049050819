"""Sending when things go wrong, through a real SMTP server (aiosmtpd on 127.0.0.1): a message the
server hangs up on, a relay refusing everyone, refusals that are or are not bounces, a login failing
for now, links that cannot work, a database error while stopping, a pool of many connections."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from aiosmtpd.smtp import AuthResult
from click.testing import CliRunner
from conftest import make_settings, start_smtp_server
from send_helpers import add_confirmed, add_many, approved_issue, smtp_settings
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from digest.cli import main
from digest.config import ConfigError
from digest.deliver import sender
from digest.deliver.editions import EditionError
from digest.deliver.sender import SendStopped
from digest.models import SubscriberStatus
from digest.pipeline.sending import StoreFailed, send_issue
from digest.store.issues import get_issue
from digest.store.ledger import ledger_counts
from digest.store.schema import deliveries, subscribers
from digest.store.subscribers import get_subscriber

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


@pytest.fixture
def server():
    """A test SMTP server and its controller, whose handler a test may wrap."""
    smtp, controller = start_smtp_server()
    yield smtp, controller
    controller.stop()


def _row(engine, number, subscriber_id):
    with engine.connect() as conn:
        return conn.execute(select(deliveries).where(deliveries.c.issue_number == number,
                                                     deliveries.c.subscriber_id == subscriber_id)).one()


def _bounce_count(engine, subscriber_id):
    with engine.connect() as conn:
        return conn.execute(select(subscribers.c.bounce_count).where(subscribers.c.id == subscriber_id)).scalar()


def _send_within(seconds: float, *args, **kwargs):
    """send_issue in a thread: a run that never ends fails the test instead of hanging it."""
    outcome = {}

    def run() -> None:
        try:
            outcome["report"] = send_issue(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"send_issue did not return within {seconds} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"]


class Wrapped:
    """Wraps the conftest handler; subclasses change RCPT or DATA."""

    def __init__(self, inner):
        self.inner = inner

    async def handle_RCPT(self, *args):
        return await self.inner.handle_RCPT(*args)

    async def handle_DATA(self, server, session, envelope):
        return await self.inner.handle_DATA(server, session, envelope)


class HangUpAtRcpt(Wrapped):
    """Drops the connection instead of answering RCPT for one address (before the message: nothing delivered)."""

    def __init__(self, inner, address):
        super().__init__(inner)
        self.address, self.hang_ups = address, 0

    async def handle_RCPT(self, server, session, envelope, address, options):
        if address == self.address:
            self.hang_ups += 1
            server.transport.abort()
            return "421 never heard"
        return await super().handle_RCPT(server, session, envelope, address, options)


class ReplyAtData(Wrapped):
    """Answers DATA with `reply` for one address."""

    def __init__(self, inner, address, reply):
        super().__init__(inner)
        self.address, self.reply = address, reply

    async def handle_DATA(self, server, session, envelope):
        if self.address in envelope.rcpt_tos:
            return self.reply
        return await super().handle_DATA(server, session, envelope)


# --- a message the server hangs up on ------------------------------------------------------------

def test_a_message_the_server_hangs_up_on_uses_attempts_and_the_send_ends(engine, tmp_path, store_url, server):
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, max_attempts=3)
    number = approved_issue(engine, settings)
    emails = add_many(engine, 6)
    poison = add_confirmed(engine, "poison@example.net")  # the last one left: no success resets anything
    controller.handler = hang_up = HangUpAtRcpt(controller.handler, poison.email)
    report = _send_within(60, settings, engine, number)
    assert (report.sent, report.gave_up, report.status) == (6, 1, "sent")
    assert hang_up.hang_ups == 3 * 2  # each attempt reconnects once: never deferred as an outage
    row = _row(engine, number, poison.id)
    assert row.status == "failed_permanent" and row.attempts == 3
    assert row.last_error.startswith("gave up after 3 attempts") and "connection lost" in row.last_error
    assert sorted(r for _, rcpts, _ in smtp.received for r in rcpts) == sorted(emails)
    assert get_subscriber(engine, poison.id).status == SubscriberStatus.CONFIRMED  # not a bounce


def test_a_message_answered_421_every_time_is_deferred_a_limited_number_of_times(engine, tmp_path, store_url,
                                                                                  server):
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, max_attempts=2, retry_delay=0.01, retry_max_delay=0.01)
    number = approved_issue(engine, settings)
    add_many(engine, 3)
    busy = add_confirmed(engine, "busy@example.net")
    controller.handler = ReplyAtData(controller.handler, busy.email, "421 4.7.0 try again later")
    report = _send_within(60, settings, engine, number)
    assert (report.sent, report.gave_up) == (3, 1)
    row = _row(engine, number, busy.id)
    assert row.status == "failed_permanent" and "421" in row.last_error


# --- refusals: bounces or not, and a relay refusing everyone ---------------------------------------

def test_only_refusals_of_the_address_count_as_bounces(engine, tmp_path, store_url, server):
    smtp, controller = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, bounce_threshold=1)
    number = approved_issue(engine, settings)
    unknown = add_confirmed(engine, "unknown@example.net")
    policy = add_confirmed(engine, "policy@example.net")
    content = add_confirmed(engine, "content@example.net")
    fine = add_confirmed(engine, "fine@example.net")
    smtp.replies[unknown.email] = ["550 5.1.1 no such user"]
    smtp.replies[policy.email] = ["554 5.7.1 Relay access denied"]
    controller.handler = ReplyAtData(controller.handler, content.email, "550 5.1.1 content rejected after DATA")
    report = send_issue(settings, engine, number)
    assert (report.sent, report.failed, report.bounced) == (1, 3, 1)
    assert {_row(engine, number, s.id).status for s in (unknown, policy, content)} == {"failed_permanent"}
    assert get_subscriber(engine, unknown.id).status == SubscriberStatus.BOUNCED
    for kept in (policy, content, fine):
        assert get_subscriber(engine, kept.id).status == SubscriberStatus.CONFIRMED
        assert _bounce_count(engine, kept.id) == 0


def relay_refusing_issue(engine, tmp_path, store_url, smtp, count: int, reply: str, **delivery):
    """Settings (bounce_threshold 1), an approved issue and `count` subscribers the server answers `reply` for."""
    settings = smtp_settings(tmp_path, store_url, smtp.port, bounce_threshold=1, **delivery)
    number = approved_issue(engine, settings)
    emails = add_many(engine, count)
    for email in emails:
        smtp.replies[email] = [reply]
    return settings, number, emails


def test_a_relay_refusing_everyone_stops_the_run_and_fails_nobody(engine, tmp_path, store_url, server):
    smtp, _ = server
    settings, number, emails = relay_refusing_issue(engine, tmp_path, store_url, smtp, 30, "554 5.7.1 <x>: Relay access denied",
                                                    stop_after_refusals=5)
    with pytest.raises(SendStopped, match=r"5 messages in a row were refused.*554 5\.7\.1 <x>: Relay access denied"
                                          r".*delivery\.smtp\.username"):
        send_issue(settings, engine, number)
    counts = ledger_counts(engine, number)
    assert counts["queued"] == 30 and counts["failed_permanent"] == 0
    assert all(_bounce_count(engine, get_subscriber(engine, e).id) == 0 for e in emails)
    smtp.replies.clear()  # the relay settings fixed
    assert send_issue(settings, engine, number).sent == 30


def test_stop_after_refusals_0_switches_the_check_off(engine, tmp_path, store_url, server):
    # More refusals in a row than the default limit (20): each is recorded at once, and the run ends.
    smtp, _ = server
    settings, number, emails = relay_refusing_issue(engine, tmp_path, store_url, smtp, 25, "554 5.7.1 Relay access denied",
                                                    stop_after_refusals=0)
    report = _send_within(60, settings, engine, number)
    assert (report.sent, report.failed, report.bounced, report.status) == (0, 25, 0, "sent")
    counts = ledger_counts(engine, number)
    assert (counts["failed_permanent"], counts["queued"]) == (25, 0)
    assert all(_bounce_count(engine, get_subscriber(engine, e).id) == 0 for e in emails)  # a policy refusal


def test_refusals_in_a_row_below_the_limit_are_recorded_once_the_run_ends(engine, tmp_path, store_url, server):
    smtp, _ = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, stop_after_refusals=5, bounce_threshold=1)
    number = approved_issue(engine, settings)
    fine = add_many(engine, 3)
    gone = [add_confirmed(engine, f"gone{i}@example.net") for i in range(4)]  # the last rows: no success after
    for subscriber in gone:
        # Bare: an ambiguous refusal, held back in case the server refuses everyone (5.1.1 is recorded at once).
        smtp.replies[subscriber.email] = ["550 Requested action not taken: mailbox unavailable"]
    report = send_issue(settings, engine, number)
    assert (report.sent, report.failed, report.bounced, report.status) == (3, 4, 4, "sent")
    assert all(get_subscriber(engine, s.id).status == SubscriberStatus.BOUNCED for s in gone)
    assert len(smtp.received) == len(fine)


def test_refusals_naming_the_address_are_recorded_at_once_and_never_stop_the_run(engine, tmp_path, store_url,
                                                                                server):
    # A list that starts with dead addresses: every run used to stop at the same rows, blaming the relay.
    smtp, _ = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, stop_after_refusals=5, bounce_threshold=1,
                             smtp={"host": "127.0.0.1", "port": smtp.port, "connections": 4, "timeout": 10.0})
    number = approved_issue(engine, settings)
    gone = [add_confirmed(engine, f"gone{i}@example.net") for i in range(40)]
    for subscriber in gone:
        smtp.replies[subscriber.email] = ["550 5.1.1 no such user"]
    fine = add_many(engine, 10)
    report = _send_within(60, settings, engine, number)
    assert (report.sent, report.failed, report.bounced, report.status) == (10, 40, 40, "sent")
    counts = ledger_counts(engine, number)
    assert (counts["sent"], counts["failed_permanent"], counts["queued"]) == (10, 40, 0)
    assert all(get_subscriber(engine, s.id).status == SubscriberStatus.BOUNCED for s in gone)
    assert sorted(r for _, rcpts, _ in smtp.received for r in rcpts) == sorted(fine)


def test_a_lone_refusal_with_another_enhanced_code_is_no_bounce(engine, tmp_path, store_url, server):
    # 5.4.1 says nothing about the address: the enhanced code decides, not the bare 550 in front of it.
    smtp, _ = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, bounce_threshold=1)
    number = approved_issue(engine, settings)
    before = add_many(engine, 2, prefix="before")
    denied = add_confirmed(engine, "denied@example.net")
    after = add_many(engine, 2, prefix="after")
    smtp.replies[denied.email] = ["550 5.4.1 Recipient address rejected: Access denied"]
    report = send_issue(settings, engine, number)
    assert (report.sent, report.failed, report.bounced, report.status) == (4, 1, 0, "sent")
    row = _row(engine, number, denied.id)
    assert row.status == "failed_permanent" and "5.4.1" in row.last_error
    assert get_subscriber(engine, denied.id).status == SubscriberStatus.CONFIRMED
    assert _bounce_count(engine, denied.id) == 0
    assert sorted(r for _, rcpts, _ in smtp.received for r in rcpts) == sorted(before + after)


@pytest.mark.parametrize("reply", ["550 Requested action not taken: mailbox unavailable",
                                   "550 5.4.1 Recipient address rejected: Access denied"])
def test_refusals_that_may_be_the_servers_still_stop_the_run(engine, tmp_path, store_url, server, reply):
    # A bare 550, or an enhanced code that is not 5.1/5.2 (Exchange Online refusing a relay says 5.4.1).
    smtp, _ = server
    settings = smtp_settings(tmp_path, store_url, smtp.port, stop_after_refusals=5, bounce_threshold=1)
    number = approved_issue(engine, settings)
    emails = add_many(engine, 12)
    for email in emails:
        smtp.replies[email] = [reply]
    with pytest.raises(SendStopped, match="5 messages in a row were refused"):
        send_issue(settings, engine, number)
    assert ledger_counts(engine, number)["queued"] == 12
    assert all(_bounce_count(engine, get_subscriber(engine, e).id) == 0 for e in emails)


def test_digest_send_exits_1_naming_the_relay_refusal(engine, tmp_path, store_url, server):
    smtp, _ = server
    settings = smtp_settings(tmp_path, store_url, smtp.port)
    number = approved_issue(engine, settings)
    for email in add_many(engine, 25):  # more than the default stop_after_refusals (20)
        smtp.replies[email] = ["554 5.7.1 Relay access denied"]
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n[web]\nbase_url = "https://digest.example.org"\n'
                      f'[delivery]\ntransport = "smtp"\n[delivery.smtp]\nport = {smtp.port}\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "send", "--issue", str(number)])
    assert result.exit_code == 1, result.output
    assert "20 messages in a row were refused" in result.output and "Relay access denied" in result.output
    assert ledger_counts(engine, number)["queued"] == 25


# --- message builds ------------------------------------------------------------------------------

def test_a_base_url_no_header_can_carry_stops_sending_and_fails_nobody(engine, tmp_path, store_url, server):
    smtp, _ = server
    settings = smtp_settings(tmp_path, store_url, smtp.port)
    # Past config validation (which refuses it at load): the edition's own check stops the send.
    settings = replace(settings, web=replace(settings.web, base_url="https://example.org/news letter"))
    number = approved_issue(engine, settings)
    add_many(engine, 5)
    with pytest.raises(EditionError, match=r"cannot build the en edition of issue 1 .*/news letter/unsubscribe/"):
        send_issue(settings, engine, number)
    assert ledger_counts(engine, number)["queued"] == 5 and smtp.received == []
    assert get_issue(engine, number).status.value == "sending"  # not `sent`


def test_a_bad_base_url_is_refused_at_load_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"'web\.base_url' is 'https://example.org/news letter'.*%20"):
        _settings_with_base_url(tmp_path, "https://example.org/news letter")
    for bad in ("example.org/digest", "ftp://example.org", "https://example.org/?list=1", "https://" + "a" * 250):
        with pytest.raises(ConfigError, match=r"'web\.base_url'"):
            _settings_with_base_url(tmp_path, bad)
    assert _settings_with_base_url(tmp_path, "https://example.org/news%20letter/").web.base_url


def _settings_with_base_url(tmp_path, base_url):
    return make_settings(tmp_path, web={"base_url": base_url})


# --- login, links, connections -------------------------------------------------------------------

def test_a_login_failing_for_now_mid_run_is_retried(engine, tmp_path, store_url, monkeypatch):
    sessions = []

    def second_connection_busy(server, session, envelope, mechanism, auth_data):
        if session not in sessions:
            sessions.append(session)
        if len(sessions) > 1 and session is sessions[1]:
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        return AuthResult(success=auth_data.password == b"pw", handled=False)

    smtp, controller = start_smtp_server(authenticator=second_connection_busy, auth_required=True,
                                         auth_require_tls=False)
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "pw")
    try:
        settings = smtp_settings(tmp_path, store_url, smtp.port,
                                 smtp={"host": "127.0.0.1", "port": smtp.port, "connections": 2, "timeout": 10.0,
                                       "username": "digest", "password_env": "TEST_SMTP_PASSWORD"})
        number = approved_issue(engine, settings)
        emails = add_many(engine, 10)
        report = send_issue(settings, engine, number)  # no TransportError: the settings are right
    finally:
        controller.stop()
    assert (report.sent, report.status) == (10, "sent") and len(sessions) >= 3
    assert sorted(r for _, rcpts, _ in smtp.received for r in rcpts) == sorted(emails)


def test_smtp_refuses_http_links_outside_loopback_before_anything_is_queued(engine, tmp_path, store_url,
                                                                          smtp_server):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port)
    number = approved_issue(engine, settings)
    add_many(engine, 2)
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n[web]\nbase_url = "http://digest.example.org"\n'
                      f'[delivery]\ntransport = "smtp"\n[delivery.smtp]\nport = {smtp_server.port}\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "send", "--issue", str(number)])
    assert result.exit_code == 2 and "web.base_url" in result.output and "https" in result.output
    assert sum(ledger_counts(engine, number).values()) == 0 and smtp_server.received == []
    # Local testing: any loopback name, written as the admin's cookies take it (trailing dot too).
    loopback = make_settings(tmp_path, store_url, web={"base_url": "http://localhost.:8080"},
                             delivery={"transport": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp_server.port}})
    assert send_issue(loopback, engine, number).sent == 2


def test_the_outbox_may_use_http_links(engine, tmp_path, store_url):
    settings = make_settings(tmp_path, store_url, web={"base_url": "http://news.example.org"})
    number = approved_issue(engine, settings)
    add_many(engine, 2)
    assert send_issue(settings, engine, number).sent == 2
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 2


def test_many_connections_share_a_pool_big_enough(engine, tmp_path, store_url, smtp_server):
    # Each sending thread holds a database connection for the run; SQLAlchemy's default pool
    # (5 + 10 overflow) would time out after 30 s with 16 of them.
    settings = smtp_settings(tmp_path, store_url, smtp_server.port,
                             smtp={"host": "127.0.0.1", "port": smtp_server.port, "connections": 16, "timeout": 10.0})
    number = approved_issue(engine, settings)
    add_many(engine, 64)
    report = _send_within(25, settings, engine, number)
    assert report.sent == 64 and len(smtp_server.received) == 64


@pytest.mark.parametrize("connections", [0, 65])
def test_smtp_connections_are_bounded(tmp_path, connections):
    with pytest.raises(ConfigError, match=rf"'delivery\.smtp\.connections' is {connections}"):
        smtp_settings(tmp_path, f"sqlite:///{tmp_path / 'x.db'}", 25,
                      smtp={"host": "127.0.0.1", "port": 25, "connections": connections})


# --- stopping whatever happens -------------------------------------------------------------------

def test_a_database_error_while_stopping_still_disposes_of_the_run_engine(engine, tmp_path, store_url, smtp_server,
                                                                          monkeypatch):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port)
    number = approved_issue(engine, settings)
    add_many(engine, 4)
    disposed, real_relaxed, real_requeue = [], sender.relaxed_durability, sender.requeue_orphans

    def recording_relaxed(engine_, **kwargs):
        class Recorded:
            def __enter__(self):
                self.context = real_relaxed(engine_, **kwargs)
                return self.context.__enter__()

            def __exit__(self, *exc):
                disposed.append(True)
                return self.context.__exit__(*exc)

        return Recorded()

    calls = []

    def requeue_failing_when_stopping(engine_, number_, is_orphan):
        calls.append(number_)
        if len(calls) == 2:  # the first call starts the run; the second is _stop_threads'
            raise OperationalError("UPDATE deliveries", {}, Exception("database is locked"))
        return real_requeue(engine_, number_, is_orphan)

    monkeypatch.setattr(sender, "relaxed_durability", recording_relaxed)
    monkeypatch.setattr(sender, "requeue_orphans", requeue_failing_when_stopping)
    with pytest.raises(StoreFailed, match="database is locked"):
        send_issue(settings, engine, number)
    assert disposed == [True]
