"""The admin's reading page (click counts) in headless Chromium, light and dark, at 1280 and 390 px:
axe-core finds no serious or critical problem, and at 390 px nothing makes the page scroll sideways."""

from __future__ import annotations

import re

import pytest
from admin_fixtures import admin_store
from browser_checks import AXE, axe_problems, sideways_scroll, sign_in
from conftest import free_port, serving

from digest.models import IssueStatus
from digest.pipeline.clicks import follow_click
from digest.pipeline.editions import Everyone, edition_for
from digest.store.issues import approve_issue, get_issue, set_status
from digest.web.app import create_app

pytestmark = pytest.mark.browser
PAGES = ["/admin/reading", "/admin/reading/1"]


@pytest.fixture
def served(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "browser-reading-secret")
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    store = admin_store(tmp_path, sqlite_url, web={"base_url": base, "count_clicks": True})
    approve_issue(store.engine, 1, by="Anna", version=get_issue(store.engine, 1).version)
    set_status(store.engine, 1, IssueStatus.SENDING)
    set_status(store.engine, 1, IssueStatus.SENT)
    # Clicks in every language, some links more than others, so every table of the page has rows.
    for n, language in enumerate(("en", "fr", "de")):
        html = edition_for(store.settings, store.engine, 1, Everyone(language)).html
        for index, (number, lang, link, signature) in enumerate(re.findall(r"/c/(\d+)/(\w\w)/(\w{16})/([\w-]{22})", html)):
            for _ in range(1 + (index + n) % 3):
                assert follow_click(store.settings, store.engine, int(number), lang, link, signature)
    with serving(create_app(store.settings, store.engine), port):
        yield base


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci in tests/)")
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_reading_page_in_light_and_dark_at_desktop_and_phone_width(browser, served, scheme, artefacts):
    found: dict[str, list[str]] = {}
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme, bypass_csp=True)
        try:
            page = context.new_page()
            sign_in(page, served)
            for path in PAGES:
                page.goto(served + path)
                assert page.locator("h1").first.inner_text().startswith("Reading")
                assert page.locator("td.num").count() > 0  # the counts are there, not an empty page
                key = f"{path} {width}"
                found[key] = axe_problems(page)
                wide = sideways_scroll(page)
                if wide > 0:
                    found[key].append(f"the page scrolls sideways by {wide}px")
                name = "reading" if path == "/admin/reading" else "reading-issue"
                page.screenshot(path=str(artefacts / f"admin-{name}-{scheme}-{width}.png"), full_page=True)
        finally:
            context.close()
    assert {k: v for k, v in found.items() if v} == {}
