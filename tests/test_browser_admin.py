"""The admin app in headless Chromium against a real uvicorn server and a real SMTP server:
sign in, open the draft, switch width and format, preview as a subscriber, edit, approve, send a test.
Screenshots of the issue page land in tests/artefacts/."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from admin_fixtures import PASSWORD, admin_store
from browser_checks import sign_in
from conftest import free_port, serving

from digest.models import IssueStatus
from digest.store.issues import get_summary
from digest.web.app import create_app

if TYPE_CHECKING:  # Playwright loads in the browser fixture only (conftest), so collection never needs it
    from playwright.sync_api import Frame, Locator

pytestmark = pytest.mark.browser


def visible(frame: Frame, text: str) -> Locator:
    """The first visible element with this text (emails carry hidden preheader copies)."""
    return frame.locator("*:visible", has_text=text).last


@pytest.fixture
def server(tmp_path, sqlite_url, smtp_server, monkeypatch):
    """The web app on 127.0.0.1 (so the session cookie may travel over plain http), mailing via aiosmtpd."""
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    port = free_port()
    store = admin_store(tmp_path, sqlite_url, web={"base_url": f"http://127.0.0.1:{port}"},
                        delivery={"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port}})
    with serving(create_app(store.settings, store.engine), port) as base:
        yield store, base


def test_review_a_draft_in_the_browser(server, browser, smtp_server, artefacts):
    store, base = server
    title = store.issue.sections[0].entries[0].item.title
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None)
    try:
        # Signing in from the emailed link comes back to the draft.
        page.goto(f"{base}/admin/issues/1")
        assert page.locator("input[name=password]").is_visible()
        assert title not in page.content()
        page.fill("#name", "Anna")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{base}/admin/issues/1")
        preview = page.frame_locator("#preview")
        visible(preview, title).wait_for()
        page.screenshot(path=str(artefacts / "admin-issue-desktop.png"), full_page=True)
        # The preview is as tall as the edition: no scroll bar of its own.
        page.wait_for_function("() => { const f = document.getElementById('preview'); const d = f.contentDocument;"
                               " return d && f.clientHeight >= d.documentElement.scrollHeight - 2; }")

        # Mobile width.
        page.click("#view-mobile")
        page.wait_for_url("**view=mobile**")
        assert round(page.locator("#preview").bounding_box()["width"]) == 390
        visible(preview, title).wait_for()
        page.screenshot(path=str(artefacts / "admin-issue-mobile-preview.png"), full_page=True)

        # The text version.
        page.click("#format-text")
        page.wait_for_url("**format=text**")
        preview.locator("body").get_by_text(title).first.wait_for()
        assert "<table" not in page.frame(url=lambda u: "/preview" in u).content().split("<body")[1][:20000]

        # As a given subscriber: her real edition (German, her name).
        page.click("#format-html")
        page.fill("#subscriber", "anna@example.org")
        page.click("#show-preview")
        page.wait_for_url("**subscriber=anna%40example.org**")
        visible(preview, "Hallo Anna,").wait_for()  # her first name (render.greeting)
        assert "anna@example.org's edition" in page.inner_text("main")

        # Edit the intro.
        page.fill("#intro", "Welcome to this week's digest from the browser test.")
        page.click("#save-editorial")
        page.get_by_text("Saved.").wait_for()
        visible(preview, "Welcome to this week's digest from the browser test.").wait_for()

        # Approve the version on screen.
        page.click("#approve")
        page.get_by_text("Approved.").wait_for()
        summary = get_summary(store.engine, 1)
        assert summary.status == IssueStatus.APPROVED and summary.approved_by == "Anna"

        # Send a test that the real SMTP server receives.
        page.fill("#test-address", "staff@example.org")
        page.click("#send-test")
        page.get_by_text("Test sent to staff@example.org").wait_for()
        (message,) = smtp_server.for_recipient("staff@example.org")
        assert "Welcome to this week" in message.get_body(("html",)).get_content()
        assert blocked == []  # the pages need nothing their CSP forbids
    finally:
        context.close()


def test_issue_page_at_phone_width(server, browser, artefacts):
    store, base = server
    context = browser.new_context(viewport={"width": 430, "height": 900}, is_mobile=True)
    page = context.new_page()
    try:
        sign_in(page, base)
        page.goto(f"{base}/admin/issues/1?view=mobile")
        visible(page.frame_locator("#preview"), store.issue.sections[0].entries[0].item.title).wait_for()
        assert page.evaluate("document.documentElement.scrollWidth") <= 430 + 1  # no sideways scrolling
        page.screenshot(path=str(artefacts / "admin-issue-mobile.png"), full_page=True)
        for path, name in (("/admin/subscribers", "admin-subscribers"), ("/admin/feeds", "admin-feeds")):
            page.goto(base + path)
            page.screenshot(path=str(artefacts / f"{name}-mobile.png"), full_page=True)
    finally:
        context.close()


def test_overview_pages_at_desktop_width(server, browser, artefacts):
    store, base = server
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    try:
        sign_in(page, base)
        page.screenshot(path=str(artefacts / "admin-issues.png"), full_page=True)
        for path, name in (("/admin/subscribers", "admin-subscribers"), ("/admin/feeds", "admin-feeds"),
                           ("/admin/runs", "admin-schedule")):
            page.goto(base + path)
            assert page.locator("h1").count() == 1
            page.screenshot(path=str(artefacts / f"{name}.png"), full_page=True)
    finally:
        context.close()
