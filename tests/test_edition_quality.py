"""What a reader sees (issue 14): an item in several series once per reader with "Also in", short
section heads with the series' full name on its link, the headline as a lead block, the greeting
setting, French elision and typography, language badges, test sends and a preheader hidden without
a clashing colour."""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import replace

import pytest
from conftest import make_settings
from render_fixtures import SERIES_IDS, SERIES_NAMES, WINDOW, all_sections, brief, demo_issue, event

from digest.config import ConfigError
from digest.models import Editorial, Issue, IssueEntry, IssueStatus, Section, SectionType, Subscriber
from digest.render import first_name, personalise, preview_values, reader_values, render_edition
from digest.segments import edition_sections, segment_for

SEC, ECO, DIG = SERIES_IDS
VALUES = {"email": "k@example.org", "unsubscribe_url": "https://www.example.org/u/1",
          "preferences_url": "https://www.example.org/p/1", "view_url": "https://www.example.org/archive/7"}


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


def two_series_issue() -> Issue:
    """Security & Defence holds an item also in Economy & Trade and one also in Digital & Technology;
    Economy & Trade has an item of its own; Digital & Technology has no section."""
    shared = replace(brief(1, SEC, title="Sanctions and the defence industrial base"), series=(SEC, ECO))
    digital = replace(brief(2, SEC, title="Cloud for defence ministries"), series=(SEC, DIG))
    own = brief(3, ECO, title="Tariffs and the single market")
    sections = (
        Section(id=SEC, type=SectionType.SERIES, title=SERIES_NAMES[SEC], series=SEC,
                entries=(IssueEntry(shared, also_in=(ECO,)), IssueEntry(digital, also_in=(DIG,))),
                more_url="https://www.example.org/series/security-defence/"),
        Section(id=ECO, type=SectionType.SERIES, title=SERIES_NAMES[ECO], series=ECO, entries=(IssueEntry(own),),
                more_url="https://www.example.org/series/economy-trade/"),
        Section(id="events", type=SectionType.EVENTS, title="Upcoming events"),
        Section(id="media", type=SectionType.MEDIA, title="In the media"),
        Section(id="more", type=SectionType.MORE, title="More from us"),
    )
    return Issue(number=7, status=IssueStatus.DRAFT, window=WINDOW, sections=sections,
                 editorial=Editorial(subject="Who pays for Europe’s defence?", intro="Three pieces this week."))


def reader(*series, language="en") -> Subscriber:
    return Subscriber(email="r@example.org", series=series, want_events=False, want_media=False, language=language)


def text_of(settings, issue, subscriber, name="Katharina Hofmann"):
    segment = segment_for(issue, subscriber, "en")
    edition = render_edition(issue, segment, settings)
    return edition, personalise(edition, {**VALUES, "name": name})


def titles(sections):
    return {s.id: [e.item.title for e in s.entries] for s in sections}


# --- an item in several series: once per reader, "Also in" -------------------------------------------

def test_an_item_sits_under_the_first_series_the_reader_follows(settings):
    issue = two_series_issue()
    only_trade = segment_for(issue, reader(ECO), "en")
    shown = edition_sections(issue, only_trade.section_ids, SERIES_IDS)
    assert titles(shown) == {ECO: ["Tariffs and the single market", "Sanctions and the defence industrial base"]}
    assert [e.also_in for e in shown[0].entries] == [(), (SEC,)]
    both = edition_sections(issue, segment_for(issue, reader(SEC, ECO), "en").section_ids, SERIES_IDS)
    assert titles(both)[SEC] == ["Sanctions and the defence industrial base", "Cloud for defence ministries"]
    assert titles(both)[ECO] == ["Tariffs and the single market"]  # never twice
    only_digital = edition_sections(issue, segment_for(issue, reader(DIG), "en").section_ids, SERIES_IDS)
    assert [(s.id, s.title) for s in only_digital] == [(DIG, "")]  # a section made for this reader
    assert titles(only_digital)[DIG] == ["Cloud for defence ministries"]


def test_also_in_names_the_other_series_in_the_readers_language(settings):
    issue = two_series_issue()
    _, (_, text) = text_of(settings, issue, reader(ECO))
    block = text.split("== Economy & Trade ==", 1)[1]
    assert "Sanctions and the defence industrial base" in block
    assert "Also in: Security & Defence" in block
    assert "== Security & Defence ==" not in text
    _, (html, text) = text_of(settings, issue, reader(DIG, language="fr"))
    assert "== Digital & Technology ==" in text
    assert "Aussi dans\xa0: Security & Defence" in text
    # The made-up section still links all of its series' publications, under the full name.
    assert "Tout voir\xa0: European Strategic Autonomy series – Digital & Technology" in text
    assert "https://www.example.org/series/digital-technology/" in text
    _, (_, full) = text_of(settings, issue, reader())
    assert full.count("Sanctions and the defence industrial base") == 1
    assert "Also in: Economy & Trade" in full and "Also in: Digital & Technology" in full


# --- hierarchy: short heads, the lead block -------------------------------------------------------------

def test_short_section_heads_and_the_full_name_on_the_series_link(settings):
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue), settings)
    page = html_lib.unescape(edition.html)
    assert '<h2 class="section" id="esa-security-defence"' in edition.html
    assert re.search(r'<h2 class="section" id="esa-security-defence"[^>]*>Security & Defence</h2>', page)
    assert "European Strategic Autonomy series –" not in "".join(re.findall(r"<h2[^>]*>.*?</h2>", page))
    assert "Find all related: European Strategic Autonomy series – Security & Defence" in page
    assert "== Security & Defence ==" in edition.text


def test_the_headline_and_intro_lead_the_body(settings):
    issue = two_series_issue()
    edition = render_edition(issue, all_sections(issue), settings)
    page = html_lib.unescape(edition.html)
    assert re.search(r"<h1[^>]*>Who pays for Europe’s defence\?</h1>", page)
    body = page.split("<body", 1)[1]
    assert body.index("Who pays for Europe’s defence?") < body.index("Three pieces this week.") < body.index("<h2")
    assert edition.text.splitlines()[:2] == ["Europa Progressiva Foundation", "Who pays for Europe’s defence?"]


# --- greeting --------------------------------------------------------------------------------------

@pytest.mark.parametrize("greeting,name,expected", [
    ("first_name", "Katharina Hofmann", "Hallo Katharina,"),
    ("first_name", "Hofmann, Katharina", "Hallo Katharina,"),
    ("first_name", "Dr. Katharina Hofmann", "Hallo Dr. Katharina Hofmann,"),
    ("first_name", "", "Hallo zusammen,"),
    ("full_name", "Katharina Hofmann", "Hallo Katharina Hofmann,"),
    ("none", "Katharina Hofmann", "Guten Tag,"),
])
def test_the_greeting_setting(tmp_path, greeting, name, expected):
    settings = make_settings(tmp_path, render={"greeting": greeting})
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue, "de"), settings)
    values = reader_values(name, "k@example.org", "de", VALUES["unsubscribe_url"], VALUES["preferences_url"],
                           VALUES["view_url"])
    html, text = personalise(edition, values)
    assert expected in text.splitlines()
    assert expected in html_lib.unescape(html)
    if greeting == "none":
        assert "Katharina" not in text and "[[DIGEST:name]]" not in edition.text
    # The slow path (rendering the reader directly) greets the same way.
    direct = render_edition(issue, all_sections(issue, "de"), settings, values=values, fit=edition.fit)
    assert direct.text == text


def test_first_name_and_a_bad_greeting_setting(tmp_path):
    assert first_name("  Anna   Maria Schmidt ") == "Anna"
    assert first_name("Prof Luc Dupont") == "Prof Luc Dupont"
    with pytest.raises(ConfigError, match="render.greeting"):
        make_settings(tmp_path, render={"greeting": "nickname"})


# --- languages: elision, typography, badges ---------------------------------------------------------

def test_french_elision_and_typography(settings):
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue, "fr"), settings)
    html, text = personalise(edition, preview_values(settings, "fr", VALUES["view_url"]))
    assert "ce digest d’Europa Progressiva Foundation" in text
    assert "de Europa" not in text and "de Europa" not in html_lib.unescape(html)
    assert "Voir aussi\xa0:" in text and "Voir aussi :" not in text
    assert "«\xa0Roundtable 1" in html_lib.unescape(html)


def test_a_badge_only_where_the_language_is_known_and_differs(settings):
    issue = demo_issue()
    unknown = replace(brief(5, SEC, title="Language unknown"), language=None)
    german = brief(6, SEC, title="Auf Deutsch", language="de-AT")
    undetermined = brief(7, SEC, title="Undetermined", language="und")
    made_up = brief(8, SEC, title="Made up", language="xx")
    extra = (IssueEntry(unknown), IssueEntry(german), IssueEntry(undetermined), IssueEntry(made_up))
    sections = (replace(issue.sections[0], entries=(*extra, *issue.sections[0].entries)), *issue.sections[1:])
    text = render_edition(replace(issue, sections=sections), all_sections(issue, "de"), settings).text
    for title in ("Language unknown", "Auf Deutsch", "Undetermined", "Made up"):
        assert f"* {title}\n" in text, title
    assert "* Policy brief 1: defence procurement & the single market [EN]" in text


# --- test sends -------------------------------------------------------------------------------------

@pytest.mark.parametrize("language,mark,banner", [("en", "[Test]", "Test send"), ("fr", "[Essai]", "Envoi de test"),
                                                  ("de", "[Test]", "Testversand")])
def test_a_test_send_says_so_and_claims_nothing(settings, language, mark, banner):
    issue = replace(demo_issue(), test=True)
    edition = render_edition(issue, all_sections(issue, language), settings)
    assert edition.subject.startswith(mark + " ")
    html, text = personalise(edition, preview_values(settings, language, VALUES["view_url"]))
    assert banner in text and banner in html
    for document in (html, text, edition.html, edition.text):
        assert "/unsubscribe" not in document and "/preferences" not in document
        assert "[[DIGEST:unsubscribe_url]]" not in document and "[[DIGEST:preferences_url]]" not in document
    ordinary = render_edition(demo_issue(), all_sections(issue, language), settings)
    assert not ordinary.subject.startswith(mark) and banner not in ordinary.text
    assert "[[DIGEST:unsubscribe_url]]" in ordinary.html


# --- deliverability ---------------------------------------------------------------------------------

def test_the_preheader_is_hidden_without_a_font_colour(settings):
    issue = demo_issue()
    edition = render_edition(issue, all_sections(issue), settings)
    hidden = re.search(r'<div style="(display:none;[^"]*)">' + re.escape(edition.preheader), edition.html)
    assert hidden, "no hidden preheader"
    assert "color" not in hidden.group(1)
    assert {"max-height:0", "opacity:0", "mso-hide:all"} <= set(hidden.group(1).split(";"))
    # No text anywhere in white (or near it) on the light page: SpamAssassin's HTML_FONT_LOW_CONTRAST.
    body = edition.html.split("<body", 1)[1]
    inline_colours = re.findall(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{3,6})", body)
    assert inline_colours and not {c.lower() for c in inline_colours} & {"#fff", "#ffffff", "#fefefe", "#eef0f3"}


def test_coming_up_uses_the_issue_events_of_the_series(settings):
    issue = two_series_issue()
    vienna = replace(event(1), title="Vienna Forum", series=(ECO,))
    far = replace(event(2), title="Defence summit", series=(SEC,))
    sections = tuple(replace(s, entries=(IssueEntry(vienna), IssueEntry(far))) if s.id == "events" else s
                     for s in issue.sections)
    issue = replace(issue, sections=sections)
    text = render_edition(issue, all_sections(issue), settings).text
    economy = text.split("== Economy & Trade ==", 1)[1].split("\n== ", 1)[0]
    assert "Coming up in this series:" in economy and "Vienna Forum <https://www.example.org/events/1/" in economy
    assert "Defence summit" not in economy
    assert text.count("Coming up in this series:") == 2
