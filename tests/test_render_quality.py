"""The quality bar for editions, on the real demo issue (the bundled samples composed by the pipeline
for the demo's week), a demo-like issue and a 60-item issue, in several languages: size, document
metadata, accessible markup, preheader, html-validate, axe-core in Chromium (light and dark, 600 and
375 px) and horizontal overflow. With CI set, a missing checker fails these tests instead of skipping.

tests/htmlvalidate.json is html-validate's recommended rules minus what email HTML needs: inline
styles, Outlook conditional comments, presentational attributes (align, bgcolor, cellpadding) and
MRML's `<div role="article">` wrapper.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from render_fixtures import all_sections, big_issue, demo_issue
from test_golden_editions import named_series_settings

from digest.render import THEME, personalise, preview_values, render_edition

TESTS = Path(__file__).resolve().parent
HTML_VALIDATE = TESTS / "node_modules" / ".bin" / "html-validate"
AXE = TESTS / "node_modules" / "axe-core" / "axe.min.js"
# "sample": the real demo issue; "demo": a demo-like issue built by hand; "big": 60 items; "week": a
# realistic week in three series (tests/data/related) with a headline, intro and lead story per
# language; "test": the demo issue as a staff test send (banner, no reader links); "images": the 60
# items, each with an image, the first pinned as the lead story.
CASES = [("sample", "en"), ("sample", "de"), ("demo", "en"), ("demo", "fr"), ("big", "de"), ("big", "fr"),
         ("week", "en"), ("week", "fr"), ("week", "de"), ("test", "fr"), ("images", "fr"), ("images", "de")]
LOGO = "https://www.example.org/logo.png"
BANNED_LINK_TEXT = {"click here", "here", "read more", "more", "link", "this link", "ici", "hier", "cliquez ici",
                    "hier klicken", "mehr", "lire la suite", "weiterlesen"}


def require_checker(path: Path, what: str) -> None:
    """Skip when a checker is not installed; under CI (as the browser fixture does) fail instead."""
    if path.exists():
        return
    message = f"{path} missing: {what}"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must install it (.ci/run)")
    pytest.skip(message)


def related_week(settings):
    """The realistic week of tests/data/related, composed and edited as the golden test's: a headline,
    intro and lead story text per language, and a pinned lead story with its image."""
    from test_golden_editions import edited_week

    return edited_week(settings)


def sample_week(folder: Path):
    """(settings, issue) of the real demo: the bundled sample feeds fetched, stored and composed by the
    pipeline for the demo's fixed week, exactly as `digest demo` does."""
    from digest.cli.demo import DEMO_NOW, DEMO_SINCE, DEMO_UNTIL, SAMPLES
    from digest.config import load_settings
    from digest.pipeline.ingest import fetch_all
    from digest.pipeline.issues import build_issue
    from digest.store import open_store

    shutil.copytree(SAMPLES, folder, ignore=shutil.ignore_patterns("*.db", "*.db-*", "outbox", "__pycache__"))
    settings = load_settings(folder / "digest.toml")
    engine = open_store(settings.store.url)
    try:
        reports = fetch_all(settings, engine)
        assert all(r.status.value == "ok" for r in reports), [(r.feed, r.status, r.message) for r in reports]
        issue = build_issue(settings, engine, now=DEMO_NOW, since=DEMO_SINCE, until=DEMO_UNTIL)
    finally:
        engine.dispose()
    assert issue is not None and sum(len(s.entries) for s in issue.sections) >= 10
    # With a logo, as the other cases, so images are checked too.
    return replace(settings, site=replace(settings.site, logo_url=LOGO)), issue


def illustrated(issue):
    """`issue` with an image on every item (from the site's host) and its first item pinned as the lead story."""
    sections = tuple(replace(s, entries=tuple(
        replace(e, item=replace(e.item, image=f"https://www.example.org/wp-content/uploads/{s.id}-{k}.jpg"))
        for k, e in enumerate(s.entries))) for s in issue.sections)
    pinned = (sections[0].entries[0].item.key,)
    return replace(issue, sections=sections, editorial=replace(issue.editorial, pinned=pinned))


@pytest.fixture(scope="module")
def editions(tmp_path_factory):
    """(case, language) → (Edition, personalised html), with a logo so images are checked too."""
    # The series named in French and German, as the golden test's (their heads differ in length).
    settings = named_series_settings(tmp_path_factory.mktemp("quality"), site={"logo_url": LOGO})
    cases = {"sample": sample_week(tmp_path_factory.mktemp("samples") / "demo"),
             "demo": (settings, demo_issue()), "big": (settings, big_issue()),
             "week": (settings, related_week(settings)), "test": (settings, replace(demo_issue(), test=True)),
             "images": (settings, illustrated(big_issue()))}
    out = {}
    for case, language in CASES:
        case_settings, issue = cases[case]
        edition = render_edition(issue, all_sections(issue, language), case_settings)
        html, _ = personalise(edition, preview_values(case_settings, language, "https://www.example.org/archive/12"))
        out[(case, language)] = (edition, html)
    return out


class Doc(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.title = ""
        self.links: list[str] = []
        self._in: list[str] = []
        self._link: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "img" and self._link is not None:
            self._link.append(dict(attrs).get("alt") or "")  # an image link is named by its alt text
        if tag == "a":
            self._link = []
        if tag == "title":
            self._in.append("title")

    def handle_endtag(self, tag):
        if tag == "a" and self._link is not None:
            self.links.append(" ".join("".join(self._link).split()))
            self._link = None
        if tag == "title" and self._in:
            self._in.pop()

    def handle_data(self, data):
        if self._link is not None:
            self._link.append(data)
        if self._in:
            self.title += data


def doc(html: str) -> Doc:
    d = Doc()
    d.feed(html)
    return d


@pytest.mark.parametrize("case,language", CASES)
def test_size_and_document_metadata(editions, case, language):
    edition, html = editions[(case, language)]
    assert len(html.encode("utf-8")) <= 90 * 1024
    d = doc(html)
    assert [a.get("lang") for t, a in d.tags if t == "html"] == [language]
    assert d.title.strip() == edition.subject
    metas = {a.get("name"): a.get("content") for t, a in d.tags if t == "meta"}
    assert metas.get("color-scheme") == "light dark"
    assert "prefers-color-scheme: dark" in html


@pytest.mark.parametrize("case,language", CASES)
def test_accessible_markup(editions, case, language):
    _, html = editions[(case, language)]
    d = doc(html)
    tables = [a for t, a in d.tags if t == "table"]
    assert tables and all(a.get("role") == "presentation" for a in tables)
    images = [a for t, a in d.tags if t == "img"]
    assert images and all(a.get("alt") for a in images)
    assert all(text and text.lower().strip(" .:!»›→") not in BANNED_LINK_TEXT for text in d.links), d.links


@pytest.mark.parametrize("case,language", CASES)
def test_preheader(editions, case, language):
    edition, html = editions[(case, language)]
    assert 40 <= len(edition.preheader) <= 140
    assert edition.preheader != edition.subject
    shown = edition.preheader.replace("&", "&amp;").replace("\xa0", "&nbsp;")  # as render escapes text
    assert re.search(r'<div style="display:none;[^"]*">' + re.escape(shown), html)


@pytest.mark.parametrize("case,language", CASES)
def test_nothing_left_unrendered(editions, case, language):
    edition, html = editions[(case, language)]
    for text in (html, edition.text):
        for leftover in ("<mj-", "{{", "{%", "[[DIGEST:"):
            assert leftover not in (text if leftover != "[[DIGEST:" else html), leftover


def luminance(colour: str) -> float:
    channels = [int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("mode", ["light", "dark"])
def test_palette_text_keeps_4_5_to_1_contrast(mode):
    p = getattr(THEME, mode)
    pairs = [(p.text, p.card), (p.muted, p.card), (p.link, p.card), (p.badge_text, p.badge_bg), (p.text, p.page)]
    for fg, bg in pairs:
        assert contrast(fg, bg) >= 4.5, (mode, fg, bg, round(contrast(fg, bg), 2))
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)


def test_html_validate_reports_no_errors(editions, tmp_path):
    require_checker(HTML_VALIDATE, "run `make test` (npm install in tests/)")
    files = []
    for (case, language), (_, html) in editions.items():
        path = tmp_path / f"{case}-{language}.html"
        path.write_text(html, encoding="utf-8")
        files.append(str(path))
    report = tmp_path / "report.json"
    result = subprocess.run([str(HTML_VALIDATE), "--config", str(TESTS / "htmlvalidate.json"),
                             "--formatter", f"json={report}", *files], capture_output=True, text=True, timeout=60)
    reports = json.loads(report.read_text() or "[]")
    errors = [(Path(r["filePath"]).name, m["ruleId"], m["message"]) for r in reports for m in r["messages"]
              if m["severity"] == 2]
    assert not errors, errors[:20]
    assert result.returncode == 0, result.stderr


@pytest.mark.browser
@pytest.mark.parametrize("case,language", [("sample", "en"), ("demo", "en"), ("big", "de"), ("week", "en"),
                                           ("week", "fr"), ("week", "de"), ("test", "fr"), ("images", "de")])
def test_axe_in_chromium_light_and_dark_at_600_and_375(editions, browser, artefacts, case, language):
    require_checker(AXE, "run `make test` (npm install in tests/)")
    _, html = editions[(case, language)]
    problems = []
    for scheme in ("light", "dark"):
        context = browser.new_context(color_scheme=scheme, viewport={"width": 600, "height": 900})
        page = context.new_page()
        page.route("**/*", lambda route: route.abort())  # no network: the logo simply fails to load
        page.set_content(html, wait_until="domcontentloaded")
        page.add_script_tag(path=str(AXE))
        for width in (600, 375):
            page.set_viewport_size({"width": width, "height": 900})
            result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
            for violation in result["violations"]:
                if violation["impact"] in ("serious", "critical"):
                    targets = [n["target"] for n in violation["nodes"][:3]]
                    problems.append((scheme, width, violation["id"], violation["impact"], targets))
            if case == "week":  # what a reader sees, for people to look at (tests/artefacts/)
                page.screenshot(path=str(artefacts / f"edition-{language}-{scheme}-{width}.png"), full_page=True)
            overflow = page.evaluate("[document.documentElement.scrollWidth, document.documentElement.clientWidth]")
            if width == 375 and overflow[0] > overflow[1]:
                problems.append((scheme, width, "horizontal overflow", overflow))
        context.close()
    assert not problems, problems


def test_a_missing_checker_skips_locally_and_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="missing"):
        require_checker(tmp_path / "html-validate", "npm install in tests/")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must install it"):
        require_checker(tmp_path / "html-validate", "npm install in tests/")
    require_checker(HTML_VALIDATE if HTML_VALIDATE.exists() else tmp_path, "present")  # no skip, no failure
