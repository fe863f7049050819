"""The public archive: sent issues as web pages, the indexes and the Atom feed; drafts never public."""

from __future__ import annotations

from xml.etree import ElementTree as ET

import feedparser
import pytest
from admin_fixtures import admin_store
from starlette.testclient import TestClient

from digest.models import IssueStatus
from digest.store.issues import approve_issue, set_status
from digest.web.app import create_app

ATOM = "{http://www.w3.org/2005/Atom}"


def send(store) -> None:
    """Move draft 1 through approval to sent (the ledger is the deliver tests' business)."""
    approve_issue(store.engine, 1, by="Anna", version=store.issue.version)
    set_status(store.engine, 1, IssueStatus.SENDING)
    set_status(store.engine, 1, IssueStatus.SENT)


@pytest.fixture
def store(tmp_path, sqlite_url):
    return admin_store(tmp_path, sqlite_url, web={"base_url": "https://digest.example.org"})


@pytest.fixture
def client(store):
    with TestClient(create_app(store.settings, store.engine), base_url="https://testserver") as c:
        yield c


def titles(store) -> list[str]:
    return [e.item.title for s in store.issue.sections for e in s.entries]


def test_drafts_approved_and_sending_issues_are_never_public(tmp_path, store_url):
    store = admin_store(tmp_path, store_url)
    with TestClient(create_app(store.settings, store.engine), base_url="https://testserver") as client:
        for step in (None, "approve", IssueStatus.SENDING):
            if step == "approve":
                approve_issue(store.engine, 1, by="Anna", version=store.issue.version)
            elif step:
                set_status(store.engine, 1, step)
            page = client.get("/archive/1")
            assert page.status_code == 404
            for path in ("/archive/1", "/archive/", "/archive/feed.atom", "/archive/series/esa-security-defence"):
                body = client.get(path).text
                assert titles(store)[0] not in body, path


def test_a_sent_issue_is_a_web_page(store, client):
    send(store)
    page = client.get("/archive/1")
    assert page.status_code == 200
    assert all(t in page.text for t in titles(store)[:3])
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script" not in csp
    assert "/unsubscribe/" not in page.text and "https://digest.example.org/subscribe" in page.text


def test_the_archive_page_in_another_language(store, client):
    send(store)
    assert 'lang="fr"' in client.get("/archive/1?lang=fr").text
    assert 'lang="en"' in client.get("/archive/1?lang=xx").text


def test_index_lists_sent_issues_and_series(store, client):
    assert "No issue has been sent yet" in client.get("/archive/").text
    send(store)
    index = client.get("/archive/")
    assert index.status_code == 200 and 'href="/archive/1"' in index.text
    assert 'href="/archive/series/esa-security-defence"' in index.text
    assert client.get("/archive", follow_redirects=False).status_code == 308


def test_series_index_lists_that_series_items(store, client):
    send(store)
    series = next(s for s in store.issue.sections if s.type == "series")
    page = client.get(f"/archive/series/{series.series}")
    assert page.status_code == 200
    assert series.entries[0].item.title in page.text
    other = next(s for s in store.issue.sections if s.type == "media")
    assert other.entries[0].item.title not in page.text
    assert client.get("/archive/series/no-such-series").status_code == 404


def test_atom_feed_of_sent_issues(store, client):
    send(store)
    response = client.get("/archive/feed.atom")
    assert response.headers["content-type"].startswith("application/atom+xml")
    root = ET.fromstring(response.content)
    (entry,) = root.findall(f"{ATOM}entry")
    assert entry.find(f"{ATOM}link").get("href") == "https://digest.example.org/archive/1"
    assert titles(store)[0] in entry.find(f"{ATOM}summary").text
    parsed = feedparser.parse(response.content)
    assert not parsed.bozo and parsed.entries[0].link == "https://digest.example.org/archive/1"


def test_unknown_issue_is_404(client):
    assert client.get("/archive/99").status_code == 404


def test_the_archive_copy_is_a_page_of_the_site_with_nothing_personal(store, client):
    send(store)
    page = client.get("/archive/1?lang=fr").text
    head = page.split("</head>")[0]
    assert '<meta property="og:title" content="' in head and '<meta property="og:description"' in head
    assert 'type="application/rss+xml"' in head and 'type="application/atom+xml"' in head
    assert "S’abonner à cette lettre" in page and "https://digest.example.org/subscribe?lang=fr" in page
    for personal in ("Bonjour", "Afficher dans votre navigateur", "parce que vous", "Gérer vos préférences"):
        assert personal not in page, personal
    english = client.get("/archive/1").text
    for personal in ("Hello", "View in your browser", "because you subscribed", "Unsubscribe"):
        assert personal not in english, personal
    assert 'href="?lang=de"' in english and "Subscribe to this digest" in english


def test_rss_and_series_feeds_with_autodiscovery(store, client):
    send(store)
    rss = feedparser.parse(client.get("/archive/feed.rss").content)
    assert not rss.bozo and rss.version == "rss20"
    assert rss.entries[0].link == "https://digest.example.org/archive/1" and titles(store)[0] in rss.entries[0].summary
    for kind in ("atom", "rss"):
        series = feedparser.parse(client.get(f"/archive/series/esa-security-defence/feed.{kind}").content)
        assert not series.bozo and len(series.entries) == 1 and "Security" in series.feed.title
    assert client.get("/archive/series/no-such-series/feed.rss").status_code == 404
    index = client.get("/archive/").text
    assert 'type="application/rss+xml"' in index and archive_feed_link("series/esa-security-defence/feed.rss") in \
        client.get("/archive/series/esa-security-defence").text


def archive_feed_link(path: str) -> str:
    return f'href="/archive/{path}"'
