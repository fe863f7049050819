"""Transports against a real SMTP server (aiosmtpd on loopback), the outbox folder and memory."""

from __future__ import annotations

import os
import smtplib
import ssl
from dataclasses import replace
from email import message_from_bytes, policy

import dkim
import pytest
import trustme
from aiosmtpd.smtp import AuthResult
from conftest import free_port, make_settings, start_smtp_server
from test_message import TEXT, dns_stub, make_edition, rsa_key, values  # noqa: F401 - rsa_key is a fixture

from digest.deliver.message import MessageTemplate, build_note
from digest.deliver.outbox import MemoryTransport, OutboxTransport, outbox_filename, transport_from_settings
from digest.deliver.smtp import RateLimiter, SmtpTransport, dot_stuffed, recipient_refusal
from digest.deliver.transport import OutgoingMessage, Transport, TransportError

# The AUTH test server runs without TLS on loopback on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def messages(settings, count: int, first: int = 0) -> list[OutgoingMessage]:
    template = MessageTemplate.from_settings(settings, make_edition(subject="Wöchentlich – n° 12"),
                                             issue_values={"view_url": "https://www.example.org/a/12"})
    return [template.build_for(f"s{i}@example.com", f"Zoë {i}", values(i, name=f"Zoë {i}"))
            for i in range(first, first + count)]


def smtp_settings(tmp_path, port: int, **smtp):
    return make_settings(tmp_path, delivery={"transport": "smtp",
                                             "smtp": {"host": "127.0.0.1", "port": port, "timeout": 10.0, **smtp}})


@pytest.fixture
def transport_for(tmp_path):
    """Make SMTP transports for a port, closed at the end of the test."""
    made = []

    def make(port: int, **smtp) -> SmtpTransport:
        transport = transport_from_settings(smtp_settings(tmp_path, port, **smtp))
        made.append(transport)
        return transport

    yield make
    for transport in made:
        transport.close()


# --- SMTP -----------------------------------------------------------------------------------------

def test_smtp_delivers_messages_that_parse_cleanly(tmp_path, smtp_server, transport_for):
    batch = messages(make_settings(tmp_path), 3)
    results = transport_for(smtp_server.port, connections=2).send_messages(batch)
    assert [(r.message_id, r.ok, r.code) for r in results] == [(m.message_id, True, 250) for m in batch]
    assert sorted(rcpts[0] for _, rcpts, _ in smtp_server.received) == ["s0@example.com", "s1@example.com",
                                                                      "s2@example.com"]
    assert {mail_from for mail_from, _, _ in smtp_server.received} == {"digest@example.org"}
    for received in smtp_server.messages():
        assert all(not part.defects for part in received.walk())
        assert received["Subject"] == "Wöchentlich – n° 12"
        assert received["To"].addresses[0].display_name.startswith("Zoë ")
        assert received["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert "Hello Zoë" in received.get_body(("plain",)).get_content()


def test_smtp_lines_starting_with_a_dot_arrive_intact(tmp_path, smtp_server, transport_for):
    text = ".\n..two dots\n.hidden line\nHello [[DIGEST:name]]\n.\n" + TEXT
    template = MessageTemplate.from_settings(make_settings(tmp_path), make_edition(text=text),
                                             issue_values={"view_url": "https://www.example.org/a/12"})
    sent = template.build_for("s0@example.com", "Zoë", values(0, name="Zoë"))
    assert b"\r\n.hidden line" in sent.data and b"\r\n..two dots" in sent.data  # what needs stuffing
    (result,) = transport_for(smtp_server.port).send_messages([sent])
    assert result.ok
    (received,) = smtp_server.received
    assert received[2].replace(b"\r\n", b"\n") == sent.data.replace(b"\r\n", b"\n")
    body = smtp_server.messages()[0].get_body(("plain",)).get_content()
    assert body.replace("\r\n", "\n").startswith(".\n..two dots\n.hidden line\nHello Zoë\n.\n")


@pytest.mark.parametrize("data", [b"", b".", b"a", b".\r\n", b"a\r\n.\r\nb", b"..x\r\n\r\n.", b"x\n.y\r\n",
                                  b"\r\n.\r\n.\r\n", b"no break at end."])
def test_dot_stuffing_is_what_smtplib_sends(data):
    stuffed = smtplib._quote_periods(data)
    stuffed += b"" if stuffed.endswith(b"\r\n") else b"\r\n"
    assert dot_stuffed(data) == stuffed + b".\r\n"


def test_smtp_temporary_and_permanent_refusals(tmp_path, smtp_server, transport_for):
    smtp_server.replies["s0@example.com"] = ["451 4.3.0 try later", None]
    smtp_server.replies["s1@example.com"] = ["550 5.1.1 no such user"]
    smtp_server.replies["s2@example.com"] = ["554 5.7.1 Relay access denied"]
    transport = transport_for(smtp_server.port, connections=1)
    batch = messages(make_settings(tmp_path), 4)
    later, gone, relay, fine = transport.send_messages(batch)
    assert (later.ok, later.permanent, later.code, later.unreachable) == (False, False, 451, False)
    assert "try later" in later.error
    assert (gone.ok, gone.permanent, gone.code, gone.bounce) == (False, True, 550, True) and "no such user" in gone.error
    # The relay refusing is about the sender, never a bounce for the subscriber.
    assert (relay.ok, relay.permanent, relay.code, relay.bounce) == (False, True, 554, False)
    assert fine.ok
    (retry,) = transport.send_messages(batch[:1])
    assert retry.ok
    assert sorted(r[0] for _, r, _ in smtp_server.received) == ["s0@example.com", "s3@example.com"]


@pytest.mark.parametrize("code, text, bounce, named", [
    (550, "5.1.1 <a@example.net>: Recipient address rejected: User unknown", True, True),
    (550, "5.1.10 RESOLVER.ADR.RecipientNotFound", True, True),
    (552, "5.2.2 mailbox full", True, True),
    (553, "sorry, that domain isn't in my list of allowed rcpthosts", True, False),
    (550, "no such user here", True, False),
    (551, "User not local", True, False),
    (554, "5.7.1 Relay access denied", False, False),
    (550, "5.7.1 Relaying denied", False, False),
    (550, "5.7.26 Unauthenticated email is not accepted (DMARC)", False, False),
    # Another enhanced code decides too: not the address (Exchange Online refusing a relay says 5.4.1).
    (550, "5.4.1 Recipient address rejected: Access denied", False, False),
    (553, "5.3.0 Other or undefined mail system status", False, False),
    (554, "Transaction failed", False, False),
    (552, "message size exceeds fixed limit", False, False),
    (450, "4.1.1 mailbox unavailable", False, False),
    (550, b"5.1.1 bytes, as smtplib gives them", True, True),
])
def test_only_refusals_of_the_address_itself_are_bounces(code, text, bounce, named):
    # (bounce, names the address): only a 5.1.x/5.2.x code names it; a bare 550/551/553 is an ambiguous bounce.
    assert recipient_refusal(code, text) == (bounce, named)


def test_smtp_reconnects_after_the_server_closes_the_connection(tmp_path, smtp_server, transport_for):
    # 421 closes the connection (smtplib drops it): the message goes again on a fresh one.
    smtp_server.replies["s0@example.com"] = ["421 4.3.2 shutting down"]
    smtp_server.replies["s1@example.com"] = ["421 4.3.2 shutting down", "421 4.3.2 still shutting down"]
    transport = transport_for(smtp_server.port, connections=1)
    again, closed, after = transport.send_messages(messages(make_settings(tmp_path), 3))
    assert again.ok
    # 421 twice: the server refuses service for now, whatever the message (the send loop pauses).
    assert (closed.ok, closed.permanent, closed.code, closed.unreachable) == (False, False, 421, True)
    assert after.ok
    assert [r[0] for _, r, _ in smtp_server.received] == ["s0@example.com", "s2@example.com"]


class HangUp:
    """Wraps the conftest handler: drops the connection for one address instead of answering its RCPT
    (before the message: nothing delivered) or its message's final "." (after it: possibly delivered)."""

    def __init__(self, inner, address, at: str):
        self.inner, self.address, self.at, self.hang_ups = inner, address, at, 0

    async def handle_RCPT(self, server, session, envelope, address, options):
        if self.at == "RCPT" and address == self.address:
            self.hang_ups += 1
            server.transport.abort()
            return "421 never heard"
        return await self.inner.handle_RCPT(server, session, envelope, address, options)

    async def handle_DATA(self, server, session, envelope):
        if self.at == "DATA" and self.address in envelope.rcpt_tos:
            self.hang_ups += 1
            server.transport.abort()
            return "421 never heard"
        return await self.inner.handle_DATA(server, session, envelope)


def test_smtp_a_message_the_server_hangs_up_on_is_its_own_failure(tmp_path, transport_for):
    server, controller = start_smtp_server()
    controller.handler = hang_up = HangUp(controller.handler, "s1@example.com", at="RCPT")
    try:
        transport = transport_for(server.port, connections=1)
        before, poison, after = transport.send_messages(messages(make_settings(tmp_path), 3))
        assert before.ok and after.ok
        # Reconnected and tried once more; the server was reachable both times: not an outage.
        assert (poison.ok, poison.permanent, poison.code, poison.unreachable) == (False, False, None, False)
        assert "connection lost" in poison.error and hang_up.hang_ups == 2
        assert not poison.possibly_delivered
    finally:
        controller.stop()


def test_smtp_server_down_gives_temporary_failures_then_recovers(tmp_path, transport_for):
    server, controller = start_smtp_server()
    transport = transport_for(server.port, connections=2)
    batch = messages(make_settings(tmp_path), 4)
    assert all(r.ok for r in transport.send_messages(batch[:2]))
    controller.stop()
    down = transport.send_messages(batch[2:])
    assert [(r.ok, r.permanent) for r in down] == [(False, False)] * 2
    assert all("connect" in r.error for r in down)
    server2, controller2 = start_smtp_server(port=server.port)
    try:
        assert all(r.ok for r in transport.send_messages(batch[2:]))
        assert len(server2.received) == 2
    finally:
        controller2.stop()


def test_smtp_unreachable_server_is_not_an_exception(tmp_path, transport_for):
    results = transport_for(free_port()).send_messages(messages(make_settings(tmp_path), 3))
    assert [(r.ok, r.permanent) for r in results] == [(False, False)] * 3
    assert "cannot connect to 127.0.0.1:" in results[0].error and "ConnectionRefusedError" in results[0].error


def test_smtp_implicit_tls_against_a_plain_server_says_why(tmp_path, smtp_server, transport_for):
    (result,) = transport_for(smtp_server.port, security="tls").send_messages(messages(make_settings(tmp_path), 1))
    assert not result.ok and not result.permanent and "SSL" in result.error
    assert smtp_server.received == []


class PeerRecorder:
    """Wraps the conftest handler to note which client connection carried each message."""

    def __init__(self, inner):
        self.inner, self.peers = inner, []

    async def handle_RCPT(self, *args):
        return await self.inner.handle_RCPT(*args)

    async def handle_DATA(self, server, session, envelope):
        self.peers.append(session.peer)
        return await self.inner.handle_DATA(server, session, envelope)


class DataRefuser(PeerRecorder):
    """Answers DATA with the next canned reply (then accepts)."""

    def __init__(self, inner, replies):
        super().__init__(inner)
        self.replies = list(replies)

    async def handle_DATA(self, server, session, envelope):
        if self.replies:
            return self.replies.pop(0)
        return await super().handle_DATA(server, session, envelope)


def test_smtp_refused_data_is_permanent_for_5xx_and_temporary_for_4xx(tmp_path, transport_for):
    server, controller = start_smtp_server()
    controller.handler = DataRefuser(controller.handler, ["554 5.7.1 message refused", "452 4.3.1 full"])
    try:
        refused, full, fine = transport_for(server.port, connections=1).send_messages(
            messages(make_settings(tmp_path), 3))
        assert (refused.ok, refused.permanent, refused.code, refused.bounce) == (False, True, 554, False)
        assert (full.ok, full.permanent, full.code) == (False, False, 452)
        assert fine.ok and len(server.received) == 1
    finally:
        controller.stop()


def test_smtp_starttls_required_but_not_offered_is_a_clear_error(tmp_path, smtp_server, transport_for):
    transport = transport_for(smtp_server.port, security="starttls")
    with pytest.raises(TransportError, match="STARTTLS.*delivery.smtp.security"):
        transport.send_messages(messages(make_settings(tmp_path), 1))


def test_smtp_uses_a_pool_of_persistent_parallel_connections(tmp_path, transport_for):
    server, controller = start_smtp_server()
    recorder = controller.handler = PeerRecorder(controller.handler)
    try:
        transport = transport_for(server.port, connections=4)
        first = messages(make_settings(tmp_path), 40)
        second = messages(make_settings(tmp_path), 40, first=40)
        for batch in (first, second):
            results = transport.send_messages(batch)
            assert [r.message_id for r in results] == [m.message_id for m in batch]
            assert all(r.ok for r in results)
        assert len(server.received) == 80
        assert len({rcpts[0] for _, rcpts, _ in server.received}) == 80
        assert 1 < len(set(recorder.peers)) <= 4
    finally:
        controller.stop()


def test_rate_limiter_spaces_slots_evenly():
    now, slept = [100.0], []

    def sleep(seconds: float) -> None:
        slept.append(round(seconds, 6))

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(3):  # at once, at 100.25 and at 100.5: the waits until each slot
        limiter.wait()
    assert slept == [0.25, 0.5]
    now[0] = 110.0  # idle time is not saved up
    limiter.wait()
    assert slept == [0.25, 0.5]


def test_smtp_with_rate_limit_still_delivers(tmp_path, smtp_server, transport_for):
    results = transport_for(smtp_server.port, rate_limit=200.0).send_messages(messages(make_settings(tmp_path), 5))
    assert all(r.ok for r in results) and len(smtp_server.received) == 5


# --- TLS and AUTH ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def test_ca():
    return trustme.CA()


def tls_server(test_ca, implicit: bool, **options):
    cert = test_ca.issue_cert("127.0.0.1", "localhost")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    if implicit:
        return start_smtp_server(ssl_context=context, **options)
    return start_smtp_server(tls_context=context, require_starttls=True, **options)


@pytest.mark.parametrize("security, implicit", [("starttls", False), ("tls", True)])
def test_smtp_tls_with_a_trusted_test_ca(tmp_path, test_ca, transport_for, security, implicit):
    ca_file = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(ca_file))
    server, controller = tls_server(test_ca, implicit)
    try:
        transport = transport_for(server.port, security=security, ca_file="ca.pem")
        assert all(r.ok for r in transport.send_messages(messages(make_settings(tmp_path), 2)))
        assert len(server.received) == 2
    finally:
        controller.stop()


@pytest.mark.parametrize("security, implicit", [("starttls", False), ("tls", True)])
def test_smtp_tls_verifies_certificates_by_default(tmp_path, test_ca, transport_for, security, implicit):
    server, controller = tls_server(test_ca, implicit)
    try:
        transport = transport_for(server.port, security=security)
        with pytest.raises(TransportError, match="certificate not trusted.*ca_file"):
            transport.send_messages(messages(make_settings(tmp_path), 1))
        assert server.received == []
    finally:
        controller.stop()


def test_smtp_bad_ca_file_is_a_clear_error(tmp_path):
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(TransportError, match="ca_file"):
        transport_from_settings(smtp_settings(tmp_path, 25, security="starttls", ca_file="ca.pem"))


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"digest" and auth_data.password == b"s3cret p@ss:word"
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def auth_server():
    server, controller = start_smtp_server(authenticator=authenticator, auth_required=True,
                                           auth_require_tls=False)
    yield server
    controller.stop()


def test_smtp_auth_with_password_from_environment(tmp_path, auth_server, transport_for, monkeypatch):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret p@ss:word")
    transport = transport_for(auth_server.port, username="digest", password_env="TEST_SMTP_PASSWORD")
    assert all(r.ok for r in transport.send_messages(messages(make_settings(tmp_path), 2)))
    assert len(auth_server.received) == 2


def test_smtp_auth_failing_for_now_is_temporary(tmp_path, transport_for, monkeypatch):
    sessions = []

    def busy_then_fine(server, session, envelope, mechanism, auth_data):
        # Every mechanism smtplib tries on the first connection gets 454; later connections log in.
        if not sessions:
            sessions.append(session)
        if session is sessions[0]:
            return AuthResult(success=False, handled=False, message="454 4.7.0 Temporary authentication failure")
        return authenticator(server, session, envelope, mechanism, auth_data)

    server, controller = start_smtp_server(authenticator=busy_then_fine, auth_required=True, auth_require_tls=False)
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret p@ss:word")
    try:
        transport = transport_for(server.port, username="digest", password_env="TEST_SMTP_PASSWORD")
        batch = messages(make_settings(tmp_path), 2)
        (later,) = transport.send_messages(batch[:1])  # no TransportError: nothing is wrong with the settings
        assert (later.ok, later.permanent, later.unreachable) == (False, False, True)
        assert "454" in later.error
        assert all(r.ok for r in transport.send_messages(batch))
        assert len(server.received) == 2
    finally:
        controller.stop()


def test_smtp_auth_refused_is_a_clear_error(tmp_path, auth_server, transport_for, monkeypatch):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "wrong")
    transport = transport_for(auth_server.port, username="digest", password_env="TEST_SMTP_PASSWORD")
    with pytest.raises(TransportError, match="login as 'digest' refused.*TEST_SMTP_PASSWORD"):
        transport.send_messages(messages(make_settings(tmp_path), 1))
    assert auth_server.received == []


def test_smtp_missing_password_variable_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TEST_SMTP_PASSWORD", raising=False)
    settings = smtp_settings(tmp_path, 25, username="digest", password_env="TEST_SMTP_PASSWORD")
    with pytest.raises(TransportError, match=r"\$TEST_SMTP_PASSWORD is empty"):
        transport_from_settings(settings)


def test_smtp_non_ascii_password_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "päss")
    settings = smtp_settings(tmp_path, 25, username="digest", password_env="TEST_SMTP_PASSWORD")
    with pytest.raises(TransportError, match="non-ASCII"):
        transport_from_settings(settings)


def test_smtp_sender_refused_for_good_is_a_setting_not_the_recipients_fault(tmp_path, auth_server, transport_for):
    # 530 at MAIL FROM (a login is required): a result for each message, never an exception and
    # never a bounce; the send loop (outcomes.Recorder) stops the run on it.
    results = transport_for(auth_server.port, connections=2).send_messages(messages(make_settings(tmp_path), 3))
    assert [(r.ok, r.permanent, r.code, r.sender_refused, r.bounce) for r in results] == [(False, True, 530, True, False)] * 3
    assert results[0].error.startswith("the server refuses the sender digest@example.org: 530 5.7.0")
    assert auth_server.received == []


class SizeLimited:
    """The test server's handler behind a size limit: MAIL FROM … SIZE=n above `limit` gets 552."""

    def __init__(self, inner, limit: int):
        self.inner, self.limit, self.sessions = inner, limit, []

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if not any(s is session for s in self.sessions):
            self.sessions.append(session)
        if any(o.upper().startswith("SIZE=") and int(o[5:]) > self.limit for o in mail_options):
            return "552 5.3.4 Message size exceeds fixed maximum message size"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, *args):
        return await self.inner.handle_RCPT(*args)

    async def handle_DATA(self, *args):
        return await self.inner.handle_DATA(*args)


def test_a_size_refusal_mid_batch_loses_no_result_and_keeps_the_connection(tmp_path, transport_for):
    server, controller = start_smtp_server()
    try:
        small = messages(make_settings(tmp_path), 3)
        big = replace(small[1], data=small[1].data + b"x" * 70 * 200)
        controller.handler = limited = SizeLimited(controller.handler, limit=len(small[0].data) + 1000)
        first, refused, last = transport_for(server.port, connections=1).send_messages([small[0], big, small[2]])
    finally:
        controller.stop()
    assert first.ok and last.ok
    # The message's size, not the sender: never a setting to fix, never a bounce.
    assert (refused.ok, refused.code, refused.too_large, refused.sender_refused, refused.bounce) == (False, 552, True,
                                                                                                     False, False)
    assert refused.size == len(big.data) and refused.size_limit == 50 * 1024 * 1024  # what its EHLO SIZE says
    assert "552 5.3.4 Message size exceeds" in refused.error and "552 552" not in refused.error
    assert sorted(r[0] for _, r, _ in server.received) == ["s0@example.com", "s2@example.com"]
    assert len(limited.sessions) == 1  # the same connection went on after the refusal


def test_dkim_signed_message_verifies_after_smtp(tmp_path, smtp_server, transport_for, rsa_key):  # noqa: F811
    private, public = rsa_key
    (tmp_path / "dkim.pem").write_bytes(private)
    settings = make_settings(tmp_path, delivery={"dkim": {"selector": "mail2026", "key_file": "dkim.pem"}})
    assert transport_for(smtp_server.port).send_messages(messages(settings, 1))[0].ok
    (_, _, data) = smtp_server.received[0]
    assert dkim.verify(data, dnsfunc=dns_stub(public))
    assert not dkim.verify(data.replace(b"Subject: =?utf-8?b?V", b"Subject: =?utf-8?b?X", 1),
                           dnsfunc=dns_stub(public))


# --- outbox and memory ----------------------------------------------------------------------------

def test_outbox_writes_one_complete_eml_per_message(tmp_path):
    settings = make_settings(tmp_path)
    transport = transport_from_settings(settings)
    assert isinstance(transport, OutboxTransport) and transport.directory == tmp_path / "outbox"
    batch = messages(settings, 5)
    assert all(r.ok for r in transport.send_messages(batch))
    assert all(r.ok for r in transport.send_messages(batch[:1]))  # a resend is a new file
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert len(files) == 6 and all(name.endswith(".eml") for name in files)
    contents = [(tmp_path / "outbox" / name).read_bytes() for name in files]
    assert contents == [m.data for m in batch] + [batch[0].data]  # names sort by time of writing
    for data in contents:
        assert not message_from_bytes(data, policy=policy.default).defects


def test_outbox_leaves_no_partial_file_when_a_write_fails(tmp_path, monkeypatch):
    transport = OutboxTransport(tmp_path / "outbox")
    batch = messages(make_settings(tmp_path), 2)

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    results = transport.send_messages(batch)
    assert [(r.ok, r.permanent) for r in results] == [(False, False)] * 2
    assert "No space left on device" in results[0].error
    assert list((tmp_path / "outbox").iterdir()) == []


def test_outbox_folder_that_cannot_be_created(tmp_path):
    (tmp_path / "file").write_text("x")
    results = OutboxTransport(tmp_path / "file" / "outbox").send_messages(messages(make_settings(tmp_path), 1))
    assert not results[0].ok and "cannot create outbox folder" in results[0].error


def test_outbox_filenames_sort_by_time_and_differ_by_message():
    from datetime import UTC, datetime
    early, late = datetime(2026, 11, 23, 9, 0, 0, 1, tzinfo=UTC), datetime(2026, 11, 23, 9, 0, 0, 2, tzinfo=UTC)
    assert outbox_filename("<b@x>", early) < outbox_filename("<a@x>", late)
    assert outbox_filename("<a@x>", early) != outbox_filename("<b@x>", early)
    assert outbox_filename("<a@x>", early).startswith("20261123T090000.000001Z-")


def test_memory_transport_keeps_messages_and_scripted_failures(tmp_path):
    transport = MemoryTransport()
    transport.replies["s1@example.com"] = [(451, "4.3.0 later"), None]
    transport.replies["s2@example.com"] = [(550, "5.1.1 unknown")]
    batch = messages(make_settings(tmp_path), 3)
    ok, later, gone = transport.send_messages(batch)
    assert ok.ok and (later.permanent, later.code) == (False, 451) and (gone.permanent, gone.code) == (True, 550)
    assert transport.send_messages(batch[1:2])[0].ok
    assert [m.recipients for m in transport.outbox] == [("s0@example.com",), ("s1@example.com",)]
    transport.close()
    assert transport.closed


# --- transports are context managers --------------------------------------------------------------------

def test_every_transport_closes_at_the_end_of_a_with_block(tmp_path, smtp_server):
    settings = make_settings(tmp_path)
    note = build_note(settings, to="ed@example.org", subject="S", text="T\n")  # a note: any message will do
    with pytest.raises(RuntimeError), MemoryTransport() as memory:
        memory.send_messages([note])
        raise RuntimeError("closed even when the block fails")
    assert memory.closed and len(memory.outbox) == 1
    with OutboxTransport(tmp_path / "outbox") as outbox:
        assert outbox.send_messages([note])[0].ok
    with transport_from_settings(smtp_settings(tmp_path, smtp_server.port, connections=2)) as smtp:
        assert [r.ok for r in smtp.send_messages([note, note])] == [True, True]
    assert smtp._idle.empty()  # every pooled connection quit
    with pytest.raises(RuntimeError):  # and its worker threads stopped
        smtp._pool.submit(print)
    assert all(Transport in type(t).__mro__ for t in (memory, outbox, smtp))  # where `with` comes from

