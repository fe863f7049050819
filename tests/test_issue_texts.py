"""Every language first-class (issue 14 §6, §1): subject, intro and lead story text per language with
the site language as the fallback, and the admin's warning before approval; series names in the
edition's language; the lead story (the first pinned item) and item images under their rules."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import replace

import pytest
from admin_fixtures import admin_store, csrf_of, log_in
from browser_checks import AXE, axe_problems, sign_in
from conftest import SERIES, free_port, make_settings, serving
from render_fixtures import SERIES_IDS, big_issue, brief, demo_issue
from starlette.testclient import TestClient

from digest.compose import EditorialError, edit_editorial
from digest.i18n import typeset
from digest.models import Editorial, EditorialTexts, IssueEntry, Segment
from digest.pipeline.audit import audit_trail
from digest.pipeline.issues import approve_issue, edit_issue, get_issue, issue_manifest
from digest.render import FIT_STEPS, full_segment, render_edition
from digest.store.issues import StaleVersion
from digest.web.admin_preview import editorial_changes, text_warnings
from digest.web.app import create_app

SEC, ECO, DIG = SERIES_IDS
IMAGE = "https://www.example.org/wp-content/uploads/2026/11/lead.jpg"
NAMES = {SEC: {"fr": "Série Autonomie stratégique européenne – Sécurité et défense",
               "de": "Reihe Europäische strategische Autonomie – Sicherheit und Verteidigung"},
         ECO: {"fr": "Série Autonomie stratégique européenne – Économie et commerce"}}


def named_settings(tmp_path, **sections):
    series = [{**s, "names": NAMES[s["id"]]} if s["id"] in NAMES else s for s in SERIES]
    return make_settings(tmp_path, series=series, **sections)


def render(issue, settings, language):
    return render_edition(issue, full_segment(issue, language), settings)


# --- fallbacks: the model's rule ------------------------------------------------------------------

def test_each_language_gets_its_own_texts_else_the_site_languages():
    ed = Editorial(subject="Who pays?", intro="English intro.", lead="English lead.",
                   texts=(EditorialTexts("fr", subject="Qui paie ?", intro="Intro française."),))
    assert ed.texts_for("fr", "en") == EditorialTexts("fr", "Qui paie ?", "Intro française.", "English lead.")
    assert ed.texts_for("de", "en") == EditorialTexts("de", "Who pays?", "English intro.", "English lead.")
    assert ed.texts_for("en", "en") == EditorialTexts("en", "Who pays?", "English intro.", "English lead.")
    assert ed.borrowed("fr", "en") == ("lead",)
    assert ed.borrowed("de", "en") == ("subject", "intro", "lead")
    assert ed.borrowed("en", "en") == ()
    # Nothing written in the site language: nothing borrowed (the default subject is localised).
    assert Editorial().borrowed("fr", "en") == ()


def test_editing_texts_sets_clears_and_refuses_bad_input():
    issue = replace(demo_issue(), editorial=Editorial(texts=(EditorialTexts("de", intro="Hallo."),)))
    ed = edit_editorial(issue, texts={"fr": {"subject": "  Qui\r\npaie ?  ", "intro": "Bonjour.\r\n\r\nSuite."}})
    assert ed.texts == (EditorialTexts("de", intro="Hallo."), EditorialTexts("fr", "Qui paie ?", "Bonjour.\n\nSuite."))
    ed = edit_editorial(replace(issue, editorial=ed), texts={"fr": {"intro": ""}, "de": None})
    assert ed.texts == (EditorialTexts("fr", subject="Qui paie ?"),)
    ed = edit_editorial(replace(issue, editorial=ed), texts={"fr": {"subject": ""}})
    assert ed.texts == ()  # a language left empty goes
    for bad, message in [({"xx": {"intro": "?"}}, "editions are in"), ({"fr": {"title": "?"}}, "unknown field"),
                         ({"fr": {"intro": 3}}, "as strings"), ({"fr": "Bonjour"}, "as strings"),
                         ({"fr": {"lead": "x" * 1001}}, "lead story's text has 1001"),
                         ({"fr": {"subject": "x" * 201}}, "subject has 201")]:
        with pytest.raises(EditorialError, match=message):
            edit_editorial(issue, texts=bad)


# --- the store and the use case: versions, approval, audit ----------------------------------------

def test_texts_are_stored_versioned_and_audited(tmp_path, store_url):
    store = admin_store(tmp_path, store_url)
    number, before = store.issue.number, store.issue.version
    edited = edit_issue(store.settings, store.engine, number, store.issue.created_at,
                        texts={"fr": {"subject": "Qui paie ?", "intro": "Bonjour."}, "de": {"lead": "Lesen!"}},
                        lead="Read this first.")
    assert edited.version != before
    stored = get_issue(store.engine, number)
    assert stored.editorial.texts == (EditorialTexts("de", lead="Lesen!"),
                                      EditorialTexts("fr", subject="Qui paie ?", intro="Bonjour."))
    assert stored.editorial.lead == "Read this first." and stored.version == edited.version
    manifest = issue_manifest(store.settings, store.engine, number)
    assert manifest["issue"]["editorial"]["texts"]["fr"]["subject"] == "Qui paie ?"
    assert manifest["issue"]["editorial"]["lead"] == "Read this first."
    # The same texts again change nothing; another text is another version, and the old one cannot be approved.
    again = edit_issue(store.settings, store.engine, number, store.issue.created_at,
                       texts={"fr": {"subject": "Qui paie ?"}})
    assert again.version == edited.version
    changed = edit_issue(store.settings, store.engine, number, store.issue.created_at,
                         texts={"fr": {"intro": "Bonjour à tous."}})
    assert changed.version != edited.version
    with pytest.raises(StaleVersion):
        approve_issue(store.settings, store.engine, number, "Ana", edited.version)
    # Texts for the site language are the issue's own subject, intro and lead.
    own = edit_issue(store.settings, store.engine, number, store.issue.created_at,
                     texts={"en": {"subject": "Who pays?", "lead": ""}, "fr": None})
    assert (own.editorial.subject, own.editorial.lead) == ("Who pays?", "")
    assert [t.language for t in get_issue(store.engine, number).editorial.texts] == ["de"]
    edits = [e for e in audit_trail(store.engine, number).entries if e.action == "issue.edit"]
    assert edits[-1].detail["texts"]["fr"]["subject"] == "Qui paie ?"
    store.engine.dispose()


# --- editions: texts and series names in the edition's language -----------------------------------

def test_editions_use_their_languages_texts_and_series_names(tmp_path):
    settings = named_settings(tmp_path)
    issue = replace(demo_issue(), editorial=Editorial(
        subject="Who pays for Europe’s defence?", intro="English intro.",
        texts=(EditorialTexts("fr", subject="Qui paie pour la défense ?", intro="Intro en français."),)))
    fr, de, en = (render(issue, settings, language) for language in ("fr", "de", "en"))
    assert fr.subject == "Qui paie pour la défense\xa0?" and "Intro en français." in fr.text  # French spacing
    assert "English intro." not in fr.text and fr.preheader.startswith("Intro en français.")
    assert de.subject == "Who pays for Europe’s defence?" and "English intro." in de.text  # the fallback
    assert en.subject == "Who pays for Europe’s defence?" and "Intro en français." not in en.text
    # Series names: the short head, the "all publications" link and "Also in" in the edition's language.
    assert "== Sécurité et défense ==" in fr.text
    assert "Tout voir\xa0: Série Autonomie stratégique européenne – Sécurité et défense" in fr.text
    assert re.search(r'<h2 class="section" id="esa-security-defence"[^>]*>Sicherheit und Verteidigung</h2>',
                     html_lib.unescape(de.html))
    assert "== Economy & Trade ==" in de.text  # no German name: the configured one
    assert "== Security & Defence ==" in en.text
    shared = replace(brief(7, SEC, title="Sanctions and industry"), series=(SEC, ECO))
    sections = (replace(issue.sections[0], entries=(IssueEntry(shared, also_in=(ECO,)),)), *issue.sections[1:])
    fr_shared = render(replace(issue, sections=sections), settings, "fr").text
    assert "Aussi dans\xa0: Économie et commerce" in fr_shared


@pytest.mark.parametrize("text, language, expected", [
    ("Qui paie ? Le « pacte » : oui ; non !", "fr", "Qui paie\xa0? Le «\xa0pacte\xa0»\xa0: oui\xa0; non\xa0!"),
    ("Déjà ? Voir https://www.example.org/a:b?x=1", "fr", "Déjà\xa0? Voir https://www.example.org/a:b?x=1"),  # links whole
    ("Who pays ? Us : you", "en", "Who pays ? Us : you"),  # other languages' texts as written
    ("", "fr", ""),
])
def test_staff_texts_get_french_spacing_in_french_editions(text, language, expected):
    assert typeset(text, language) == expected


def test_no_subject_anywhere_gives_the_localised_default(tmp_path):
    settings = named_settings(tmp_path)
    issue = replace(demo_issue(), editorial=Editorial(texts=(EditorialTexts("fr", intro="Bonjour."),)))
    assert render(issue, settings, "de").subject.startswith("Europa Progressiva Foundation")
    assert "Bonjour." not in render(issue, settings, "de").text


# --- the lead story and images ---------------------------------------------------------------------

def lead_issue(image=IMAGE, lead="", texts=()):
    issue = demo_issue()
    first = issue.sections[0].entries[0].item
    second = replace(issue.sections[1].entries[0].item, image="https://www.example.org/thumb.png")
    sections = (replace(issue.sections[0], entries=(IssueEntry(replace(first, image=image), pinned=True),
                                                    *issue.sections[0].entries[1:])),
                replace(issue.sections[1], entries=(IssueEntry(second),)), *issue.sections[2:])
    return replace(issue, sections=sections,
                   editorial=replace(issue.editorial, pinned=(first.key,), lead=lead, texts=texts)), first


def test_the_first_pinned_item_leads_the_edition_larger_with_its_image(tmp_path):
    settings = named_settings(tmp_path)
    issue, first = lead_issue(lead="Our pick of the week.", texts=(EditorialTexts("fr", lead="Notre choix."),))
    en = render(issue, settings, "en")
    page = html_lib.unescape(en.html)
    body = page.split("<body", 1)[1]
    lead_at = body.index('class="item lead-story"')
    assert body.index("This week: three new papers") < lead_at < body.index('<h2 class="section"')
    assert page.count(first.title) == 1 + page.count(f'alt="{first.title}"')  # once, plus the image's alt
    image = re.search(r'<img class="lead-image"[^>]*>', body).group(0)
    assert f'src="{IMAGE}"' in image and f'alt="{first.title}"' in image
    assert 'width="552"' in image and 'height="311"' in image
    assert re.search(r'<h2 class="lead-title"[^>]*>', body)
    assert "Our pick of the week." in page and "Our pick of the week." in en.text
    thumb = re.search(r'<img class="thumb"[^>]*>', body).group(0)
    assert 'width="96"' in thumb and 'height="96"' in thumb and 'src="https://www.example.org/thumb.png"' in thumb
    assert len(re.findall(r"<img\b", body)) == 2  # one per item that has one, and the logo-less masthead none
    fr = render(issue, settings, "fr")
    assert "Notre choix." in fr.text and "Our pick of the week." not in fr.text
    assert fr.text.index(">> " + first.title) < fr.text.index("== Sécurité et défense ==")
    assert fr.text.count(first.title) == 1


def test_a_pinned_item_outside_the_readers_edition_is_not_their_lead(tmp_path):
    settings = named_settings(tmp_path)
    issue, first = lead_issue()
    other = issue.sections[1].entries[0].item
    issue = replace(issue, editorial=replace(issue.editorial, pinned=(first.key, other.key)))
    trade_only = Segment(id="t", section_ids=(ECO,), language="en")
    text = render_edition(issue, trade_only, settings).text
    assert ">> " + other.title in text and first.title not in text
    # Its section, left empty by the lead story, goes; nothing pinned, no lead story.
    assert "== Economy & Trade ==" not in text
    plain = render(replace(issue, editorial=replace(issue.editorial, pinned=())), settings, "en")
    assert ">> " not in plain.text and "lead-story" not in plain.html


@pytest.mark.parametrize("url,settings_change,shown", [
    (IMAGE, {}, True),
    ("https://cdn.example.org/a.jpg", {}, True),  # the site's domain and its subdomains
    ("http://www.example.org/a.jpg", {}, False),  # https only
    ("https://evil.example.net/a.jpg", {}, False),  # another host
    ("https://user@www.example.org/a.jpg", {}, False),
    ("javascript:alert(1)", {}, False),
    ("https://www.example.org/a.jpg\"onerror=\"x", {}, True),  # shown, but the quote cannot leave the attribute
    ("https://img.partner.eu/a.jpg", {"image_hosts": ["img.partner.eu"]}, True),
    (IMAGE, {"image_hosts": ["img.partner.eu"]}, False),  # configured hosts replace the site's
    (IMAGE, {"images": False}, False),
])
def test_images_are_checked_again_at_render_time(tmp_path, url, settings_change, shown):
    settings = named_settings(tmp_path, render=settings_change)
    issue, _ = lead_issue(image=url)
    html = render(issue, settings, "en").html
    assert ('class="lead-image"' in html) == shown
    if shown:
        src = re.search(r'<img class="lead-image"[^>]*src="([^"]*)"', html).group(1)
        assert src.startswith("https://") and '"' not in src and " " not in src
    assert "onerror=" not in html.replace("%22onerror=%22", "")


def test_images_keep_the_edition_under_the_size_limit_in_every_language(tmp_path):
    settings = named_settings(tmp_path)
    issue = big_issue()
    sections = tuple(replace(s, entries=tuple(replace(e, item=replace(e.item, image=f"{IMAGE}?n={k}"))
                                              for k, e in enumerate(s.entries))) for s in issue.sections)
    first = sections[0].entries[0].item
    issue = replace(issue, sections=sections, editorial=replace(issue.editorial, pinned=(first.key,)))
    for language in ("en", "fr", "de"):
        edition = render(issue, settings, language)
        assert edition.html_bytes <= settings.digest.max_html_kib * 1024, (language, edition.notes)
        assert 'class="lead-image"' in edition.html  # the lead story keeps its image at every step
        if FIT_STEPS[edition.fit][0] == 0.0:
            assert 'class="thumb"' not in edition.html  # thumbnails go with the summaries


# --- the API -----------------------------------------------------------------------------------------

def test_the_api_edits_texts_per_language(tmp_path, sqlite_url, monkeypatch):
    from jsonschema import Draft202012Validator

    from digest.pipeline import accounts, tokens
    from digest.web.openapi import openapi_document

    monkeypatch.setenv("DIGEST_SECRET", "api-texts-secret")
    store = admin_store(tmp_path, sqlite_url, web={"base_url": "https://testserver"})
    accounts.add_account(store.settings, store.engine, "ed@example.org", "editor", password="a long passphrase")
    auth = {"authorization": "Bearer " + tokens.issue_token(store.engine, "ed@example.org", name="ed").secret}
    document = openapi_document()
    edit_schema = {**document["components"]["schemas"]["IssueEdit"], "components": document["components"]}
    body = {"lead": "Read this first.", "texts": {"fr": {"subject": "Qui paie ?", "intro": "Bonjour."},
                                                  "de": {"lead": "Zuerst lesen."}}}
    Draft202012Validator(edit_schema).validate(body)  # the document describes what the API takes
    with TestClient(create_app(store.settings, store.engine), base_url="https://testserver") as client:
        before = client.get("/api/v1/issues/1", headers=auth).json()["issue"]["version"]
        answer = client.patch("/api/v1/issues/1", json=body, headers=auth)
        assert answer.status_code == 200, answer.text
        head = answer.json()["issue"]
        assert head["version"] != before
        assert head["editorial"]["texts"]["fr"] == {"subject": "Qui paie ?", "intro": "Bonjour.", "lead": ""}
        assert head["editorial"]["lead"] == "Read this first."
        for bad, words in [({"texts": {"xx": {"intro": "?"}}}, "editions are in"),
                           ({"texts": {"fr": {"intro": 5}}}, "as strings"),
                           ({"texts": ["fr"]}, "'texts' must be a dict"),
                           ({"texts": {"en": "Hello"}}, "as strings"),
                           ({"lead": "x" * 1001}, "keep it to 1000")]:
            refused = client.patch("/api/v1/issues/1", json=bad, headers=auth)
            assert refused.status_code == 400 and words in refused.json()["error"]["message"], (bad, refused.text)
        cleared = client.patch("/api/v1/issues/1", json={"texts": {"fr": None, "de": None}, "lead": ""}, headers=auth)
        assert "texts" not in cleared.json()["issue"]["editorial"]
        assert cleared.json()["issue"]["version"] == before  # back to what it was
    store.engine.dispose()


# --- the admin: fields per language, warnings before approval --------------------------------------

def test_admin_warnings_name_what_readers_get_in_the_site_language(tmp_path):
    settings = named_settings(tmp_path)
    issue = replace(demo_issue(), editorial=Editorial(intro="English intro.", subject="Who pays?", lead="Pick."))
    segments = [Segment("a", (SEC, ECO), "fr"), Segment("b", (SEC, ECO), "de"), Segment("c", (SEC,), "en")]
    warnings = text_warnings(settings, issue, segments)
    assert "French readers will get the English subject, intro and lead story text." in warnings
    assert "German readers will get the English subject, intro and lead story text." in warnings
    assert any(w.startswith("The lead story text shows with the lead story") for w in warnings)
    unnamed = [w for w in warnings if "under their English names" in w]
    assert len(unnamed) == 1 and unnamed[0].startswith("German readers") and "Economy & Trade" in unnamed[0]
    assert "Security" not in unnamed[0]  # it has a German name
    written = replace(issue.editorial, pinned=("x",), texts=(EditorialTexts("fr", "Qui ?", "Intro.", "Choix."),))
    warnings = text_warnings(settings, replace(issue, editorial=written), segments)
    assert not any(w.startswith("French readers will get") for w in warnings)
    assert not any("lead story text shows" in w for w in warnings)
    assert editorial_changes({"subject": "S", "fr.intro": "I", "de.lead": "", "xx.intro": "no", "en.intro": "?"},
                             settings) == {"subject": "S", "texts": {"fr": {"intro": "I"}, "de": {"lead": ""}}}


def test_admin_issue_page_warns_and_saves_texts_per_language(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    store = admin_store(tmp_path, sqlite_url)
    with TestClient(create_app(store.settings, store.engine), base_url="https://testserver") as client:
        assert log_in(client).status_code == 303
        page = client.get("/admin/issues/1").text
        csrf = csrf_of(page)
        # The fixture's readers read de and fr: fields for both, none for en (the site language's are the main ones).
        assert 'name="fr.intro"' in page and 'name="de.subject"' in page and 'name="en.intro"' not in page
        assert "French readers will get the English intro" not in page  # nothing written yet
        client.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "subject": "", "intro": "Dear readers.",
                                                       "lead": "", "fr.subject": "", "fr.intro": "", "fr.lead": "",
                                                       "de.subject": "", "de.intro": "Liebe Leser.", "de.lead": ""})
        page = client.get("/admin/issues/1").text
        assert "French readers will get the English intro." in page
        assert "German readers will get" not in page
        assert 'aria-describedby="text-warnings"' in page and ">Liebe Leser.</textarea>" in page
        client.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "subject": "", "intro": "Dear readers.",
                                                       "lead": "", "fr.intro": "Chers lecteurs."})
        assert "French readers will get" not in client.get("/admin/issues/1").text
        issue = get_issue(store.engine, 1)
        assert issue.editorial.texts == (EditorialTexts("de", intro="Liebe Leser."),
                                         EditorialTexts("fr", intro="Chers lecteurs."))
        french = client.get("/admin/issues/1/preview?format=text&lang=fr").text
        assert "Chers lecteurs." in french and "Dear readers." not in french
        refused = client.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "fr.lead": "x" * 1001})
        assert refused.status_code == 400 and "keep it to 1000" in refused.text
    store.engine.dispose()


@pytest.mark.browser
@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci in tests/)")
def test_the_issue_page_with_texts_per_language_in_chromium(tmp_path, sqlite_url, monkeypatch, browser, artefacts):
    """Write an intro in English and German in the browser: the page warns for French readers beside
    Approve, the German preview shows the German intro, and axe finds nothing serious, light and dark."""
    monkeypatch.setenv("DIGEST_SECRET", "texts-secret")
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    port = free_port()
    store = admin_store(tmp_path, sqlite_url, web={"base_url": f"http://127.0.0.1:{port}"})
    found: dict[str, list[str]] = {}
    with serving(create_app(store.settings, store.engine), port) as base:
        for scheme, width in (("light", 1280), ("dark", 390)):
            context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme,
                                          bypass_csp=True)
            try:
                page = context.new_page()
                sign_in(page, base)
                page.goto(f"{base}/admin/issues/1")
                page.fill("#intro", "Dear readers, three new papers.")
                page.fill("#de-intro", "Liebe Leserinnen und Leser, drei neue Analysen.")
                page.click("#save-editorial")
                page.get_by_text("French readers will get the English intro.").wait_for()
                assert "German readers will get" not in page.inner_text("#text-warnings")
                page.goto(f"{base}/admin/issues/1?lang=de")
                page.frame_locator("#preview").locator("p:visible", has_text="Liebe Leserinnen und Leser").wait_for()
                key = f"{scheme} {width}"
                found[key] = axe_problems(page)
                if page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth"):
                    found[key].append("the page scrolls sideways")
                page.screenshot(path=str(artefacts / f"admin-issue-texts-{scheme}-{width}.png"), full_page=True)
            finally:
                context.close()
    store.engine.dispose()
    assert {k: v for k, v in found.items() if v} == {}


def test_without_an_intro_the_preheader_starts_with_the_lead_story(tmp_path):
    settings = named_settings(tmp_path)
    issue, first = lead_issue()
    issue = replace(issue, editorial=replace(issue.editorial, intro=""))
    assert render(issue, settings, "en").preheader.startswith(first.title)
