"""What the browser tests share: signing in to the admin, axe-core's serious and critical findings,
and sideways overflow."""

from __future__ import annotations

from pathlib import Path

from admin_fixtures import PASSWORD

AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"


def axe_problems(page) -> list[str]:
    """axe-core's serious and critical violations on the page, as "rule: help (first element)".

    axe is injected as a script, which the pages' CSP rightly forbids: the test's browser context
    needs bypass_csp=True.
    """
    page.add_script_tag(path=str(AXE))
    found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [f"{v['id']}: {v['help']} ({v['nodes'][0]['target']})" for v in found if v["impact"] in ("serious", "critical")]


def widest_right(page, selector: str = "main *") -> float:
    """The right edge, in CSS pixels, of the widest element `selector` matches (overflow when above the viewport)."""
    return page.evaluate(f"Math.max(0, ...[...document.querySelectorAll({selector!r})]"
                         ".map(e => e.getBoundingClientRect().right))")


def sign_in(page, base: str, path: str = "/admin/issues") -> None:
    """Sign in as the fixtures' admin (Anna) through the login form, and wait to land on `path`."""
    page.goto(f"{base}/admin/login?next={path}")
    page.fill("#name", "Anna")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{path}")


def sideways_scroll(page) -> int:
    """How many CSS pixels the page scrolls sideways (0: it fits the viewport's width)."""
    return page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
