"""The admin's subscribers page in headless Chromium: import a Mailchimp-style export after a dry run, search
and filter, erase after confirmation; a reload after each form changes nothing; axe-core finds nothing
serious or critical in light and dark, at 1280 and 390 px, and nothing scrolls sideways at 390 px."""

from __future__ import annotations

from pathlib import Path

import pytest
from admin_fixtures import admin_store
from browser_checks import AXE, axe_problems, sideways_scroll, sign_in
from conftest import free_port, serving

from digest.store.subscribers import get_subscriber
from digest.web.app import create_app

pytestmark = pytest.mark.browser
LISTS = Path(__file__).resolve().parent / "data" / "subscribers"


@pytest.fixture(autouse=True)
def _uploads_held_in_tmp_path(tmp_path, monkeypatch):
    """Held uploads go to this test's folder, not the system's temporary folder."""
    from digest.pipeline import subscriber_import

    monkeypatch.setattr(subscriber_import, "_hold_root", lambda: tmp_path / "held-imports")


@pytest.fixture
def served(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "browser-subscribers-secret")
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    port = free_port()
    store = admin_store(tmp_path, sqlite_url, build=False, web={"base_url": f"http://127.0.0.1:{port}"})
    with serving(create_app(store.settings, store.engine), port):
        yield f"http://127.0.0.1:{port}", store


def serious(page) -> list[str]:
    return axe_problems(page) if AXE.exists() else []


def count(store) -> int:
    from digest.pipeline.subscribers import list_subscribers

    return sum(1 for _ in list_subscribers(store.settings, store.engine))


def test_import_search_and_erase_in_the_browser(browser, served, artefacts):
    base, store = served
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=AXE.exists())
    page = context.new_page()
    problems: dict[str, list[str]] = {}
    try:
        sign_in(page, base, "/admin/subscribers")
        # Import: the upload ends on the dry run (a GET); reloading it writes nothing.
        page.set_input_files("#import-file", str(LISTS / "mailchimp_subscribed.csv"))
        page.click("#dry-run")
        page.wait_for_url("**/admin/subscribers/import/*")
        assert page.inner_text("#count-added") == "2" and page.inner_text("#count-rejected") == "2"
        problems["dry run"] = serious(page)
        page.screenshot(path=str(artefacts / "admin-subscribers-dry-run.png"), full_page=True)
        page.reload()
        assert count(store) == 3 and get_subscriber(store.engine, "ana.silva@example.org") is None
        page.click("#apply-import")
        page.wait_for_url(f"{base}/admin/subscribers?*")
        assert "2 added" in page.inner_text("main")
        assert count(store) == 5
        page.reload()  # the landing page is a GET: nothing is imported twice
        assert count(store) == 5 and "2 added" in page.inner_text("main")

        # Search and filter, then one subscriber's history.
        page.fill("#q", "silva")
        page.click("#search")
        assert "1 subscriber matches" in page.inner_text("#found-count")
        page.click("text=ana.silva@example.org")
        assert "Ana Silva" in page.inner_text("main") and "203.0.113.7" in page.inner_text("#consent")
        problems["history"] = serious(page)
        page.goto(f"{base}/admin/subscribers")
        page.select_option("#f-language", "fr")
        page.click("#search")
        assert "carla@example.org" in page.inner_text("#found") and "bob@example.org" not in page.inner_text("#found")

        # Add, then unsubscribe: each form ends on a GET, so a reload adds or changes nothing.
        page.goto(f"{base}/admin/subscribers")
        page.fill("#add-email", "dora@example.org")
        page.fill("#add-name", "Dora")
        page.click("#add-subscriber")
        page.wait_for_url(f"{base}/admin/subscribers/*?done=added")
        assert "Subscriber added" in page.inner_text("main") and count(store) == 6
        page.reload()
        assert count(store) == 6
        page.click("#unsubscribe")
        page.wait_for_url("**done=unsubscribed")
        assert get_subscriber(store.engine, "dora@example.org").status.value == "unsubscribed"
        assert page.inner_text("#status") == "unsubscribed"
        page.reload()
        assert "Unsubscribed" in page.inner_text("main")

        # Erase: a confirmation page first; after it, a reload changes nothing.
        ana = get_subscriber(store.engine, "ana.silva@example.org")
        page.goto(f"{base}/admin/subscribers/{ana.id}")
        page.click("#erase")
        page.wait_for_url(f"{base}/admin/subscribers/{ana.id}/erase*")
        problems["erase"] = serious(page)
        assert get_subscriber(store.engine, ana.id) is not None
        page.check("#confirm-box")
        page.click("#confirm-erase")
        page.wait_for_url(f"{base}/admin/subscribers?done=erased")
        assert get_subscriber(store.engine, "ana.silva@example.org") is None and count(store) == 5
        page.reload()
        assert count(store) == 5 and "Erased" in page.inner_text("main")
    finally:
        context.close()
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci in tests/)")
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_subscriber_pages_in_light_and_dark_at_desktop_and_phone_width(browser, served, scheme, artefacts):
    base, store = served
    anna = get_subscriber(store.engine, "anna@example.org")
    found: dict[str, list[str]] = {}
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme, bypass_csp=True)
        try:
            page = context.new_page()
            sign_in(page, base, "/admin/subscribers")
            page.set_input_files("#import-file", str(LISTS / "listmonk.csv"))
            page.click("#dry-run")
            page.wait_for_url("**/admin/subscribers/import/*")
            dry_run = page.url
            pages = {"list": f"{base}/admin/subscribers", "filtered": f"{base}/admin/subscribers?language=de&status=confirmed",
                     "history": f"{base}/admin/subscribers/{anna.id}", "erase": f"{base}/admin/subscribers/{anna.id}/erase",
                     "dry-run": dry_run}
            for name, url in pages.items():
                page.goto(url)
                page.screenshot(path=str(artefacts / f"admin-subscribers-{name}-{scheme}-{width}.png"), full_page=True)
                key = f"{url.removeprefix(base)} {width}"
                found[key] = serious(page)
                if width == 390:
                    wide = sideways_scroll(page)
                    if wide > 0:
                        found[key].append(f"the page scrolls sideways by {wide}px")
        finally:
            context.close()
    assert {k: v for k, v in found.items() if v} == {}
