"""HTTP fault tests for digest.fetch against a real server on 127.0.0.1 (tests/http_feed_server.py)."""

from __future__ import annotations

import email.utils
import gzip
import shutil
import ssl
import subprocess
import threading
import tracemalloc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import run_async
from http_feed_server import FeedServer, redirect, static, status, trickle

from digest.config import FetchSettings
from digest.fetch import (
    FetchErrorKind,
    FetchJob,
    Validators,
    feed_location,
    fetch_feed,
    fetch_feeds,
    new_client,
    parse_retry_after,
    read_feed_file,
)

RSS = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>T</title><link>https://example.org/</link>
<item><title>One</title><link>https://example.org/1</link><guid>https://example.org/1</guid></item>
</channel></rss>"""

FAST = FetchSettings(connect_timeout=2, read_timeout=2, deadline=5, retries=2, retry_backoff=0.01,
                     max_bytes=1_000_000)
# The test server is on loopback, where redirects lead only with this setting (tests/test_fetch_guard.py).
LOOPBACK_REDIRECTS = replace(FAST, allow_private_addresses=True)


@pytest.fixture
def server():
    srv = FeedServer().start()
    yield srv
    srv.stop()


NO_VALIDATORS = Validators()


def fetch(location, settings: FetchSettings = FAST, validators: Validators = NO_VALIDATORS):
    async def run():
        async with new_client(settings) as client:
            return await fetch_feed(location, validators, settings, client)

    return run_async(run())


def test_a_good_feed_arrives_with_its_validators_and_our_user_agent(server):
    server.routes["/feed"] = static(RSS, etag='"v1"')
    outcome = fetch(server.url("/feed"))
    assert outcome.ok and outcome.body == RSS
    assert outcome.etag == '"v1"' and outcome.last_modified
    assert server.headers_of("/feed")[0]["User-Agent"] == FAST.user_agent


def test_a_trickling_body_is_cut_off_at_the_deadline(server):
    server.routes["/slow"] = trickle(0.2)
    outcome = fetch(server.url("/slow"), FetchSettings(read_timeout=5, deadline=1.0))
    assert outcome.error.kind == FetchErrorKind.DEADLINE
    assert "fetch.deadline" in outcome.error.message


def test_trickling_headers_are_cut_off_at_the_deadline_too(server):
    server.routes["/slow-headers"] = trickle(0.2, in_headers=True)
    outcome = fetch(server.url("/slow-headers"), FetchSettings(read_timeout=5, deadline=1.0))
    assert outcome.error.kind == FetchErrorKind.DEADLINE


def test_a_silent_server_hits_the_read_timeout(server):
    server.routes["/silent"] = trickle(3, in_headers=True)
    outcome = fetch(server.url("/silent"), FetchSettings(read_timeout=0.3, deadline=10, retries=0))
    assert outcome.error.kind == FetchErrorKind.TIMEOUT
    assert "fetch.read_timeout" in outcome.error.message


def test_500_is_retried_with_backoff_then_reported(server):
    server.routes["/broken"] = status(500)
    outcome = fetch(server.url("/broken"))
    assert outcome.error.kind == FetchErrorKind.HTTP_STATUS
    assert "HTTP 500" in outcome.error.message and "after 3 tries" in outcome.error.message
    assert server.hits("/broken") == 3


def test_a_500_then_200_recovers_within_the_run(server):
    answers = [status(502), static(RSS)]
    server.routes["/flaky"] = lambda h: answers.pop(0)(h) if len(answers) > 1 else answers[0](h)
    outcome = fetch(server.url("/flaky"))
    assert outcome.ok and server.hits("/flaky") == 2


def test_404_is_not_retried_and_says_what_to_check(server):
    outcome = fetch(server.url("/missing"))
    assert outcome.error.kind == FetchErrorKind.HTTP_STATUS
    assert "HTTP 404" in outcome.error.message and "check the feed URL" in outcome.error.message
    assert server.hits("/missing") == 1


def test_a_redirect_is_followed(server):
    server.routes["/old"] = redirect("/feed", 301)
    server.routes["/feed"] = static(RSS)
    outcome = fetch(server.url("/old"), LOOPBACK_REDIRECTS)
    assert outcome.ok and outcome.body == RSS


def test_a_redirect_loop_is_reported(server):
    server.routes["/a"] = redirect("/b")
    server.routes["/b"] = redirect("/a")
    outcome = fetch(server.url("/a"), LOOPBACK_REDIRECTS)
    assert outcome.error.kind == FetchErrorKind.REDIRECT
    assert "redirect loop" in outcome.error.message
    assert server.hits("/a") == 1 and server.hits("/b") == 1


def test_more_than_five_redirects_are_refused(server):
    for i in range(10):
        server.routes[f"/r{i}"] = redirect(f"/r{i + 1}")
    outcome = fetch(server.url("/r0"), LOOPBACK_REDIRECTS)
    assert outcome.error.kind == FetchErrorKind.REDIRECT
    assert "more than 5 redirects" in outcome.error.message
    assert server.hits("/r6") == 0


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/feed.xml", "javascript://x/%0aalert(1)", "data://text/xml,x"])
def test_a_redirect_to_a_non_http_scheme_is_refused(server, target):
    server.routes["/evil"] = redirect(target)
    outcome = fetch(server.url("/evil"))
    assert outcome.error.kind == FetchErrorKind.SCHEME
    assert "only http and https" in outcome.error.message and "redirected from" in outcome.error.message


@pytest.mark.parametrize("target", ["javascript:alert(1)", "http://[::1", "//[::1/x", "http://[zz]/feed"])
def test_a_redirect_to_an_unparsable_url_is_reported(server, target):
    server.routes["/weird"] = redirect(target)
    outcome = fetch(server.url("/weird"))
    assert outcome.error.kind == FetchErrorKind.REDIRECT and not outcome.error.retryable
    assert outcome.error.message.startswith("the server redirected to an invalid URL (")
    assert server.hits("/weird") == 1


def test_a_redirect_without_a_location_is_reported(server):
    server.routes["/nowhere"] = status(302)
    outcome = fetch(server.url("/nowhere"))
    assert outcome.error.kind == FetchErrorKind.REDIRECT and outcome.status_code == 302
    assert outcome.error.message == "HTTP 302 redirect without a Location header"


@pytest.mark.parametrize("url", ["http://[::1", "https://[::1/feed", "http://[zz]/feed"])
def test_a_feed_url_urllib_or_httpx_cannot_read_is_a_clear_error(url):
    outcome = fetch(url)
    assert outcome.error.kind == FetchErrorKind.SCHEME
    assert "not a valid" in outcome.error.message and repr(url) in outcome.error.message


def test_a_gzip_bomb_stops_at_the_decoded_cap_without_inflating_it_in_memory(server):
    # 128 gzip members of 16 MiB of spaces: a 2 MB body that would inflate to 2 GiB.
    member = gzip.compress(b" " * (16 << 20), compresslevel=9)
    server.routes["/bomb"] = status(200, {"Content-Encoding": "gzip"}, member * 128)
    tracemalloc.start()
    try:
        outcome = fetch(server.url("/bomb"), FetchSettings(max_bytes=1_000_000, retries=0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert outcome.error.kind == FetchErrorKind.TOO_LARGE
    assert "once decompressed" in outcome.error.message and "fetch.max_bytes" in outcome.error.message
    # Inflating even one 64 KiB piece of this body unbounded would take ~66 MB, all of it 2 GiB.
    assert peak < 32_000_000, f"peak {peak:,} bytes"


def test_a_gzipped_feed_under_the_cap_is_decoded(server):
    server.routes["/gz"] = static(RSS, gzip_it=True)
    outcome = fetch(server.url("/gz"))
    assert outcome.body == RSS


def test_a_corrupt_gzip_body_is_an_encoding_error(server):
    server.routes["/corrupt"] = status(200, {"Content-Encoding": "gzip"}, b"\x1f\x8bnot really gzip")
    outcome = fetch(server.url("/corrupt"))
    assert outcome.error.kind == FetchErrorKind.ENCODING


def test_an_unknown_content_encoding_is_refused(server):
    server.routes["/br"] = status(200, {"Content-Encoding": "br"}, b"xx")
    outcome = fetch(server.url("/br"))
    assert outcome.error.kind == FetchErrorKind.ENCODING and "'br'" in outcome.error.message


def test_a_declared_oversize_body_is_refused_before_reading(server):
    server.routes["/big"] = status(200, {}, b"x" * 5000)
    outcome = fetch(server.url("/big"), FetchSettings(max_bytes=1000))
    assert outcome.error.kind == FetchErrorKind.TOO_LARGE and "Content-Length" in outcome.error.message


def test_an_undeclared_oversize_body_stops_at_the_cap(server):
    def endless(h):
        h.wfile.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n")
        for _ in range(100):
            h.wfile.write(b"x" * 10_000)

    server.routes["/endless"] = endless
    outcome = fetch(server.url("/endless"), FetchSettings(max_bytes=50_000))
    assert outcome.error.kind == FetchErrorKind.TOO_LARGE


def test_304_on_a_conditional_get_keeps_the_validators(server):
    server.routes["/feed"] = static(RSS, etag='"abc"')
    first = fetch(server.url("/feed"))
    second = fetch(server.url("/feed"), validators=Validators(first.etag, first.last_modified))
    assert second.not_modified and second.body is None and second.error is None
    sent = server.headers_of("/feed")[1]
    assert sent["If-None-Match"] == '"abc"' and sent["If-Modified-Since"] == first.last_modified


def test_validators_with_control_characters_are_never_sent(server):
    server.routes["/feed"] = static(RSS)
    fetch(server.url("/feed"), validators=Validators('"x"\r\nX-Evil: 1', "Mon\n"))
    sent = server.headers_of("/feed")[0]
    assert "If-None-Match" not in sent and "If-Modified-Since" not in sent and "X-Evil" not in sent


def test_429_with_retry_after_seconds_records_when_to_come_back(server):
    server.routes["/busy"] = status(429, {"Retry-After": "120"})
    before = datetime.now(UTC)
    outcome = fetch(server.url("/busy"))
    assert outcome.error.kind == FetchErrorKind.RATE_LIMITED
    assert before + timedelta(seconds=119) <= outcome.retry_after <= datetime.now(UTC) + timedelta(seconds=121)
    assert "Retry-After" in outcome.error.message
    assert server.hits("/busy") == 1  # honoured, not hammered


def test_503_with_an_http_date_retry_after_is_honoured_and_clamped(server):
    far = email.utils.format_datetime(datetime.now(UTC) + timedelta(days=365), usegmt=True)
    server.routes["/maint"] = status(503, {"Retry-After": far})
    outcome = fetch(server.url("/maint"), FetchSettings(retry_after_max_hours=2))
    assert outcome.error.kind == FetchErrorKind.RATE_LIMITED
    assert outcome.retry_after <= datetime.now(UTC) + timedelta(hours=2)


def test_503_without_retry_after_is_retried(server):
    server.routes["/down"] = status(503)
    outcome = fetch(server.url("/down"))
    assert outcome.error.kind == FetchErrorKind.HTTP_STATUS and outcome.retry_after is None
    assert server.hits("/down") == 3


@pytest.mark.parametrize("value, expected", [
    ("30", timedelta(seconds=30)), ("  0 ", timedelta(0)), ("Wed, 21 Oct 2015 07:28:00 GMT", timedelta(0)),
    ("99999999999999", timedelta(hours=24)), ("soon", None), ("", None), (None, None), ("-5", None),
])
def test_parse_retry_after(value, expected):
    now = datetime(2026, 1, 1, tzinfo=UTC)
    result = parse_retry_after(value, now, timedelta(hours=24))
    assert (result - now if result else None) == expected


def test_a_refused_connection_is_retried_then_reported():
    from conftest import free_port

    outcome = fetch(f"http://127.0.0.1:{free_port()}/feed")
    assert outcome.error.kind == FetchErrorKind.CONNECTION and "after 3 tries" in outcome.error.message


def test_tls_problems_are_reported_and_not_bypassed(server):
    server.routes["/feed"] = static(RSS)
    outcome = fetch(f"https://127.0.0.1:{server.port}/feed")
    assert outcome.error.kind == FetchErrorKind.TLS and "TLS" in outcome.error.message


def test_a_self_signed_certificate_is_refused(server, tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl command not installed")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "cert.pem")], check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    server.routes["/feed"] = static(RSS)
    outcome = fetch(f"https://127.0.0.1:{server.port}/feed")
    assert outcome.error.kind == FetchErrorKind.TLS
    assert "certificate verify failed" in outcome.error.message
    assert server.hits("/feed") == 0


def test_one_tls_context_per_process_that_follows_ssl_cert_file(server, tmp_path, monkeypatch):
    """Clients share a verifying context (the CA bundle loads once); SSL_CERT_FILE still takes effect."""
    import trustme

    from digest.fetch import tls_context

    ca = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    server.routes["/feed"] = static(RSS)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    shared = tls_context()
    assert tls_context() is shared and shared.verify_mode == ssl.CERT_REQUIRED and shared.check_hostname
    assert fetch(f"https://127.0.0.1:{server.port}/feed").error.kind == FetchErrorKind.TLS
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    assert tls_context() is not shared
    assert fetch(f"https://127.0.0.1:{server.port}/feed").body == RSS
    monkeypatch.delenv("SSL_CERT_FILE")
    assert tls_context() is shared
    assert fetch(f"https://127.0.0.1:{server.port}/feed").error.kind == FetchErrorKind.TLS


def test_a_local_file_is_read_and_then_not_modified(tmp_path):
    path = tmp_path / "feed.xml"
    path.write_bytes(RSS)
    first = fetch(path)
    assert first.body == RSS and first.last_modified
    second = fetch(path, validators=Validators(None, first.last_modified))
    assert second.not_modified


def test_local_file_errors_are_clear(tmp_path):
    missing = fetch(tmp_path / "nope.xml")
    assert missing.error.kind == FetchErrorKind.FILE and "no such file" in missing.error.message
    folder = fetch(tmp_path)
    assert folder.error.kind == FetchErrorKind.FILE and "not a file" in folder.error.message
    (tmp_path / "feed.xml").write_bytes(RSS)
    below_a_file = tmp_path / "feed.xml" / "inner.xml"  # a file used as a folder: NotADirectoryError
    unreadable = fetch(below_a_file)
    assert unreadable.error.kind == FetchErrorKind.FILE
    assert unreadable.error.message == f"cannot read {below_a_file}: Not a directory"
    big = tmp_path / "big.xml"
    big.write_bytes(b"x" * 2000)
    assert read_feed_file(big, Validators(), 1000).error.kind == FetchErrorKind.TOO_LARGE


def test_feed_location_resolves_paths_against_the_config_folder(tmp_path):
    def resolve(value: str) -> Path:
        return tmp_path / value

    assert feed_location("feeds/a.xml", resolve) == tmp_path / "feeds/a.xml"
    assert feed_location("file:///srv/a.xml", resolve) == Path("/srv/a.xml")
    assert feed_location("https://example.org/feed", resolve) == "https://example.org/feed"
    assert feed_location("ftp://example.org/feed", resolve) == "ftp://example.org/feed"
    assert fetch("ftp://example.org/feed").error.kind == FetchErrorKind.SCHEME
    # A file: URL urllib cannot read (the config refuses it; an API caller may not) is fetched as given and reported.
    assert feed_location("file://[::1/x", resolve) == "file://[::1/x"
    outcome = fetch("file://[::1/x")
    assert outcome.error.kind == FetchErrorKind.SCHEME and "file://[::1/x" in outcome.error.message


def test_many_feeds_at_once_one_failing(server):
    for i in range(6):
        server.routes[f"/f{i}"] = static(RSS.replace(b"One", f"Item {i}".encode()))
    server.routes["/f3"] = status(500)
    jobs = [FetchJob(server.url(f"/f{i}")) for i in range(6)]
    outcomes = {i: o for i, o, _ in fetch_feeds(jobs, FetchSettings(concurrency=3, retries=0))}
    assert sorted(outcomes) == list(range(6))
    assert outcomes[3].error.kind == FetchErrorKind.HTTP_STATUS
    assert all(outcomes[i].body and f"Item {i}".encode() in outcomes[i].body for i in (0, 1, 2, 4, 5))


def test_what_then_made_of_a_body_comes_back_without_the_body(server):
    """A 26 MB body is not kept while the caller stores what its parse found."""
    server.routes["/f"] = static(RSS)
    server.routes["/gone"] = status(404)
    jobs = [FetchJob(server.url("/f")), FetchJob(server.url("/gone"))]
    results = {i: (o, extra) for i, o, extra in
               fetch_feeds(jobs, FetchSettings(retries=0), then=lambda i, o: len(o.body or b""))}
    outcome, length = results[0]
    assert length == len(RSS) and outcome.ok and outcome.body == b""
    assert results[1][0].error.kind == FetchErrorKind.HTTP_STATUS and results[1][1] == 0


def test_feeds_are_fetched_at_once(server):
    """Each route answers only once all N requests have arrived: one at a time, the barrier times out."""
    count = 4
    barrier = threading.Barrier(count, timeout=10)

    def together(h):
        barrier.wait()
        static(RSS)(h)

    for i in range(count):
        server.routes[f"/together{i}"] = together
    jobs = [FetchJob(server.url(f"/together{i}")) for i in range(count)]
    settings = FetchSettings(concurrency=count, retries=0, read_timeout=15, deadline=20)
    outcomes = [outcome for _, outcome, _ in fetch_feeds(jobs, settings)]
    assert all(outcome.ok for outcome in outcomes), [o.error for o in outcomes]
    assert not barrier.broken


def test_stopping_early_cancels_the_remaining_fetches(server):
    server.routes["/slow"] = trickle(0.2)
    server.routes["/fast"] = static(RSS)
    jobs = [FetchJob(server.url("/fast"))] + [FetchJob(server.url("/slow"))] * 3
    for index, outcome, _ in fetch_feeds(jobs, FetchSettings(concurrency=4, deadline=30)):
        assert index == 0 and outcome.ok
        break  # leaving the loop must not wait 30 s for the trickles


def test_gzip_decoding_handles_concatenated_members(server):
    body = gzip.compress(RSS[:50]) + gzip.compress(RSS[50:])
    server.routes["/multi"] = status(200, {"Content-Encoding": "gzip"}, body)
    assert fetch(server.url("/multi")).body == RSS
