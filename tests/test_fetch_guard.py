"""Redirects never lead a fetch into the private network (digest.fetch_guard), on real loopback servers.

Every test server listens on 127.0.0.1, so "a public feed" here is the configured URL: only the URL
staff write may point at a private address; every hop after a redirect must reach a public one.
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from conftest import run_async
from http_feed_server import FeedServer, redirect, static
from test_fetch import FAST, RSS, fetch

from digest import fetch as fetch_module
from digest.config import settings_from_dict
from digest.fetch import FetchErrorKind, fetch_feed, new_client
from digest.fetch_guard import PUBLIC_ONLY, PrivateAddressRefused, address_problem


@pytest.fixture
def public():
    """The server of the feed staff configured."""
    srv = FeedServer().start()
    yield srv
    srv.stop()


@pytest.fixture
def internal():
    """A server in the private network (another loopback port) holding an internal feed."""
    srv = FeedServer()
    srv.httpd.RequestHandlerClass.protocol_version = "HTTP/1.1"  # keeps connections alive, as real servers do
    srv.start()
    srv.routes["/internal"] = static(RSS.replace(b"<title>One</title>", b"<title>Internal</title>"))
    yield srv
    srv.stop()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0.0.0.0", "[::ffff:127.0.0.1]", "127.1"])
def test_a_redirect_into_the_private_network_is_refused_before_anything_is_sent(public, internal, host):
    public.routes["/feed"] = redirect(f"http://{host}:{internal.port}/internal")
    outcome = fetch(public.url("/feed"))
    assert outcome.error.kind == FetchErrorKind.REDIRECT and not outcome.error.retryable
    assert outcome.error.message.startswith(f"refusing to follow a redirect to http://{host}:{internal.port}/internal")
    assert "(loopback)" in outcome.error.message or "(unspecified)" in outcome.error.message
    assert "write that URL as the feed's url, or set fetch.allow_private_addresses = true" in outcome.error.message
    assert internal.hits("/internal") == 0


def test_the_setting_lets_redirects_into_the_private_network(public, internal):
    public.routes["/feed"] = redirect(internal.url("/internal"))
    outcome = fetch(public.url("/feed"), replace(FAST, allow_private_addresses=True))
    assert outcome.ok and b"Internal" in outcome.body


def test_a_configured_url_on_a_private_address_is_fetched(internal):
    outcome = fetch(internal.url("/internal"))
    assert outcome.ok and b"Internal" in outcome.body


def test_the_address_is_checked_when_connecting_so_dns_rebinding_does_not_help(public, internal, monkeypatch):
    """The early check saw a public address (as a rebinding name answers first); the connection is still refused."""
    monkeypatch.setattr(fetch_module, "redirect_refusal", _as_if_public)
    public.routes["/feed"] = redirect(f"http://localhost:{internal.port}/internal")
    outcome = fetch(public.url("/feed"))
    assert outcome.error.kind == FetchErrorKind.REDIRECT
    assert "it leads to localhost, which is " in outcome.error.message and "(loopback)" in outcome.error.message
    assert internal.hits("/internal") == 0


async def _as_if_public(url: str) -> None:
    return None


def test_a_redirect_never_reuses_a_connection_a_configured_url_opened(public, internal, monkeypatch):
    """A kept-alive connection to the internal server (its own feed's) is not a way in for another feed's redirect."""
    monkeypatch.setattr(fetch_module, "redirect_refusal", _as_if_public)
    public.routes["/feed"] = redirect(internal.url("/internal"))

    async def run():
        async with new_client(FAST) as client:
            first = await fetch_feed(internal.url("/internal"), fetch_module.Validators(), FAST, client)
            second = await fetch_feed(public.url("/feed"), fetch_module.Validators(), FAST, client)
            return first, second

    first, second = run_async(run())
    assert first.ok and second.error.kind == FetchErrorKind.REDIRECT
    assert internal.hits("/internal") == 1


def test_a_request_marked_public_only_never_connects_to_loopback(internal):
    """The transport itself refuses, whatever called it (and fails if httpx stops using our pool)."""

    async def run():
        async with new_client(FAST) as client:
            request = client.build_request("GET", internal.url("/internal"), extensions={PUBLIC_ONLY: True})
            with pytest.raises(PrivateAddressRefused) as refused:
                await client.send(request)
            plain = await client.get(internal.url("/internal"))
            return refused.value, plain

    refused, plain = run_async(run())
    assert (refused.address, refused.problem) == ("127.0.0.1", "loopback")
    assert plain.status_code == 200 and internal.hits("/internal") == 1


@pytest.mark.parametrize("address, problem", [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fc00::1", "private"),
    ("fec0::1", "private"), ("100.64.0.1", "reserved"), ("240.0.0.1", "private"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("239.1.1.1", "multicast"), ("ff0e::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"), ("64:ff9b::7f00:1", "loopback"),
    ("2002:a9fe:a9fe::", "link-local"), ("::7f00:1", "reserved"),
    ("93.184.216.34", None), ("2001:4860:4860::8888", None), ("::ffff:8.8.8.8", None), ("64:ff9b::808:808", None),
])
def test_which_addresses_are_not_public(address, problem):
    assert address_problem(ipaddress.ip_address(address)) == problem


def test_the_setting_is_read_from_the_config():
    assert settings_from_dict({"fetch": {"allow_private_addresses": True}}).fetch.allow_private_addresses is True
    assert settings_from_dict({}).fetch.allow_private_addresses is False

