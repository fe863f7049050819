"""Event dates as readers see them (issue 14, item 4): date-only and midnight-to-midnight events show
days and no clock time, the end day whenever it differs, and timed events the site's time zone —
from a real feed (tests/data/compose/events-dates.rss), in en, fr and de."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from conftest import make_settings

from digest import i18n
from digest.compose import compose_issue
from digest.edition_view import calendar_url
from digest.models import Feed, ItemKind, Window
from digest.parse import parse_feed
from digest.render import full_segment, render_edition

DATA = Path(__file__).resolve().parent / "data" / "compose" / "events-dates.rss"
BRUSSELS = ZoneInfo("Europe/Brussels")
WINDOW = Window(datetime(2026, 11, 16, tzinfo=BRUSSELS), datetime(2026, 11, 23, tzinfo=BRUSSELS))

EXPECTED = {
    "en": ["14–15 January 2027", "Saturday, 5 December 2026", "10–11 December 2026",
           "15–16 December 2026, 18:00 – 16 Dec 13:00 CET", "Thursday, 3 December 2026, 18:30–20:00 CET"],
    "fr": ["14–15 janvier 2027", "samedi 5 décembre 2026", "10–11 décembre 2026",
           "15–16 décembre 2026, 18:00 – 16 déc. 13:00 CET", "jeudi 3 décembre 2026, 18:30–20:00 CET"],
    "de": ["14.–15. Januar 2027", "Samstag, 5. Dezember 2026", "10.–11. Dezember 2026",
           "15.–16. Dezember 2026, 18:00 – 16. Dez. 13:00 CET", "Donnerstag, 3. Dezember 2026, 18:30–20:00 CET"],
}


@pytest.fixture(scope="module")
def events():
    result = parse_feed(DATA.read_bytes(), Feed("Events", str(DATA), ItemKind.EVENT), [])
    assert result.error is None, result.error
    return {item.title.split(" (")[0]: item for item in result.items}


@pytest.fixture(scope="module")
def issue(events, tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("events"))
    return settings, compose_issue([], WINDOW, settings.series, settings, WINDOW.end, events=list(events.values()))


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_event_dates_in_the_text_edition(issue, language):
    settings, composed = issue
    text = render_edition(composed, full_segment(composed, language), settings).text
    lines = [line.strip() for line in text.splitlines()]
    for expected in EXPECTED[language]:
        assert expected in lines, (expected, [line for line in lines if "202" in line])
    # No clock time at all for the date-only and midnight-to-midnight events ("01:00 CET" was the bug).
    assert not any("01:00" in line or "00:00" in line for line in lines)


@pytest.mark.parametrize("language", ["en", "fr", "de"])
def test_event_dates_in_the_html_edition(issue, language):
    settings, composed = issue
    html = render_edition(composed, full_segment(composed, language), settings).html
    assert f"<strong>{EXPECTED[language][0]}</strong></p>" in html  # an all-day event: no " · time"
    assert "01:00" not in html


def test_all_day_is_told_from_date_only_and_midnight_to_midnight(events):
    assert i18n.is_all_day(events["Vienna Forum"].event.start, events["Vienna Forum"].event.end, BRUSSELS)
    assert i18n.is_all_day(events["Open day"].event.start, events["Open day"].event.end, BRUSSELS)
    assert i18n.is_all_day(events["Winter school"].event.start, events["Winter school"].event.end, BRUSSELS)
    for timed in ("Summit", "Webinar"):
        assert not i18n.is_all_day(events[timed].event.start, events[timed].event.end, BRUSSELS), timed
    # A timed event starting at midnight in Brussels with no end keeps its time.
    midnight = datetime(2026, 11, 23, tzinfo=BRUSSELS)
    assert i18n.event_when(midnight, None, "en", BRUSSELS) == ("Monday, 23 November 2026", "00:00 CET")


def test_all_day_calendar_links_add_whole_days(events):
    dates = parse_qs(urlsplit(calendar_url(events["Vienna Forum"], BRUSSELS)).query)["dates"]
    assert dates == ["20270114/20270116"]  # Google's end day is exclusive
    dates = parse_qs(urlsplit(calendar_url(events["Winter school"], BRUSSELS)).query)["dates"]
    assert dates == ["20261210/20261212"]
    dates = parse_qs(urlsplit(calendar_url(events["Webinar"], BRUSSELS)).query)["dates"]
    assert dates == ["20261203T173000Z/20261203T190000Z"]


def test_one_day_and_cross_year_ranges():
    first, last = datetime(2026, 12, 30, tzinfo=UTC), datetime(2027, 1, 2, tzinfo=UTC)
    assert i18n.event_when(first, last, "en", BRUSSELS) == ("30 December 2026 – 2 January 2027", "")
    assert i18n.event_when(first, first, "de", BRUSSELS) == ("Mittwoch, 30. Dezember 2026", "")
    nov = datetime(2026, 11, 30, tzinfo=UTC)
    assert i18n.event_when(nov, datetime(2026, 12, 2, tzinfo=UTC), "fr", BRUSSELS) == ("30 novembre – 2 décembre 2026", "")
