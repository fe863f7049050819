"""Counted links (web.count_clicks): the signed redirect on the site's own domain, on SQLite and PostgreSQL.

The redirect leads only where its issue led and refuses forged, foreign and made-up links; a click
changes one count and nothing else in the store; concurrent clicks are all counted; with the setting
off (the default), editions are exactly what they were. The admin's reading page and the API read the counts.
"""

from __future__ import annotations

import re
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from html import escape, unescape

import pytest
from admin_fixtures import admin_store, log_in
from sqlalchemy import select
from starlette.testclient import TestClient
from test_api import conforms

from digest import clicks
from digest.models import IssueStatus
from digest.pipeline import accounts, tokens
from digest.pipeline.clicks import follow_click, issue_links, issue_reading, reading_overview
from digest.pipeline.editions import Everyone, Reader, Visitor, edition_for
from digest.pipeline.sending import send_test
from digest.store.issues import approve_issue, get_issue, set_status
from digest.store.schema import click_counts, metadata
from digest.web.app import create_app

BASE = "https://news.example.org"
COUNTED = re.compile(re.escape(BASE) + r"/c/(\d+)/([a-z]{2})/([0-9a-f]{16})/([A-Za-z0-9_-]{22})")
BROWSER = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120 Safari/537.36"}


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "clicks-secret")


def make_site(tmp_path, store_url, count=True, status=IssueStatus.SENDING, **sections):
    store = admin_store(tmp_path, store_url, web={"base_url": BASE, "count_clicks": count}, **sections)
    if status != IssueStatus.DRAFT:
        approve_issue(store.engine, 1, by="Anna", version=get_issue(store.engine, 1).version)
        if status in (IssueStatus.SENDING, IssueStatus.SENT):
            set_status(store.engine, 1, IssueStatus.SENDING)
        if status == IssueStatus.SENT:
            set_status(store.engine, 1, IssueStatus.SENT)
    return store


@pytest.fixture
def site(tmp_path, store_url):
    store = make_site(tmp_path, store_url)
    with TestClient(create_app(store.settings, store.engine), base_url=BASE) as client:
        yield store, client


def hrefs(html: str) -> list[str]:
    return re.findall(r'href="([^"]+)"', html)


def counted_links(html: str) -> list[str]:
    return [h for h in hrefs(html) if COUNTED.fullmatch(h)]


def path_of(url: str) -> str:
    return url.removeprefix(BASE)


def table_rows(engine) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: what the store holds."""
    with engine.connect() as conn:
        return {t.name: sorted((tuple(map(repr, r)) for r in conn.execute(select(t))), key=str)
                for t in metadata.sorted_tables}


def counts(engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        return {(r.link, r.language): r.clicks for r in conn.execute(select(click_counts))}


# --- pure: ids and signatures -----------------------------------------------------------------------

def test_link_ids_are_stable_and_signatures_bind_issue_language_and_link():
    link = clicks.link_id("esa-security-defence", "key-1", "https://www.example.org/a")
    assert re.fullmatch(r"[0-9a-f]{16}", link)
    assert link == clicks.link_id("esa-security-defence", "key-1", "https://www.example.org/a")
    assert link != clicks.link_id("esa-security-defence", "key-2", "https://www.example.org/a")
    assert link != clicks.link_id("media", "key-1", "https://www.example.org/a")
    # The parts cannot be shifted into one another.
    assert clicks.link_id("a|b", "", "u") != clicks.link_id("a", "b|", "u")
    keys = (b"new-key", b"old-key")
    signature = clicks.sign_click(keys, 7, "fr", link)
    assert clicks.genuine_click(keys, 7, "fr", link, signature)
    assert clicks.genuine_click((b"newer", *keys), 7, "fr", link, clicks.sign_click(keys[1:], 7, "fr", link))
    for issue, language, other, sig in ((8, "fr", link, signature), (7, "de", link, signature),
                                        (7, "fr", link[::-1], signature), (7, "fr", link, signature[::-1]),
                                        (7, "xx", link, clicks.sign_click(keys, 7, "xx", link)),
                                        (7, "fr", link.upper(), signature), (7, "fr", link, signature[:-1]),
                                        (7, "fr", link, ""), (7, "fr", "", signature)):
        assert not clicks.genuine_click(keys, issue, language, other, sig), (issue, language, other, sig)
    assert not clicks.genuine_click((b"another-site",), 7, "fr", link, signature)


# --- which editions count ---------------------------------------------------------------------------

def test_count_clicks_off_leaves_every_link_as_it_was(tmp_path, sqlite_url):
    off = make_site(tmp_path, sqlite_url, count=False)
    assert off.settings.web.count_clicks is False
    html = edition_for(off.settings, off.engine, 1, Everyone("en")).html
    assert "/c/" not in html and not counted_links(html)
    # Counting on changes the links and nothing else: put each target back and it is the same document.
    on = replace(off.settings, web=replace(off.settings.web, count_clicks=True))
    counted = edition_for(on, off.engine, 1, Everyone("en")).html
    targets = issue_links(on, get_issue(off.engine, 1))
    assert counted_links(counted)
    restored = COUNTED.sub(lambda m: escape(targets[m.group(3)].url), counted)
    assert restored == html


def test_drafts_tests_previews_and_the_archive_link_straight_to_their_targets(tmp_path, sqlite_url, smtp_server):
    (tmp_path / "draft").mkdir()
    draft = make_site(tmp_path / "draft", f"sqlite:///{tmp_path / 'draft' / 'digest.db'}", status=IssueStatus.DRAFT)
    assert not counted_links(edition_for(draft.settings, draft.engine, 1, Everyone("en")).html)
    store = make_site(tmp_path, sqlite_url, status=IssueStatus.SENT,
                      delivery={"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port}})
    assert counted_links(edition_for(store.settings, store.engine, 1, Reader("bob@example.org")).html)
    assert not counted_links(edition_for(store.settings, store.engine, 1, Visitor("fr")).html)
    assert not counted_links(edition_for(clicks.uncounted(store.settings), store.engine, 1, Everyone("en")).html)
    send_test(store.settings, store.engine, 1, ["staff@example.org"])
    (message,) = smtp_server.messages()
    body = message.get_body(("html",)).get_content()
    assert "[Test]" in message["Subject"] and "/c/" not in body and "https://www.example.org/" in body


# --- the redirect -----------------------------------------------------------------------------------

@pytest.mark.parametrize("utm", [False, True])
def test_every_counted_link_leads_where_the_uncounted_edition_leads(tmp_path, sqlite_url, utm):
    store = make_site(tmp_path, sqlite_url, delivery={"utm": utm})
    client = TestClient(create_app(store.settings, store.engine), base_url=BASE)
    off = replace(store.settings, web=replace(store.settings.web, count_clicks=False))
    for language in ("en", "fr", "de"):
        counted = counted_links(edition_for(store.settings, store.engine, 1, Everyone(language)).html)
        plain = {unescape(h) for h in hrefs(edition_for(off, store.engine, 1, Everyone(language)).html)}
        assert counted
        for link in counted:
            answer = client.get(path_of(link), headers=BROWSER, follow_redirects=False)
            assert answer.status_code == 302, link
            assert answer.headers["location"] in plain
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["referrer-policy"] == "no-referrer"
            assert COUNTED.fullmatch(link).group(2) == language
            assert ("utm_campaign=digest-1" in answer.headers["location"]) == (
                utm and answer.headers["location"].startswith("https://www.example.org/"))
    assert sum(counts(store.engine).values()) > 0


def test_forged_foreign_and_made_up_links_get_the_404_page_and_store_nothing(site):
    store, client = site
    link = counted_links(edition_for(store.settings, store.engine, 1, Everyone("en")).html)[0]
    number, language, link_id, signature = COUNTED.fullmatch(link).groups()
    keys = clicks.click_links(store.settings, get_issue(store.engine, 1), "en").keys
    evil = "https://evil.example.net/phish"
    made_up = clicks.link_id("esa-security-defence", "", evil)  # a genuine signature for a URL not in the issue
    before = table_rows(store.engine)
    for path in (f"/c/{number}/{language}/{link_id}/{'A' * 22}",  # forged signature
                 f"/c/{number}/de/{link_id}/{signature}",  # the signature of another language
                 f"/c/2/{language}/{link_id}/{clicks.sign_click(keys, 1, language, link_id)}",  # another issue
                 f"/c/2/{language}/{link_id}/{clicks.sign_click(keys, 2, language, link_id)}",  # no such issue
                 f"/c/1/en/{made_up}/{clicks.sign_click(keys, 1, 'en', made_up)}",
                 f"/c/1/en/{link_id}/{signature}?to={evil}",
                 f"/c/1/xx/{link_id}/{clicks.sign_click(keys, 1, 'xx', link_id)}",
                 f"/c/{10**30}/en/{link_id}/{signature}", f"/c/1/en/{link_id}", f"/c/1/en/{link_id}/{signature}/more"):
        answer = client.get(path, headers=BROWSER, follow_redirects=False)
        if path.startswith(f"/c/1/en/{link_id}/{signature}?"):  # a genuine link: the query is ignored
            assert answer.headers["location"] != evil and "evil" not in answer.headers["location"]
            continue
        assert answer.status_code == 404, path
        assert "location" not in answer.headers
        assert "text/html" in answer.headers["content-type"] and store.settings.site.name in answer.text
    after = table_rows(store.engine)
    # The one genuine click changed one count; nothing else changed, and nothing was refused into the store.
    assert {k: v for k, v in after.items() if k != "click_counts"} == {k: v for k, v in before.items() if k != "click_counts"}
    assert counts(store.engine) == {(link_id, "en"): 1}


def test_an_issue_not_yet_sending_has_no_counted_links(tmp_path, sqlite_url):
    store = make_site(tmp_path, sqlite_url, status=IssueStatus.APPROVED)
    issue = get_issue(store.engine, 1)
    link = next(iter(issue_links(store.settings, issue)))
    keys = clicks.click_links(store.settings, replace(issue, status=IssueStatus.SENT), "en").keys
    assert follow_click(store.settings, store.engine, 1, "en", link, clicks.sign_click(keys, 1, "en", link)) is None
    assert counts(store.engine) == {}


# --- what is stored ---------------------------------------------------------------------------------

def test_a_click_stores_a_count_and_nothing_about_the_reader(site):
    store, client = site
    html = edition_for(store.settings, store.engine, 1, Reader("anna@example.org")).html  # Anna reads German
    first, second = counted_links(html)[:2]
    before = table_rows(store.engine)
    reader = {**BROWSER, "x-forwarded-for": "198.51.100.23"}
    for link in (first, first, first, second):
        answer = client.get(path_of(link), headers=reader, follow_redirects=False)
        assert answer.status_code == 302 and "set-cookie" not in answer.headers
    assert "set-cookie" not in client.get(path_of(first)[:-3] + "AAA", headers=BROWSER).headers  # nor a 404
    after = table_rows(store.engine)
    changed = {name for name in after if after[name] != before[name]}
    assert changed == {"click_counts"}
    assert [c.name for c in click_counts.columns] == ["issue_number", "link", "language", "section", "item_key",
                                                      "url", "clicks"]
    rows = after["click_counts"]
    assert len(rows) == 2
    stored = " ".join(map(str, rows))
    for personal in ("anna", "Anna", "198.51.100", "testclient", "Mozilla", "Chrome"):
        assert personal not in stored
    assert counts(store.engine) == {(COUNTED.fullmatch(first).group(3), "de"): 3,
                                    (COUNTED.fullmatch(second).group(3), "de"): 1}
    # Every reader of an edition gets the very same links: nothing in them names the reader.
    assert set(counted_links(html)) <= set(counted_links(edition_for(store.settings, store.engine, 1, Everyone("de")).html))


def test_head_requests_and_declared_machines_are_redirected_but_not_counted(site):
    store, client = site
    link = path_of(counted_links(edition_for(store.settings, store.engine, 1, Everyone("fr")).html)[0])
    assert client.head(link, headers=BROWSER, follow_redirects=False).status_code == 302
    for agent in ("Googlebot/2.1 (+http://www.google.com/bot.html)", "curl/8.5.0", "", "Slackbot-LinkExpanding 1.0"):
        assert client.get(link, headers={"user-agent": agent}, follow_redirects=False).status_code == 302
    assert counts(store.engine) == {}
    client.get(link, headers=BROWSER, follow_redirects=False)
    assert sum(counts(store.engine).values()) == 1


def test_turning_counting_off_keeps_sent_links_working_uncounted(tmp_path, store_url):
    store = make_site(tmp_path, store_url)
    link = path_of(counted_links(edition_for(store.settings, store.engine, 1, Everyone("en")).html)[0])
    off = replace(store.settings, web=replace(store.settings.web, count_clicks=False))
    with TestClient(create_app(off, store.engine), base_url=BASE) as client:
        answer = client.get(link, headers=BROWSER, follow_redirects=False)
    assert answer.status_code == 302 and answer.headers["location"].startswith("https://www.example.org/")
    assert counts(store.engine) == {}


def test_counts_add_up_per_link_and_language(tmp_path, store_url):
    store = make_site(tmp_path, store_url, status=IssueStatus.SENT)
    with TestClient(create_app(store.settings, store.engine), base_url=BASE) as client:
        english = counted_links(edition_for(store.settings, store.engine, 1, Everyone("en")).html)
        french = counted_links(edition_for(store.settings, store.engine, 1, Everyone("fr")).html)
        for link in (english[0], english[0], english[1], french[0]):
            assert client.get(path_of(link), headers=BROWSER, follow_redirects=False).status_code == 302
    found = counts(store.engine)
    assert found[(COUNTED.fullmatch(english[0]).group(3), "en")] == 2
    assert found[(COUNTED.fullmatch(english[1]).group(3), "en")] == 1
    assert found[(COUNTED.fullmatch(french[0]).group(3), "fr")] == 1
    reading = issue_reading(store.settings, store.engine, 1)
    assert reading.clicks == 4 and reading.status == "sent"
    assert all(link.title for link in reading.links)  # items by their title, series pages by their series


def test_series_pages_are_named_and_counted_for_their_series(site):
    store, client = site
    html = edition_for(store.settings, store.engine, 1, Everyone("en")).html
    issue = get_issue(store.engine, 1)
    targets = issue_links(store.settings, issue)
    series_page = next(link for link in counted_links(html)
                       if targets[COUNTED.fullmatch(link).group(3)].url == "https://www.example.org/series/security-defence/")
    client.get(path_of(series_page), headers=BROWSER, follow_redirects=False)
    overview = reading_overview(store.settings, store.engine, datetime.now(UTC))
    (read,) = overview.this_week
    assert read.title == "All publications: European Strategic Autonomy series – Security & Defence"
    assert read.section == "esa-security-defence"
    by_series = {s.series_id: s.clicks for s in overview.by_series}
    assert by_series == {"esa-security-defence": 1, "esa-economy-trade": 0, "esa-digital-technology": 0}


def test_concurrent_clicks_are_all_counted(tmp_path, store_url):
    store = make_site(tmp_path, store_url)
    links = counted_links(edition_for(store.settings, store.engine, 1, Everyone("en")).html)[:2]
    parts = [COUNTED.fullmatch(link).groups() for link in links]
    threads_per_link, clicks_per_thread = 4, 10
    errors: list[BaseException] = []
    start = threading.Barrier(threads_per_link * len(parts))

    def click(number: str, language: str, link: str, signature: str) -> None:
        try:
            start.wait()
            for _ in range(clicks_per_thread):
                assert follow_click(store.settings, store.engine, int(number), language, link, signature)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=click, args=p) for p in parts for _ in range(threads_per_link)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert counts(store.engine) == {(p[2], "en"): threads_per_link * clicks_per_thread for p in parts}


# --- the admin page and the API ---------------------------------------------------------------------

def test_the_reading_page_shows_most_read_per_week_series_and_issue(site):
    store, client = site
    links = counted_links(edition_for(store.settings, store.engine, 1, Everyone("de")).html)
    for link in links[:3] + links[:1]:
        client.get(path_of(link), headers=BROWSER, follow_redirects=False)
    overview = reading_overview(store.settings, store.engine, datetime.now(UTC))
    assert overview.counting and overview.this_week[0].clicks == 2 and overview.issues[0].clicks == 4
    assert [s.series_id for s in overview.by_series] == [s.id for s in store.settings.series]
    assert reading_overview(store.settings, store.engine, datetime.now(UTC) + timedelta(days=8)).this_week == []
    assert client.get("/admin/reading", follow_redirects=False).status_code in (302, 303, 401)  # signed out
    log_in(client)
    page = client.get("/admin/reading")
    assert page.status_code == 200 and "Most read this week" in page.text and "Most read over 12 weeks" in page.text
    assert overview.this_week[0].url in page.text and "DE 2" in page.text
    one = client.get("/admin/reading/1")
    assert one.status_code == 200 and "Every link clicked" in one.text and "4" in one.text
    assert client.get("/admin/reading/99").status_code == 404


def test_the_reading_page_says_when_counting_is_off(tmp_path, sqlite_url):
    store = make_site(tmp_path, sqlite_url, count=False)
    with TestClient(create_app(store.settings, store.engine), base_url=BASE) as client:
        log_in(client)
        page = client.get("/admin/reading")
    assert page.status_code == 200 and "Clicks are not being counted" in page.text


def test_the_api_reports_clicks_per_issue_and_most_read(site):
    store, client = site
    accounts.add_account(store.settings, store.engine, "editor@example.org", "editor", password="a long passphrase")
    token = tokens.issue_token(store.engine, "editor@example.org", name="reading").secret
    auth = {"authorization": f"Bearer {token}"}
    link = counted_links(edition_for(store.settings, store.engine, 1, Everyone("fr")).html)[0]
    client.get(path_of(link), headers=BROWSER, follow_redirects=False)
    issue = conforms(client.get("/api/v1/issues/1/clicks", headers=auth), "/api/v1/issues/{number}/clicks", "get")
    assert issue["clicks"] == 1 and issue["counting"] is True and issue["links"][0]["languages"] == {"fr": 1}
    reading = conforms(client.get("/api/v1/reading", headers=auth), "/api/v1/reading", "get")
    assert reading["this_week"][0]["clicks"] == 1 and reading["issues"][0]["number"] == 1
    missing = client.get("/api/v1/issues/99/clicks", headers=auth)
    assert missing.status_code == 404 and conforms(missing, "/api/v1/issues/{number}/clicks", "get")
    for path, spec in (("/api/v1/issues/1/clicks", "/api/v1/issues/{number}/clicks"), ("/api/v1/reading", "/api/v1/reading")):
        refused = client.get(path)
        assert refused.status_code == 401 and conforms(refused, spec, "get")


def test_staff_previews_link_straight_to_their_targets(site):
    store, client = site
    log_in(client)
    for query in ("lang=en", "lang=de", "subscriber=bob@example.org"):
        preview = client.get(f"/admin/issues/1/preview?{query}")
        assert preview.status_code == 200 and "https://www.example.org/" in preview.text
        assert not counted_links(preview.text), query
