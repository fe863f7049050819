"""One SMTP transaction against a real server (aiosmtpd on loopback): the wait for the final reply,
size limits before and after DATA, the EHLO name, and PIPELINING (RFC 2920) with its refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest
from conftest import make_settings, start_smtp_server
from send_helpers import Offers, SlowAck, count_reads, size_limit
from test_transports import HangUp, messages, smtp_settings

from digest.config import ConfigError
from digest.deliver.outbox import transport_from_settings


@pytest.fixture
def transport_for(tmp_path):
    """Make SMTP transports for a port, closed at the end of the test."""
    made = []

    def make(port: int, **smtp):
        made.append(transport_from_settings(smtp_settings(tmp_path, port, **smtp)))
        return made[-1]

    yield make
    for transport in made:
        transport.close()

@pytest.fixture
def sink():
    """A test SMTP server whose handler and connections a test changes (send_helpers' wrappers)."""
    server, controller = start_smtp_server()
    yield server, controller
    controller.stop()


def test_smtp_waits_for_a_slow_final_reply_and_sends_once(tmp_path, sink, transport_for):
    # The server takes longer to confirm the message than one command may take (timeout): RFC 5321
    # gives the final "." 10 minutes. Treated as a lost connection, it was sent again at once.
    server, controller = sink
    controller.handler = SlowAck(controller.handler, delay=1.0)
    first, second = transport_for(server.port, connections=1, timeout=0.3).send_messages(
        messages(make_settings(tmp_path), 2))
    assert first.ok and second.ok
    assert sorted(r[0] for _, r, _ in server.received) == ["s0@example.com", "s1@example.com"]


def test_smtp_a_final_reply_later_than_final_reply_timeout_is_possibly_delivered(tmp_path, sink, transport_for):
    server, controller = sink
    controller.handler = SlowAck(controller.handler, delay=1.0)
    (late,) = transport_for(server.port, connections=1, timeout=5, final_reply_timeout=0.2).send_messages(
        messages(make_settings(tmp_path), 1))
    assert (late.ok, late.possibly_delivered, late.permanent) == (False, True, False)
    assert "TimeoutError" in late.error or "timed out" in late.error


def test_smtp_a_message_over_the_advertised_size_is_not_offered(tmp_path, sink, transport_for):
    server, controller = sink
    small = messages(make_settings(tmp_path), 2)
    big = replace(small[1], data=small[1].data + b"x" * 70 * 200)
    size_limit(controller, len(small[0].data) + 1000)
    reads = count_reads(controller)
    fits, refused = transport_for(server.port, connections=1).send_messages([small[0], big])
    assert fits.ok
    assert (refused.ok, refused.too_large, refused.code, refused.size, refused.size_limit) == (
        False, True, None, len(big.data), len(small[0].data) + 1000)
    assert "EHLO SIZE" in refused.error
    assert [command for command, _ in reads].count("MAIL") == 1  # the big one never went to the server


def test_smtp_a_size_refusal_after_data_is_too_large(tmp_path, sink, transport_for):
    # No SIZE in EHLO (or the server's own Received header tips the message over): 552 after the data.
    server, controller = sink
    small = messages(make_settings(tmp_path), 3)
    big = replace(small[1], data=small[1].data + (b"x" * 70 + b"\r\n") * 200)
    controller.handler = Offers(controller.handler, pipelining=False, size=False)
    size_limit(controller, len(small[0].data) + 1000)
    first, refused, last = transport_for(server.port, connections=1).send_messages([small[0], big, small[2]])
    assert first.ok and last.ok
    assert (refused.too_large, refused.code, refused.size, refused.size_limit, refused.bounce) == (
        True, 552, len(big.data), 0, False)
    assert "552 Error: Too much mail data" in refused.error and "552 552" not in refused.error


def test_smtp_helo_name_is_what_ehlo_says(tmp_path, sink, transport_for):
    server, controller = sink
    controller.handler = offers = Offers(controller.handler, pipelining=False)
    assert transport_for(server.port, helo_name="mail.example.org").send_messages(messages(make_settings(tmp_path), 1))[0].ok
    assert offers.helo_names == ["mail.example.org"]


@pytest.mark.parametrize("name", ["mail example.org", "mail.example.org\r\nRCPT TO:<x@y>", "-bad-.example", "a..b"])
def test_a_helo_name_that_is_no_host_name_is_refused_at_load(tmp_path, name):
    with pytest.raises(ConfigError, match=r"'delivery\.smtp\.helo_name'"):
        smtp_settings(tmp_path, 25, helo_name=name)
    assert smtp_settings(tmp_path, 25, helo_name="[192.0.2.1]").delivery.smtp.helo_name == "[192.0.2.1]"


@pytest.mark.parametrize("pipelining", [True, False])
def test_smtp_pipelines_mail_rcpt_and_data_in_one_round_trip_when_offered(tmp_path, sink, transport_for, pipelining):
    server, controller = sink
    controller.handler = Offers(controller.handler, pipelining=pipelining)
    reads = count_reads(controller)
    results = transport_for(server.port, connections=1).send_messages(messages(make_settings(tmp_path), 3))
    assert all(r.ok for r in results) and len(server.received) == 3
    transactions = [reads[i:i + 3] for i in range(0, len(reads), 3)]
    assert [[command for command, _ in t] for t in transactions] == [["MAIL", "RCPT", "DATA"]] * 3
    for t in transactions:
        round_trips = len({read for _, read in t})
        assert round_trips == (1 if pipelining else 3)


def test_smtp_pipelined_refused_recipient_is_reported_and_nothing_is_sent_for_it(tmp_path, sink, transport_for):
    server, controller = sink
    controller.handler = Offers(controller.handler, pipelining=True)
    reads = count_reads(controller)
    server.replies["s1@example.com"] = ["550 5.1.1 no such user"]
    server.replies["s2@example.com"] = ["451 4.3.0 try later"]
    ok, gone, later, after = transport_for(server.port, connections=1).send_messages(
        messages(make_settings(tmp_path), 4))
    assert ok.ok and after.ok  # the connection went on in step after the refusals
    assert (gone.ok, gone.permanent, gone.code, gone.bounce, gone.address_refused) == (False, True, 550, True, True)
    assert (later.ok, later.permanent, later.code) == (False, False, 451)
    assert sorted(r[0] for _, r, _ in server.received) == ["s0@example.com", "s3@example.com"]
    # Pipelined every time: the refused recipients' DATA went with them (and was refused, 503, by the server).
    transactions = [reads[i:i + 3] for i in range(0, len(reads), 3)]
    assert [[command for command, _ in t] for t in transactions] == [["MAIL", "RCPT", "DATA"]] * 4
    assert all(len({read for _, read in t}) == 1 for t in transactions)


def test_smtp_pipelined_data_accepted_without_recipients_gets_a_lone_dot(tmp_path, sink, transport_for):
    # RFC 2920 §3.1: a server may answer DATA with 354 though it refused every RCPT; the client must then
    # send a lone "." and nothing of the message.
    from aiosmtpd.smtp import SMTP

    server, controller = sink
    controller.handler = Offers(controller.handler, pipelining=True)
    bodies: list[bytes] = []

    class DataWithoutRecipients(SMTP):
        async def smtp_DATA(self, arg):
            if self.envelope.rcpt_tos:
                return await super().smtp_DATA(arg)
            await self.push("354 go ahead")
            lines = []
            while (line := await self._reader.readuntil(b"\r\n")) != b".\r\n":
                lines.append(line)
            bodies.append(b"".join(lines))
            await self.push("554 5.5.1 no valid recipients")

    controller.factory = lambda: DataWithoutRecipients(controller.handler, **controller.SMTP_kwargs)
    server.replies["s0@example.com"] = ["550 5.1.1 no such user"]
    gone, after = transport_for(server.port, connections=1).send_messages(messages(make_settings(tmp_path), 2))
    assert (gone.ok, gone.code, gone.bounce) == (False, 550, True)
    assert bodies == [b""] and after.ok
    assert [r[0] for _, r, _ in server.received] == ["s1@example.com"]


def test_smtp_a_connection_lost_after_the_final_dot_is_possibly_delivered_and_not_resent(tmp_path, transport_for):
    server, controller = start_smtp_server()
    controller.handler = hang_up = HangUp(controller.handler, "s1@example.com", at="DATA")
    try:
        transport = transport_for(server.port, connections=1)
        before, lost, after = transport.send_messages(messages(make_settings(tmp_path), 3))
        assert before.ok and after.ok
        assert (lost.ok, lost.permanent, lost.possibly_delivered, lost.unreachable) == (False, False, True, False)
        assert lost.error.startswith("possibly delivered") and hang_up.hang_ups == 1  # never sent again at once
    finally:
        controller.stop()
