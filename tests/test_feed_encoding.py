"""Character encodings: the server's charset, the document's declaration, detection; served over loopback."""

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_settings, run_async
from http_feed_server import FeedServer, static

from digest.config import FetchSettings
from digest.feed_encoding import (
    BYTE_ORDER_MARK,
    DECLARED_BY_SERVER,
    DECLARED_IN_DOCUMENT,
    DETECTED,
    XML_DEFAULT,
    choose_encoding,
)
from digest.fetch import Validators, fetch_feed, new_client
from digest.models import Feed, ItemKind
from digest.parse import ParseResult, parse_feed
from digest.pipeline.ingest import fetch_all
from digest.store.items import get_item

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
FAST = FetchSettings(connect_timeout=2, read_timeout=2, deadline=5, retries=0, max_bytes=1_000_000)
RUSSIAN_TITLE = "Стратегическая автономия Европы: оборона и промышленность"
BULGARIAN_TITLE = "Разширяването на Съюза след 2030 г.: очаквания и условия"


@pytest.fixture
def server():
    srv = FeedServer().start()
    yield srv
    srv.stop()


def fetch_and_parse(url: str) -> ParseResult:
    async def run():
        async with new_client(FAST) as client:
            return await fetch_feed(url, Validators(), FAST, client)

    outcome = run_async(run())
    assert outcome.ok, outcome.error
    return parse_feed(outcome.body, Feed("Feed", url, ItemKind.NEWS), [], content_type=outcome.content_type)


@pytest.mark.parametrize("fixture, content_type, title, encoding", [
    ("koi8-r-undeclared.xml", "application/rss+xml; charset=KOI8-R", RUSSIAN_TITLE, "koi8-r"),
    ("koi8-r-undeclared.xml", 'text/xml;charset="koi8-r"', RUSSIAN_TITLE, "koi8-r"),
    ("cp1251-undeclared.xml", "application/rss+xml; charset=windows-1251", BULGARIAN_TITLE, "cp1251"),
    ("cp1251-undeclared.xml", "text/html; charset=cp1251", BULGARIAN_TITLE, "cp1251"),  # a wrong type, a right charset
])
def test_the_servers_charset_decodes_a_feed_without_a_declaration(server, fixture, content_type, title, encoding):
    server.routes["/feed"] = static((FEEDS / fixture).read_bytes(), content_type=content_type)
    result = fetch_and_parse(server.url("/feed"))
    assert result.error is None and result.warnings == []
    assert result.items[0].title == title
    assert result.encoding == f"{encoding}, {DECLARED_BY_SERVER}"
    assert result.notes == [f"text decoded as {encoding}, {DECLARED_BY_SERVER}"]


@pytest.mark.parametrize("fixture, title, encoding", [
    ("koi8-r-undeclared.xml", RUSSIAN_TITLE, "koi8-r"),
    ("cp1251-undeclared.xml", BULGARIAN_TITLE, "cp1251"),
])
def test_without_any_declaration_the_encoding_is_detected(server, fixture, title, encoding):
    server.routes["/feed"] = static((FEEDS / fixture).read_bytes(), content_type="application/rss+xml")
    result = fetch_and_parse(server.url("/feed"))
    assert result.warnings == [] and result.items[0].title == title
    assert result.encoding == f"{encoding}, {DETECTED}"


def test_the_servers_word_goes_into_the_feed_report(tmp_path, store_url, engine, server):
    server.routes["/ru"] = static((FEEDS / "koi8-r-undeclared.xml").read_bytes(),
                                  content_type="application/rss+xml; charset=koi8-r")
    feeds = [{"name": "Russian", "url": server.url("/ru"), "kind": "news"}]
    settings = make_settings(tmp_path, store_url, feeds=feeds,
                             fetch={"connect_timeout": 2, "read_timeout": 2, "deadline": 5, "retries": 0})
    (report,) = fetch_all(settings, engine)
    assert report.status.value == "ok" and report.new == 2
    assert report.message == "text decoded as koi8-r, declared by the server"
    assert get_item(engine, "https://ru.example.org/?p=7001").title == RUSSIAN_TITLE


def test_a_utf8_document_served_with_a_servers_default_latin1_stays_utf8(server):
    body = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Café</title>'
            "<link>https://www.example.org/</link><item><title>L’Europe sociale : « un chantier »</title>"
            "<link>https://www.example.org/1</link></item></channel></rss>").encode()
    server.routes["/feed"] = static(body, content_type="text/xml; charset=ISO-8859-1")
    result = fetch_and_parse(server.url("/feed"))
    assert result.items[0].title == "L’Europe sociale : « un chantier »" and result.warnings == []
    assert result.encoding.startswith(f"utf-8, {DECLARED_IN_DOCUMENT}; the server's charset=iso8859-1")


def test_a_wrong_server_charset_falls_back_with_a_warning(server):
    body = (FEEDS / "koi8-r-undeclared.xml").read_bytes()
    server.routes["/feed"] = static(body, content_type="application/rss+xml; charset=utf-8")
    result = fetch_and_parse(server.url("/feed"))
    assert result.error is None and result.items
    assert any(w.startswith("wrong character encoding: document declared as utf-8") for w in result.warnings)
    assert "the declared one does not" in result.encoding


def test_choices_and_their_reasons():
    assert choose_encoding(b'<?xml version="1.0" encoding="koi8-r"?><rss/>', None).reason == DECLARED_IN_DOCUMENT
    assert choose_encoding(b"<rss>plain ascii</rss>", None).reason == XML_DEFAULT
    assert choose_encoding("<rss>caf\u00e9</rss>".encode(), None).reason == XML_DEFAULT
    assert choose_encoding(b"\xef\xbb\xbf<rss/>", "text/xml; charset=koi8-r").reason == BYTE_ORDER_MARK
    unknown = choose_encoding(b"<rss/>", "text/xml; charset=no-such-charset")
    assert unknown.encoding is None and unknown.reason == XML_DEFAULT  # an unknown label is no declaration
    assert choose_encoding(b"<rss/>", "text/xml; charset=KOI8-R\r\nX-Evil: 1").encoding == "koi8-r"


def test_the_declared_windows_1252_case_still_warns():
    result = parse_feed((FEEDS / "windows-1252-declared-utf8.xml").read_bytes(), Feed("F", "x", ItemKind.NEWS), [])
    assert any("parsed as windows-1252" in w for w in result.warnings)
    assert result.encoding == "windows-1252, the one that fits the bytes (the declared one does not)"


def test_fetch_outcomes_carry_the_content_type(server):
    server.routes["/feed"] = static(b"<rss/>", content_type="application/rss+xml; charset=koi8-r")

    async def run():
        async with new_client(replace(FAST)) as client:
            return await fetch_feed(server.url("/feed"), Validators(), FAST, client)

    assert run_async(run()).content_type == "application/rss+xml; charset=koi8-r"
