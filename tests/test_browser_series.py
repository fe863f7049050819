"""The admin's series page in headless Chromium: on a store-managed site, add an alias from an unmatched
(near-miss) category of really fetched items, re-match, add, edit, move and remove series, and see the
conflict when two pages edit one series; a reload after each form changes nothing; axe-core finds
nothing serious or critical, light and dark, at 1280 and 390 px, and nothing scrolls sideways. A
provisioned site shows the page read-only."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from admin_fixtures import PASSWORD_HASH
from browser_checks import AXE, axe_problems, sideways_scroll, sign_in
from conftest import SERIES, free_port, make_settings, serving

from digest.pipeline.audit import audit_trail
from digest.pipeline.ingest import fetch_all
from digest.pipeline.series_settings import add_series, list_series
from digest.store import open_store
from digest.web.app import create_app

pytestmark = pytest.mark.browser
FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
NEAR_MISS = "Europen Strategic Autonomy series – Digital & Technology"


def site(tmp_path, monkeypatch, provisioned: bool):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    monkeypatch.setenv("DIGEST_SECRET", "browser-series-secret")
    (tmp_path / "pubs.xml").write_bytes((FEEDS / "near-miss-categories.xml").read_bytes())
    port = free_port()
    settings = make_settings(tmp_path, web={"base_url": f"http://127.0.0.1:{port}", "admin_password_hash": PASSWORD_HASH},
                             feeds=[{"name": "Publications", "url": "pubs.xml", "kind": "brief"}])
    if not provisioned:
        settings = replace(settings, series=[], provisioned=settings.provisioned - {"series"})
    engine = open_store(settings.store.url)
    if not provisioned:
        for raw in SERIES:
            add_series(settings, engine, raw["id"], raw["name"], aliases=raw.get("aliases", ()), url=raw["url"])
    fetch_all(settings, engine)
    return port, settings, engine


@pytest.fixture
def served(tmp_path, monkeypatch):
    """(base URL, settings, engine) of a store-managed site whose items hold a near-miss category."""
    port, settings, engine = site(tmp_path, monkeypatch, provisioned=False)
    with serving(create_app(settings, engine), port):
        yield settings.web.base_url, settings, engine
    engine.dispose()


@pytest.fixture
def served_provisioned(tmp_path, monkeypatch):
    port, settings, engine = site(tmp_path, monkeypatch, provisioned=True)
    with serving(create_app(settings, engine), port):
        yield settings.web.base_url, settings, engine
    engine.dispose()


def state(settings, engine) -> list[tuple[str, int, tuple[str, ...]]]:
    return [(e.series.id, e.version, e.series.aliases) for e in list_series(settings, engine)]



def reload_changes_nothing(page, settings, engine) -> None:
    before = state(settings, engine)
    page.reload()
    assert state(settings, engine) == before


def test_manage_series_and_add_an_alias_from_an_unmatched_category(browser, served, artefacts):
    base, settings, engine = served
    context = browser.new_context(viewport={"width": 1280, "height": 1000}, bypass_csp=AXE.exists())
    page = context.new_page()
    problems: dict[str, list] = {}

    def check(name: str) -> None:
        if AXE.exists() and (found := axe_problems(page)):
            problems[name] = found
        page.screenshot(path=str(artefacts / f"admin-{name}.png"), full_page=True)

    try:
        sign_in(page, base, "/admin/series")
        # The near miss is listed first, its series chosen; a different category has no guess.
        row = page.locator("tr.unmatched-category").first
        assert row.locator(".category").inner_text() == NEAR_MISS
        assert row.locator(".count").inner_text() == "(2 items)"
        assert row.locator("select").input_value() == "esa-digital-technology"
        other = page.locator("tr.unmatched-category", has_text="Policy Brief")
        assert other.locator("select").input_value() == ""
        check("series")

        # One click adds it as an alias; the category leaves the list; a reload repeats nothing.
        row.locator("button", has_text="Add as alias").click()
        page.get_by_text("Alias added").wait_for()
        assert ("esa-digital-technology", 2, (NEAR_MISS,)) in state(settings, engine)
        assert page.locator(".category", has_text=NEAR_MISS).count() == 0
        reload_changes_nothing(page, settings, engine)

        # Choosing no series is refused with a reason (the select is required: bypass it as a crafted form would).
        other.locator("select").evaluate("el => el.removeAttribute('required')")
        other.locator("button").click()
        page.get_by_text("Not added: choose the series this category means.").wait_for()

        # Re-match the stored items explicitly: once.
        page.goto(f"{base}/admin/series")
        page.click("#rematch")
        page.get_by_text("Stored items matched again: 2 now in other series.").wait_for()
        page.reload()
        assert [e.action for e in audit_trail(engine).entries].count("series.rematch") == 1

        # Add a series, with its German name.
        page.fill("#series-id", "energy")
        page.fill("#series-name", "Energy & Climate")
        page.fill("#series-name-de", "Energie & Klima")
        page.fill("#series-aliases", "Energy and climate policy\nClimate")
        page.click("#add-series")
        page.get_by_text("Series added.").wait_for()
        reload_changes_nothing(page, settings, engine)
        assert state(settings, engine)[-1] == ("energy", 1, ("Energy and climate policy", "Climate"))
        assert "Energie & Klima" in page.inner_text("#series-energy")

        # Two pages edit the same series: the second save is a conflict, the first change stays.
        second = context.new_page()
        page.goto(f"{base}/admin/series/edit?id=esa-economy-trade")
        second.goto(f"{base}/admin/series/edit?id=esa-economy-trade")
        check("series-edit")
        page.fill("#series-aliases", "Economy & Trade")
        page.fill("#series-name-fr", "Économie et commerce")
        page.click("#save-series")
        page.get_by_text("Series saved.").wait_for()
        reload_changes_nothing(page, settings, engine)
        second.fill("#series-url", "https://elsewhere.example.org/")
        second.click("#save-series")
        second.get_by_text("Someone changed this series since you opened the page").wait_for()
        assert second.input_value("#series-aliases") == "Economy & Trade"  # the page now shows their change
        assert second.input_value("#series-url") == SERIES[1]["url"]
        saved = next(e for e in list_series(settings, engine) if e.series.id == "esa-economy-trade")
        assert (saved.version, saved.series.aliases, saved.series.url) == (2, ("Economy & Trade",), SERIES[1]["url"])
        second.close()

        # Move a series down, then remove one after a confirmation.
        page.locator("#series-esa-security-defence").locator("button", has_text="Move down").click()
        page.get_by_text("Order changed.").wait_for()
        reload_changes_nothing(page, settings, engine)
        assert [s for s, _, _ in state(settings, engine)][:2] == ["esa-economy-trade", "esa-security-defence"]
        page.locator("#series-energy").locator("button", has_text="Remove").click()
        page.get_by_text("Remove “Energy & Climate”?").wait_for()
        check("series-remove")
        page.click("#confirm-remove")
        page.get_by_text("Series removed.").wait_for()
        reload_changes_nothing(page, settings, engine)
        assert "energy" not in [s for s, _, _ in state(settings, engine)]
        check("series-after")
    finally:
        context.close()
    (artefacts / "axe-admin-series.json").write_text(json.dumps(problems, indent=2), encoding="utf-8")
    assert problems == {}


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci in tests/)")
def test_the_series_pages_in_light_and_dark_at_desktop_and_phone_width(browser, served, artefacts):
    base, _, _ = served
    found: dict[str, list[str]] = {}
    for scheme in ("light", "dark"):
        for width in (1280, 390):
            context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme,
                                          bypass_csp=True)
            try:
                page = context.new_page()
                sign_in(page, base, "/admin/series")
                for path in ("/admin/series", "/admin/series/edit?id=esa-security-defence",
                             "/admin/series/remove?id=esa-economy-trade"):
                    page.goto(base + path)
                    key = f"{path} {scheme} {width}"
                    found[key] = axe_problems(page)
                    wide = sideways_scroll(page)
                    if wide > 0:
                        found[key].append(f"the page scrolls sideways by {wide}px")
                    # Nor does anything stick out of the page's content, clipped or not.
                    widest = page.evaluate("Math.max(...[...document.querySelectorAll('main *')]"
                                           ".map(e => e.getBoundingClientRect().right))")
                    if widest > width + 1:
                        found[key].append(f"something in main reaches {widest}px")
                page.goto(base + "/admin/series")
                page.screenshot(path=str(artefacts / f"admin-series-{scheme}-{width}.png"), full_page=True)
            finally:
                context.close()
    assert {k: v for k, v in found.items() if v} == {}


def test_a_provisioned_site_shows_the_series_read_only(browser, served_provisioned, artefacts):
    base, settings, engine = served_provisioned
    context = browser.new_context(viewport={"width": 390, "height": 900}, bypass_csp=AXE.exists())
    page = context.new_page()
    try:
        sign_in(page, base, "/admin/series")
        page.get_by_text("Managed in digest.toml: these series").wait_for()
        assert page.locator("main form").count() == 0 and page.locator("main button").count() == 0
        assert page.locator("#series-list tr").count() == 1 + len(SERIES)
        # The unmatched categories are still listed, with the series each nearly spells, to add in the file.
        row = page.locator("tr.unmatched-category").first
        assert row.locator(".category").inner_text() == NEAR_MISS and "Digital & Technology" in row.inner_text()
        if AXE.exists():
            assert axe_problems(page) == []
        page.screenshot(path=str(artefacts / "admin-series-provisioned.png"), full_page=True)
    finally:
        context.close()
