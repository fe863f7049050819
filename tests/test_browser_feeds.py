"""The admin's feeds page in headless Chromium, on a store-managed site: add a feed after a test fetch of a
real feed served over loopback, save a failing one only on confirmation, import OPML, pause, rename,
remove; a reload after each form changes nothing; axe-core finds nothing serious or critical."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from admin_fixtures import PASSWORD_HASH
from browser_checks import AXE, axe_problems, sign_in
from conftest import free_port, make_settings, serving
from http_feed_server import FeedServer, static, status

from digest.pipeline.feeds import list_feeds
from digest.store import open_store
from digest.web.app import create_app

pytestmark = pytest.mark.browser
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def feeds_server():
    srv = FeedServer().start()
    srv.routes["/publications"] = static((DATA / "feeds" / "wordpress-rss.xml").read_bytes())
    srv.routes["/gone"] = status(404)
    yield srv
    srv.stop()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(base URL, settings, engine) of a store-managed site (no [[feeds]]) served by uvicorn in a thread."""
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    monkeypatch.setenv("DIGEST_SECRET", "browser-test-secret")
    port = free_port()
    settings = make_settings(tmp_path, web={"base_url": f"http://127.0.0.1:{port}", "admin_password_hash": PASSWORD_HASH},
                             fetch={"retries": 0, "deadline": 5})
    engine = open_store(settings.store.url)
    with serving(create_app(settings, engine), port):
        yield settings.web.base_url, settings, engine
    engine.dispose()


def stored(settings, engine) -> list[tuple[str, bool]]:
    return [(e.feed.name, e.paused) for e in list_feeds(settings, engine)]



def test_manage_feeds_in_the_browser(browser, served, feeds_server, artefacts):
    base, settings, engine = served
    # axe is injected as a script, which the pages' CSP rightly forbids: bypass it for this test only.
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=AXE.exists())
    page = context.new_page()
    problems: dict[str, list] = {}

    def check(name: str) -> None:
        if AXE.exists():
            found = axe_problems(page)
            if found:
                problems[name] = found
        page.screenshot(path=str(artefacts / f"admin-{name}.png"), full_page=True)

    try:
        sign_in(page, base, "/admin/feeds")
        page.get_by_text("No feeds yet").wait_for()
        check("feeds-empty")

        # Add a real feed: the test fetch shows what would be stored before anything is saved.
        page.fill("#feed-url", feeds_server.url("/publications"))
        page.fill("#feed-name", "Publications")
        page.select_option("#feed-kind", "article")
        page.click("#test-feed")
        page.get_by_text("The test fetch worked", exact=True).wait_for()
        assert int(page.inner_text("#trial-items")) > 0
        assert "European Strategic Autonomy series – Security & Defence" in page.inner_text("#trial")  # a series match
        assert stored(settings, engine) == []
        check("feed-test")
        page.click("#save-feed")
        page.get_by_text("Feed added.").wait_for()
        page.reload()
        assert stored(settings, engine) == [("Publications", False)]

        # A failing URL: the reason is shown, and saving needs the explicit box.
        page.fill("#feed-url", feeds_server.url("/gone"))
        page.fill("#feed-name", "Gone")
        page.click("#test-feed")
        page.get_by_text("The test fetch failed", exact=True).wait_for()
        assert "HTTP 404" in page.inner_text("#trial-reason")
        check("feed-test-failed")
        page.click("#save-feed")  # the box is required: nothing is sent
        assert stored(settings, engine) == [("Publications", False)]
        page.check("#confirm-failed")
        page.click("#save-feed")
        page.get_by_text("Feed added.").wait_for()
        assert stored(settings, engine) == [("Publications", False), ("Gone", False)]

        # Import an OPML file: the good outlines are added, the bad ones listed by line.
        page.set_input_files("#opml-file", str(DATA / "opml" / "bad-lines.opml"))
        page.click("#import-opml")
        page.get_by_text("OPML import: 2 feeds added, 7 lines skipped.").wait_for()
        listed = page.inner_text("#import-problems")
        assert "line 6:" in listed and "line 12: the name 'Good one' is taken by line 5" in listed
        check("feeds-imported")
        page.reload()
        assert len(stored(settings, engine)) == 4

        # Pause, rename, remove (after a confirmation); each reload repeats nothing.
        page.locator("form[action='/admin/feeds/pause']", has=page.locator("input[value='Gone']")).locator("button").click()
        page.get_by_text("Feed paused").wait_for()
        page.reload()
        assert ("Gone", True) in stored(settings, engine)
        row = page.locator("tr", has_text="Second good")
        row.locator("summary", has_text="Rename").click()
        row.locator("input[name=new_name]").fill("Second feed")
        row.locator("button", has_text="Rename").click()
        page.get_by_text("Feed renamed.").wait_for()
        page.locator("tr", has_text="Gone").locator("button", has_text="Remove").click()
        page.get_by_text("Remove “Gone”?").wait_for()
        check("feed-remove")
        page.click("#confirm-remove")
        page.get_by_text("Feed removed.").wait_for()
        page.reload()
        assert stored(settings, engine) == [("Publications", False), ("Good one", False), ("Second feed", False)]
        check("feeds")

        # Export: an OPML download that lists them.
        with page.expect_download() as download:
            page.click("#export-opml")
        text = Path(download.value.path()).read_text(encoding="utf-8")
        assert text.count("<outline ") == 3 and 'text="Second feed"' in text
    finally:
        context.close()
    (artefacts / "axe-admin-feeds.json").write_text(json.dumps(problems, indent=2), encoding="utf-8")
    assert problems == {}


def test_a_web_page_address_leads_to_the_feed_it_announces(browser, served, feeds_server):
    base, settings, engine = served
    page_html = (DATA / "feeds" / "html-page.html").read_bytes()
    feeds_server.routes["/site/"] = static(page_html.replace(b"https://www.example.org/publications/feed/", b"/publications"),
                                           content_type="text/html; charset=utf-8")
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    try:
        sign_in(page, base, "/admin/feeds")
        page.fill("#feed-url", feeds_server.url("/site/"))
        page.fill("#feed-name", "Publications")
        page.click("#test-feed")
        page.get_by_text("The test fetch failed", exact=True).wait_for()
        assert f"did you mean {feeds_server.url('/publications')}?" in page.inner_text("#trial-reason")
        page.click("#try-suggestion")
        page.get_by_text("The test fetch worked", exact=True).wait_for()
        assert feeds_server.url("/publications") in page.inner_text(".url")
        page.click("#save-feed")
        page.get_by_text("Feed added.").wait_for()
        assert [e.feed.url for e in list_feeds(settings, engine)] == [feeds_server.url("/publications")]
    finally:
        context.close()


def test_the_feeds_page_at_phone_width(browser, served, artefacts):
    base, settings, engine = served
    context = browser.new_context(viewport={"width": 390, "height": 900}, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, base, "/admin/feeds")
        page.get_by_text("Add a feed").wait_for()
        assert page.locator("#test-feed").is_visible() and page.locator("#import-opml").is_visible()
        page.set_input_files("#opml-file", str(DATA / "opml" / "good.opml"))
        page.click("#import-opml")
        page.get_by_text("OPML import: 5 feeds added, 0 lines skipped.").wait_for()
        # The page's own content never scrolls sideways (the shared top bar is the layout's business).
        widest = page.evaluate("Math.max(...[...document.querySelectorAll('main *')].map(e => e.getBoundingClientRect().right))")
        assert widest <= 390 + 1
        page.screenshot(path=str(artefacts / "admin-feeds-phone.png"), full_page=True)
        assert len(stored(settings, engine)) == 5
    finally:
        context.close()
