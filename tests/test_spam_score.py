"""SpamAssassin's own rules find nothing in an edition's content: a score of 0.0 in every language.

Runs Debian's `spamassassin` with local tests only (`-L -t`: no network lookups, the rules the
package ships) on real editions: the golden-style demo issue rendered and built into the message
every subscriber gets. Before the fix the hidden preheader's white text scored 0.7
(HTML_FONT_LOW_CONTRAST). CI installs spamassassin (.ci/run) and sets DIGEST_REQUIRE_SPAMASSASSIN,
so there the test can never be skipped.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import make_settings
from render_fixtures import demo_issue

from digest.deliver.message import MessageTemplate
from digest.render import full_segment, render_edition

SPAMASSASSIN = shutil.which("spamassassin")
pytestmark = pytest.mark.skipif(SPAMASSASSIN is None and not os.environ.get("DIGEST_REQUIRE_SPAMASSASSIN"),
                                reason="spamassassin not installed (apt-get install spamassassin)")


def spam_report(message: bytes) -> tuple[float, list[str]]:
    """SpamAssassin's score for `message` and the rules that scored, from its local tests only."""
    assert SPAMASSASSIN, "DIGEST_REQUIRE_SPAMASSASSIN is set but spamassassin is not installed"
    done = subprocess.run([SPAMASSASSIN, "-L", "-t"], input=message, capture_output=True, timeout=120, check=False)
    status = re.search(rb"X-Spam-Status: \w+, score=(-?[\d.]+) required=[\d.]+\s+tests=([^\n]*(?:\n\t[^\n]*)*)",
                       done.stdout)
    assert status, done.stdout[-2000:]
    rules = [r for r in re.split(rb"[\s,]+", status.group(2)) if r and b"=" not in r]  # not autolearn=, version=
    return float(status.group(1)), [r.decode() for r in rules]


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_an_edition_scores_nothing_in_spamassassins_content_rules(tmp_path, language):
    settings = make_settings(tmp_path)
    issue = demo_issue()
    edition = render_edition(issue, full_segment(issue, language), settings)
    template = MessageTemplate.from_settings(settings, edition, issue_values={"view_url": "https://www.example.org/archive/1"})
    links = {"unsubscribe_url": "https://www.example.org/unsubscribe/a1b2c3", "preferences_url":
             "https://www.example.org/preferences/a1b2c3"}
    message = template.build_for("katharina.hofmann@example.net", "Katharina Hofmann", links).data
    score, rules = spam_report(message)
    scored = [r for r in rules if r not in ("NO_RECEIVED", "NO_RELAYS", "HTML_MESSAGE")]  # informational, 0 points
    assert score <= 0.0 and scored == [], (score, rules)
