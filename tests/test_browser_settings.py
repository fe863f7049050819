"""The admin's schedule and branding pages in headless Chromium: a schedule edit shows the next runs in plain
words; an accent colour below WCAG AA is refused with its contrast ratio; a preview of unsaved values
saves nothing; a logo upload is served and shown; a reload after every form changes nothing; axe-core
finds nothing serious or critical, light and dark, at 1280 and 390 px, with no sideways scrolling; a
provisioned site's pages are read-only."""

from __future__ import annotations

import json
import struct
import zlib
from datetime import UTC, datetime

import pytest
from admin_fixtures import admin_store
from browser_checks import AXE, axe_problems, sign_in
from conftest import free_port, serving

from digest.pipeline.managed import current_settings
from digest.pipeline.site_settings import branding_overview, schedule_overview
from digest.web.app import create_app

pytestmark = pytest.mark.browser


def png(width: int = 320, height: int = 80) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x1a\x5f\xb4" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def serve_site(tmp_path, monkeypatch, **sections):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    monkeypatch.setenv("DIGEST_SECRET", "browser-test-secret")
    port = free_port()
    store = admin_store(tmp_path, f"sqlite:///{tmp_path / 'digest.db'}",
                        web={"base_url": f"http://127.0.0.1:{port}"}, **sections)
    return store, port


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(base URL, settings, engine) of a store-managed site (no [schedule], no [branding]) with draft 1."""
    store, port = serve_site(tmp_path, monkeypatch)
    with serving(create_app(store.settings, store.engine), port):
        yield store.settings.web.base_url, store.settings, store.engine
    store.engine.dispose()


@pytest.fixture
def served_provisioned(tmp_path, monkeypatch):
    store, port = serve_site(tmp_path, monkeypatch, schedule={"cron": "0 8 * * tue", "send_cron": "0 10 * * tue"},
                             branding={"accent_color": "#0b6e4f"})
    with serving(create_app(store.settings, store.engine), port):
        yield store.settings.web.base_url, store.settings, store.engine
    store.engine.dispose()



def versions(settings, engine) -> tuple[int, int]:
    return (schedule_overview(settings, engine, datetime.now(UTC)).managed.version,
            branding_overview(settings, engine).managed.version)


def test_edit_the_schedule_and_the_branding_in_the_browser(browser, served, artefacts):
    base, settings, engine = served
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=AXE.exists())
    page = context.new_page()
    try:
        sign_in(page, base, "/admin/schedule")
        assert "Next build: Monday" in page.inner_text("#next-build")
        assert "(Brussels time)" in page.inner_text("#next-build")
        assert "Europe/Brussels" in page.inner_text("#timezone")

        # Send before build: refused by field, nothing saved, what was typed stays.
        page.uncheck("input[name=days][value=mon]")
        page.check("input[name=days][value=wed]")
        page.fill("#build-time", "06:15")
        page.fill("#send-time", "06:00")
        page.click("#save-schedule")
        page.locator("#send_time-problem").wait_for()
        assert "must be after the build time" in page.inner_text("#send_time-problem")
        assert page.input_value("#build-time") == "06:15" and versions(settings, engine) == (0, 0)
        page.fill("#send-time", "07:30")
        page.uncheck("#skip-if-empty")
        page.click("#save-schedule")
        page.get_by_text("Schedule saved.").wait_for()
        assert page.inner_text("#next-build").startswith("Next build: Wednesday") and "at 06:15 (Brussels time)" in page.inner_text("#next-build")
        assert "at 07:30 (Brussels time)" in page.inner_text("#next-send")
        page.reload()
        assert versions(settings, engine) == (1, 0)
        assert current_settings(settings, engine).schedule.cron == "15 6 * * wed"
        assert not page.is_checked("#skip-if-empty")

        # Branding: a colour links could not be read in is refused, with its contrast ratio.
        page.goto(f"{base}/admin/branding")
        page.frame_locator("#branding-preview").locator("a.brand").wait_for()
        page.fill("#accent-color", "#ffcc00")
        page.click("#save-branding")
        problem = page.locator("#accent_color-problem")
        problem.wait_for()
        assert "1.51:1 on the white background" in problem.inner_text() and "4.5:1" in problem.inner_text()
        assert versions(settings, engine) == (1, 0)

        # Preview unsaved values in the iframe: nothing is saved.
        page.fill("#accent-color", "#7a0019")
        page.fill("#footer-text", "Written in Brussels, every week.")
        page.click("#preview-values")
        frame = page.frame_locator("#branding-preview")
        frame.get_by_text("Written in Brussels, every week.").wait_for()
        assert "rgb(122, 0, 25)" in frame.locator("a.brand").evaluate("a => getComputedStyle(a).color")
        assert versions(settings, engine) == (1, 0)
        page.click("#save-branding")
        page.get_by_text("Branding saved.").wait_for()
        page.reload()
        assert versions(settings, engine) == (1, 1)
        page.frame_locator("#branding-preview").get_by_text("Written in Brussels, every week.").wait_for()

        # Upload a logo: served by the site and shown on the page and in the preview.
        page.set_input_files("#logo-file", files=[{"name": "logo.png", "mimeType": "image/png", "buffer": png()}])
        page.fill("#logo-alt-upload", "Europa Progressiva")
        page.click("#upload-logo")
        page.get_by_text("Logo uploaded.").wait_for()
        page.wait_for_function("document.querySelector('img.logo-shown').naturalWidth === 320")
        page.reload()
        assert versions(settings, engine) == (1, 2)
        assert "/branding/logo-" in page.input_value("#logo-url")
        page.click("#save-branding")  # the form now carries the uploaded logo's address: saving it is fine
        page.get_by_text("Nothing changed").wait_for()
        assert versions(settings, engine) == (1, 2)
        logo = page.frame_locator("#branding-preview").locator("img[alt='Europa Progressiva']")
        logo.wait_for()
        assert "/branding/logo-" in logo.get_attribute("src")
        # An SVG is refused with the reason; nothing changes.
        page.set_input_files("#logo-file", files=[{"name": "logo.svg", "mimeType": "image/svg+xml",
                                                   "buffer": b"<svg xmlns='http://www.w3.org/2000/svg'/>"}])
        page.click("#upload-logo")
        page.get_by_text("SVG logos are not accepted", exact=False).wait_for()
        assert versions(settings, engine) == (1, 2)
        page.screenshot(path=str(artefacts / "admin-branding.png"), full_page=True)
    finally:
        context.close()


@pytest.mark.parametrize("width", [1280, 390])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_settings_pages_are_accessible_and_fit(browser, served, artefacts, width, scheme):
    base, settings, engine = served
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme,
                                  is_mobile=width < 500, bypass_csp=AXE.exists())
    page = context.new_page()
    problems: dict[str, list] = {}
    try:
        sign_in(page, base, "/admin/schedule")
        for path, name in (("/admin/schedule", "schedule"), ("/admin/branding", "branding")):
            page.goto(f"{base}{path}")
            if name == "branding":
                page.frame_locator("#branding-preview").locator("a.brand").wait_for()
            if AXE.exists() and (found := axe_problems(page)):
                problems[name] = found
            # The page's own content never scrolls sideways (the shared top bar is the layout's business).
            widest = page.evaluate("Math.max(...[...document.querySelectorAll('main *')]"
                                   ".map(e => e.getBoundingClientRect().right))")
            assert widest <= width + 1, f"{path} is {widest} px wide at {width} px"
            page.screenshot(path=str(artefacts / f"admin-{name}-{scheme}-{width}.png"), full_page=True)
    finally:
        context.close()
    (artefacts / f"axe-admin-settings-{scheme}-{width}.json").write_text(json.dumps(problems, indent=2), encoding="utf-8")
    assert problems == {}


def test_a_provisioned_site_shows_its_settings_read_only(browser, served_provisioned):
    base, settings, engine = served_provisioned
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        sign_in(page, base, "/admin/schedule")
        page.get_by_text("Managed in digest.toml").first.wait_for()
        assert page.locator("#schedule-form").count() == 0 and "0 8 * * tue" in page.inner_text("#schedule-settings")
        assert "Next build: Tuesday" in page.inner_text("#next-build")
        page.goto(f"{base}/admin/branding")
        page.get_by_text("Managed in digest.toml").first.wait_for()
        assert page.locator("#branding-form").count() == 0 and page.locator("#logo-file").count() == 0
        assert "#0b6e4f" in page.inner_text("#branding-settings")
    finally:
        context.close()
