"""Feed autodiscovery: a feed URL that is a web page gets "did you mean …/feed/?", naming the feed the
page announces, in the fetch's message, the feed's health words and the admin's test fetch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import make_settings
from http_feed_server import FeedServer, static

from digest.defuse import ERROR_HTML
from digest.feed_discovery import MAX_BYTES, discover_feeds, suggested_feed, with_suggestion
from digest.pipeline import feeds
from digest.pipeline.ingest import fetch_all
from digest.store import open_store

PAGE = (Path(__file__).parent / "data" / "feeds" / "html-page.html").read_bytes()
RSS = (Path(__file__).parent / "data" / "feeds" / "wordpress-rss.xml").read_bytes()


def page_with(head: str) -> bytes:
    return f"<!doctype html><html><head><title>t</title>{head}</head><body><p>hi</p></body></html>".encode()


def test_the_announced_feed_is_found_absolute():
    assert discover_feeds(PAGE, "https://www.example.org/publications/") == ["https://www.example.org/publications/feed/"]


@pytest.mark.parametrize(("head", "expected"), [
    ('<link rel="alternate" type="application/rss+xml" href="/feed/">', ["https://site.example/feed/"]),
    ('<link rel="alternate" type="application/atom+xml" href="atom.xml">', ["https://site.example/news/atom.xml"]),
    ('<base href="https://cdn.example/x/"><link rel="alternate" type="application/rss+xml" href="f.xml">',
     ["https://cdn.example/x/f.xml"]),
    ('<LINK REL="Alternate feed" TYPE="application/rss+xml; charset=utf-8" HREF="/a">'
     '<link rel="alternate" type="application/rss+xml" href="/a">', ["https://site.example/a"]),  # once
    ('<link rel="stylesheet" type="text/css" href="/s.css">', []),
    ('<link rel="alternate" hreflang="de" href="/de/">', []),  # a translation, not a feed
    ('<link rel="alternate" type="application/rss+xml" href="javascript:alert(1)">', []),
    ('<link rel="alternate" type="application/rss+xml" href="ftp://site.example/f">', []),
    ('<link rel="alternate" type="application/rss+xml" href="">', []),
    ('<link rel="alternate" type="application/json" href="/wp-json/">', []),  # WordPress's REST API, not a feed
])
def test_what_counts_as_an_announced_feed(head, expected):
    assert discover_feeds(page_with(head), "https://site.example/news/") == expected


def test_broken_markup_and_a_huge_page_are_read_safely():
    assert discover_feeds(b"<html><head><link rel=alternate type=application/rss+xml href=/f <<<\xff\xfe", "https://s.example/") \
        in ([], ["https://s.example/f"])
    late = b"<html><head>" + b" " * MAX_BYTES + b'<link rel="alternate" type="application/rss+xml" href="/f"></head>'
    assert discover_feeds(late, "https://s.example/") == []  # only the first MAX_BYTES are read


def test_the_suggestion_survives_its_message():
    message = with_suggestion(ERROR_HTML, ["https://site.example/feed/", "https://site.example/comments/feed/"])
    assert message.endswith("— did you mean https://site.example/feed/?")
    assert suggested_feed(message) == "https://site.example/feed/"
    assert with_suggestion(ERROR_HTML, []) == ERROR_HTML and suggested_feed(ERROR_HTML) is None
    assert suggested_feed("HTTP 404 — did you mean javascript:alert(1)?") is None


@pytest.fixture
def site():
    server = FeedServer().start()
    server.routes["/publications/"] = static(PAGE.replace(b"https://www.example.org/publications/feed/", b"/feed/"),
                                             content_type="text/html; charset=utf-8")
    server.routes["/feed/"] = static(RSS)
    yield server
    server.stop()


def test_a_stored_web_page_feed_says_which_feed_it_announces(tmp_path, store_url, site):
    settings = make_settings(tmp_path, store_url, fetch={"retries": 0})
    engine = open_store(settings.store.url)
    try:
        feeds.add_feed(settings, engine, "Publications", site.url("/publications/"), "brief", None, datetime.now(UTC))
        (report,) = fetch_all(settings, engine)
        assert report.status.value == "error" and report.message.endswith(f"did you mean {site.url('/feed/')}?")
        (row,) = feeds.feeds_overview(settings, engine, datetime.now(UTC))
        assert row.health.level == "failing"
        assert row.health.words == f"This address is a web page, not a feed — did you mean {site.url('/feed/')}?"
    finally:
        engine.dispose()


def test_the_test_fetch_of_a_web_page_offers_its_feed(tmp_path, site):
    settings = make_settings(tmp_path, fetch={"retries": 0})
    engine = open_store(settings.store.url)
    try:
        trial = feeds.try_feed(settings, engine, "Publications", site.url("/publications/"), "brief", None)
        assert not trial.ok and trial.suggestion == site.url("/feed/")
        again = feeds.try_feed(settings, engine, "Publications", trial.suggestion, "brief", None)
        assert again.ok and again.items > 0 and again.suggestion == ""
    finally:
        engine.dispose()
