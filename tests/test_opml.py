"""OPML 2.0 read and written (digest.opml): real files in tests/data/opml (see its README), pure functions."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import pytest

from digest.models import Feed, ItemKind
from digest.opml import DIGEST_NS, MAX_BYTES, MAX_OUTLINES, OpmlError, read_opml, write_opml

DATA = Path(__file__).resolve().parent / "data" / "opml"
NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def read(name: str):
    return read_opml((DATA / name).read_bytes())


def test_a_real_list_reads_nested_outlines_kinds_languages_and_defaults():
    result = read("good.opml")
    assert result.problems == []
    got = [(f.feed.name, f.feed.url, f.feed.kind, f.feed.language, f.paused) for f in result.feeds]
    assert got == [
        ("Policy briefs", "https://www.example.org/briefs/feed/", ItemKind.BRIEF, "en", False),
        ("Long reads", "https://www.example.org/articles/feed/", ItemKind.ARTICLE, None, False),  # two folders deep
        ("Événements", "https://events.example.org/feed.xml", ItemKind.EVENT, "fr", False),  # plain kind, title as name
        ("Press coverage", "https://alerts.example.net/feeds/123", ItemKind.MEDIA, None, True),
        ("news.example.com", "http://news.example.com/rss", ItemKind.BRIEF, None, False),  # no kind: brief
    ]
    assert [f.line for f in result.feeds] == [9, 11, 14, 15, 16]


def test_bad_outlines_are_listed_by_line_and_the_good_ones_read():
    result = read("bad-lines.opml")
    assert [f.line for f in result.feeds] == [5, 11, 12, 13]  # duplicates are the store's business
    assert [p.split(":")[0] for p in result.problems] == ["line 6", "line 7", "line 8", "line 9", "line 10"]
    assert "'ftp://files.example.org/feed.xml' is not an http(s) URL" in result.problems[0]
    assert "javascript:alert(1)" in result.problems[1] and "not an http(s) URL" in result.problems[1]
    assert "podcast" in result.problems[3] and "brief, event, news, article, media" in result.problems[3]
    assert "two-letter code" in result.problems[4]


@pytest.mark.parametrize("name, words", [
    ("billion-laughs.opml", "DOCTYPE"),
    ("external-entity.opml", "DOCTYPE"),
    ("not-opml.xml", "root element is <rss>"),
    ("malformed.opml", "line 5: not well-formed XML"),
])
def test_hostile_or_broken_files_are_refused_whole(name, words):
    started = time.process_time()
    with pytest.raises(OpmlError, match=words.replace("(", r"\(")):
        read(name)
    assert time.process_time() - started < 5  # nothing expanded (a real expansion takes minutes and gigabytes)


def test_an_entity_declared_without_a_doctype_line_cannot_sneak_in_and_undefined_ones_fail():
    with pytest.raises(OpmlError, match="not well-formed"):
        read_opml(b'<opml version="2.0"><body><outline text="&ghost;" xmlUrl="https://a.example/f"/></body></opml>')


def test_size_and_outline_limits():
    with pytest.raises(OpmlError, match="MiB"):
        read_opml(b" " * (MAX_BYTES + 1))
    many = "".join('<outline text="x"/>' for _ in range(MAX_OUTLINES + 1))
    with pytest.raises(OpmlError, match="more than"):
        read_opml(f'<opml version="2.0"><body>{many}</body></opml>'.encode())
    with pytest.raises(OpmlError, match="empty"):
        read_opml(b"  \n")


def test_an_undeclared_prefix_is_not_well_formed():
    with pytest.raises(OpmlError, match="line 1"):
        read_opml(b'<opml version="2.0"><body><outline digest:kind="news" xmlUrl="https://a.example/f"/></body></opml>')


def test_export_is_opml_2_that_reads_back_identically():
    feeds = [
        (Feed("Policy briefs", "https://www.example.org/briefs/feed/?a=1&b=2", ItemKind.BRIEF, "en"), False),
        (Feed('Quotes "and" <tags> & more', "https://q.example.org/f", ItemKind.NEWS), True),
        (Feed("Événements à venir", "https://events.example.org/feed.xml", ItemKind.EVENT, "fr"), False),
        (Feed("Press", "https://alerts.example.net/feeds/123", ItemKind.MEDIA), False),
        (Feed("Long reads", "https://www.example.org/articles/feed/", ItemKind.ARTICLE, "de"), False),
    ]
    text = write_opml(feeds, "Foundation <feeds>", NOW)
    root = ET.fromstring(text.encode())  # well-formed XML, OPML 2.0 shape
    assert root.tag == "opml" and root.get("version") == "2.0"
    assert root.find("head/title").text == "Foundation <feeds>"
    assert root.find("head/dateCreated").text == "Fri, 04 Dec 2026 12:00:00 +0000"
    outlines = root.findall("body/outline")
    assert all(o.get("type") == "rss" and o.get("text") and o.get("xmlUrl") for o in outlines)
    assert outlines[0].get(f"{{{DIGEST_NS}}}kind") == "brief"
    back = read_opml(text.encode())
    assert back.problems == []
    assert [(f.feed, f.paused) for f in back.feeds] == feeds


def test_an_empty_list_exports_and_reads_back_empty():
    back = read_opml(write_opml([], "Nothing", NOW).encode())
    assert back.feeds == [] and back.problems == []
