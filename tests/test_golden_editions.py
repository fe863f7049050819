"""Editorial golden files: the text edition of a realistic week (tests/data/related) in en, fr and de,
as a reader with a name receives it, compared with tests/golden/week-<language>.txt.

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

from digest.models import Editorial
from digest.render import full_segment, personalise, reader_values, render_edition

GOLDEN = Path(__file__).resolve().parent / "golden"
_TOKEN = re.compile(r"/(unsubscribe|preferences|confirm)/[A-Za-z0-9._~-]+")


def scrub(text: str) -> str:
    return _TOKEN.sub(r"/\1/TOKEN", text)


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_golden_week_text_edition(tmp_path, language):
    settings = make_settings(tmp_path)
    issue, _ = week_issue(settings)
    issue = replace(issue, number=14, editorial=Editorial(
        subject="Who pays for Europe’s defence?",
        intro="This week: the budget talks, joint procurement and the Vienna Forum.\n\nGood reading."))
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
