"""Every admin page in headless Chromium, light and dark, at 1280 and 390 px: axe-core finds no serious
or critical problem, and at 390 px nothing makes the page scroll sideways."""

from __future__ import annotations

import pytest
from admin_fixtures import admin_store
from browser_checks import AXE, axe_problems, sideways_scroll, sign_in
from conftest import free_port, serving

from digest.web.app import create_app

pytestmark = pytest.mark.browser
PAGES = ["/admin/issues", "/admin/issues/1", "/admin/issues/1/report", "/admin/issues/1/progress",
         "/admin/feeds", "/admin/series", "/admin/subscribers", "/admin/runs", "/admin/schedule", "/admin/branding",
         "/admin/reading", "/admin/archive", "/admin/accounts", "/admin/audit", "/admin/no-such-page"]


@pytest.fixture
def served(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "browser-pages-secret")
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    port = free_port()
    store = admin_store(tmp_path, sqlite_url, web={"base_url": f"http://127.0.0.1:{port}"})
    with serving(create_app(store.settings, store.engine), port):
        yield f"http://127.0.0.1:{port}"




@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci in tests/)")
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_admin_page_in_light_and_dark_at_desktop_and_phone_width(browser, served, scheme, artefacts):
    found: dict[str, list[str]] = {}
    for width in (1280, 390):
        context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme, bypass_csp=True)
        try:
            page = context.new_page()
            page.goto(f"{served}/admin/login")
            found[f"login {width}"] = axe_problems(page)
            sign_in(page, served)
            for path in PAGES:
                page.goto(served + path)
                key = f"{path} {width}"
                found[key] = axe_problems(page)
                if width == 390:
                    wide = sideways_scroll(page)
                    if wide > 0:
                        found[key].append(f"the page scrolls sideways by {wide}px")
            page.goto(f"{served}/admin/issues")
            page.screenshot(path=str(artefacts / f"admin-issues-{scheme}-{width}.png"), full_page=True)
        finally:
            context.close()
    assert {k: v for k, v in found.items() if v} == {}


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci in tests/)")
def test_the_public_pages_and_the_archive_in_light_and_dark(browser, served, tmp_path, artefacts):
    # served's store holds draft 1: send it (the ledger is the delivery tests' business) so it is public.
    from digest.models import IssueStatus
    from digest.store import open_store
    from digest.store.issues import approve_issue, get_issue, set_status

    engine = open_store(f"sqlite:///{tmp_path / 'digest.db'}")
    approve_issue(engine, 1, by="Anna", version=get_issue(engine, 1).version)
    set_status(engine, 1, IssueStatus.SENDING)
    set_status(engine, 1, IssueStatus.SENT)
    found: dict[str, list[str]] = {}
    for scheme in ("light", "dark"):
        for width in (1280, 390):
            context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme,
                                          bypass_csp=True)
            page = context.new_page()
            for path in ("/", "/?lang=de", "/archive/", "/archive/1", "/archive/1?lang=fr",
                         "/archive/series/esa-security-defence", "/no/such/page"):
                page.goto(served + path)
                key = f"{path} {scheme} {width}"
                found[key] = axe_problems(page)
                if width == 390:
                    wide = sideways_scroll(page)
                    if wide > 0:
                        found[key].append(f"the page scrolls sideways by {wide}px")
            page.goto(served + "/archive/1")
            page.screenshot(path=str(artefacts / f"archive-issue-{scheme}-{width}.png"))
            context.close()
    assert {k: v for k, v in found.items() if v} == {}
