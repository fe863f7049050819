"""Editorial golden files: the text edition of a realistic week (tests/data/related) in en, fr and de,
as a reader with a name receives it, compared with tests/golden/week-<language>.txt.

The week is edited as staff would: a subject, intro and lead story text in English, French ones for
all three, a German intro only (its subject and lead fall back to English), a pinned lead story with
an image, and series names in French and German.

Signed tokens are scrubbed (the fixture's dates are fixed, so dates stay: they are part of what is
checked). After an intended change, regenerate with `make golden` (DIGEST_UPDATE_GOLDEN=1) and read
the diff before committing it."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import make_settings
from test_related import week_issue

from digest.models import Editorial, EditorialTexts
from digest.render import full_segment, personalise, reader_values, render_edition

GOLDEN = Path(__file__).resolve().parent / "golden"
_TOKEN = re.compile(r"/(unsubscribe|preferences|confirm)/[A-Za-z0-9._~-]+")


def scrub(text: str) -> str:
    return _TOKEN.sub(r"/\1/TOKEN", text)


SERIES_NAMES = {
    "esa-security-defence": {"fr": "Série Autonomie stratégique européenne – Sécurité et défense",
                             "de": "Reihe Europäische strategische Autonomie – Sicherheit und Verteidigung"},
    "esa-economy-trade": {"fr": "Série Autonomie stratégique européenne – Économie et commerce",
                          "de": "Reihe Europäische strategische Autonomie – Wirtschaft und Handel"},
    "esa-digital-technology": {"fr": "Série Autonomie stratégique européenne – Numérique et technologie"},
}
LEAD_IMAGE = "https://www.example.org/wp-content/uploads/2026/11/defence-budget.jpg"
EDITORIAL = Editorial(
    subject="Who pays for Europe’s defence?",
    intro="This week: the budget talks, joint procurement and the Vienna Forum.\n\nGood reading.",
    lead="Our pick: where the money for Europe’s defence could come from, and where it will not.",
    texts=(EditorialTexts("de", intro="Diese Woche: die Haushaltsverhandlungen, gemeinsame Beschaffung und das "
                                      "Wiener Forum.\n\nGute Lektüre."),
           EditorialTexts("fr", subject="Qui paie pour la défense de l’Europe ?",
                          intro="Cette semaine : les négociations budgétaires, les achats communs et le Forum "
                                "de Vienne.\n\nBonne lecture.",
                          lead="Notre choix : d’où pourrait venir l’argent de la défense européenne.")))


def named_series_settings(tmp_path, **sections):
    """The test settings with the series named in French and German (Digital & Technology in French only)."""
    from conftest import SERIES

    return make_settings(tmp_path, series=[{**s, "names": SERIES_NAMES[s["id"]]} for s in SERIES], **sections)


def edited_week(settings):
    """The realistic week as staff edit it: texts per language and its budget brief pinned as the lead story."""
    issue, _ = week_issue(settings)
    key = next(e.item.key for s in issue.sections for e in s.entries if "budget talks" in e.item.title)
    sections = tuple(replace(s, entries=tuple(replace(e, item=replace(e.item, image=LEAD_IMAGE))
                                              if e.item.key == key else e for e in s.entries))
                     for s in issue.sections)
    return replace(issue, number=14, sections=sections, editorial=replace(EDITORIAL, pinned=(key,)))


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_golden_week_text_edition(tmp_path, language):
    settings = named_series_settings(tmp_path)
    issue = edited_week(settings)
    edition = render_edition(issue, full_segment(issue, language), settings)
    values = reader_values("Katharina Hofmann", "katharina@example.org", language,
                           "https://digest.example.org/unsubscribe/abc.DEF-1", "https://digest.example.org/preferences/abc.DEF-1",
                           "https://digest.example.org/archive/14")
    _, text = personalise(edition, values)
    got = scrub(text)
    path = GOLDEN / f"week-{language}.txt"
    if os.environ.get("DIGEST_UPDATE_GOLDEN"):
        path.write_text(got, encoding="utf-8")
    assert path.exists(), f"{path} missing: run `make golden`"
    assert got == path.read_text(encoding="utf-8")
