"""compose_issue, the manifest and segments: pure functions on the fixture feeds, a fixed clock, no store."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from compose_fixtures import BRUSSELS, DIG, ECO, NOW, SEC, WINDOW, event_key, fixture_items, p
from conftest import make_settings

from digest.compose import (
    EditorialError,
    compose_issue,
    default_window,
    edit_editorial,
    has_news,
    item_keys,
    parse_instant,
)
from digest.manifest import issue_from_manifest, issue_subject, issue_to_manifest, issue_version
from digest.models import Editorial, Issue, Item, ItemKind, MediaInfo, Window
from digest.segments import edition_sections, sections_for, segment_id, segments_for

APA = "https://www.apa.at/news/europa-progressiva-warnt/"


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


@pytest.fixture
def items(settings):
    return fixture_items(settings)


def compose(settings, items, editorial=None, window=WINDOW) -> Issue:
    editorial = editorial or Editorial()
    return compose_issue(items, window, settings.series, settings, NOW, editorial, events=items, candidates=items)


def section(issue: Issue, section_id: str):
    return next(s for s in issue.sections if s.id == section_id)


def keys(issue: Issue, section_id: str) -> list[str]:
    return [e.item.key for e in section(issue, section_id).entries]


# --- the window -----------------------------------------------------------------------------------

def test_window_edges_compare_instants_in_the_site_timezone(settings, items):
    got = set(item_keys(compose(settings, items)))
    assert p(1004) in got  # 23:30 UTC Sunday is 00:30 Monday in Brussels
    assert p(1005) in got  # exactly at the start: inclusive
    assert p(1006) not in got  # 23:59 Sunday in Brussels
    assert p(1007) not in got  # exactly at the end: exclusive


def test_dc_date_only_and_updated_only_items_are_dated(settings, items):
    issue = compose(settings, items)
    assert p(1008) in keys(issue, "more")
    assert "https://www.example.org/news/updated-only/" in keys(issue, SEC)


def test_an_item_without_any_date_counts_from_first_seen(settings):
    seen_inside = Item(key="a", feed="f", kind=ItemKind.BRIEF, title="A", url="https://www.example.org/a",
                       first_seen=WINDOW.start + timedelta(hours=1))
    seen_before = replace(seen_inside, key="b", url="https://www.example.org/b", first_seen=WINDOW.start - timedelta(hours=1))
    assert item_keys(compose(settings, [seen_inside, seen_before])) == ["a"]


def test_default_window_runs_from_the_last_sent_end_or_window_days_back():
    last_end = datetime(2026, 11, 9, 8, tzinfo=UTC)
    assert default_window(NOW, last_end, 7, BRUSSELS) == Window(last_end, NOW)
    assert default_window(NOW, None, 7, BRUSSELS) == Window(NOW - timedelta(days=7), NOW)


def test_default_window_counts_wall_clock_days_across_a_daylight_saving_change():
    # Summer time ends on Sunday 25 October 2026: Monday 09:00 CET back to Monday 09:00 CEST is 7 days and 1 hour.
    now = datetime(2026, 10, 26, 8, tzinfo=UTC)  # 09:00 in Brussels
    window = default_window(now, None, 7, BRUSSELS)
    assert window.start == datetime(2026, 10, 19, 9, tzinfo=BRUSSELS) == datetime(2026, 10, 19, 7, tzinfo=UTC)
    assert window.end - window.start == timedelta(days=7, hours=1)
    # And in spring (29 March 2026) the week is an hour short.
    spring = default_window(datetime(2026, 3, 30, 7, tzinfo=UTC), None, 7, BRUSSELS)
    assert spring.start == datetime(2026, 3, 23, 9, tzinfo=BRUSSELS)


def test_naive_command_line_times_are_in_the_site_timezone():
    assert parse_instant("2026-11-16", BRUSSELS) == datetime(2026, 11, 15, 23, tzinfo=UTC)
    assert parse_instant("2026-11-16T09:00Z", BRUSSELS) == datetime(2026, 11, 16, 9, tzinfo=UTC)
    with pytest.raises(ValueError, match="not an ISO date"):
        parse_instant("last monday", BRUSSELS)


# --- sections -------------------------------------------------------------------------------------

def test_section_ids_follow_config_order_then_events_media_more(settings, items):
    assert [s.id for s in compose(settings, items).sections] == [SEC, DIG, "events", "media", "more"]


def test_every_new_item_appears_exactly_once(settings, items):
    placed = item_keys(compose(settings, items))
    assert len(placed) == len(set(placed))
    assert placed.count(p(1009)) == 1  # the same item twice in its feed
    # The brief's copy in the news feed (another id, same article URL) is not shown a second time.
    assert "https://www.example.org/news/rearming-europe-copy" not in placed and p(1001) in placed


def test_item_in_two_series_sits_in_the_first_and_lists_the_others(settings, items):
    issue = compose(settings, items)
    entry = next(e for e in section(issue, SEC).entries if e.item.key == p(1002))
    assert entry.also_in == (ECO,)
    assert ECO not in [s.id for s in issue.sections]  # nothing else in Economy & Trade


def test_category_that_only_resembles_a_series_goes_to_more(settings, items):
    issue = compose(settings, items)
    assert p(1003) in keys(issue, "more")
    assert p(1003) not in keys(issue, SEC)


def test_series_sections_put_briefs_before_articles_before_news_newest_first(settings):
    def item(key, kind, day):
        return Item(key=key, feed="f", kind=kind, title=key, url=f"https://www.example.org/{key}",
                    published=WINDOW.start + timedelta(days=day), series=(SEC,))

    mixed = [item("news-new", ItemKind.NEWS, 5), item("article", ItemKind.ARTICLE, 1), item("brief-old", ItemKind.BRIEF, 1),
             item("brief-new", ItemKind.BRIEF, 4), item("news-old", ItemKind.NEWS, 2)]
    assert keys(compose(settings, mixed), SEC) == ["brief-new", "brief-old", "article", "news-new", "news-old"]


def test_upcoming_events_by_start_whenever_announced(settings, items):
    issue = compose(settings, items)
    # At the window end: in; announced in June: in; past, beyond and exactly at the horizon: out.
    assert keys(issue, "events") == [event_key(2002), event_key(2001), event_key(2003)]
    conference = section(issue, "events").entries[1].item
    assert conference.event.location == "HQ Brussels" and conference.event.hybrid  # "(Hybrid)" said by the flag


def test_horizon_follows_the_setting(tmp_path, items):
    short = make_settings(tmp_path, digest={"upcoming_events_days": 14})
    assert keys(compose(short, items), "events") == [event_key(2002), event_key(2001)]


def test_media_one_per_real_article_with_outlet_and_language(settings, items):
    media = section(compose(settings, items), "media").entries
    assert [e.item.url for e in media] == ["https://www.politico.eu/article/autonomy-debate/", APA]
    apa = media[1].item
    assert apa.media.outlet == "Austria Presse Agentur" and apa.language == "de"
    assert apa.published == datetime(2026, 11, 19, 7, tzinfo=UTC)  # the first alert of the two


def test_of_two_alerts_for_one_article_the_earliest_stays_whatever_the_keys(settings):
    def alert(key, url, hour):
        return Item(key=key, feed="alerts", kind=ItemKind.MEDIA, title="Mention", url=url,
                    published=WINDOW.start + timedelta(hours=hour), media=MediaInfo(outlet=f"Outlet {hour}"))

    later = alert("a-later", "http://WWW.news.example/story/?utm_campaign=x", 30)
    earlier = alert("z-earlier", "https://news.example/story", 20)
    media = section(compose(settings, [later, earlier]), "media").entries
    assert [e.item.key for e in media] == ["z-earlier"] and media[0].item.media.outlet == "Outlet 20"


def test_pinned_items_lead_their_section_and_dropped_items_are_left_out(settings, items):
    # Items of one section never link each other (issue 14): p(1005), in "more", is linked from an event.
    assert p(1005) in [r.key for e in section(compose(settings, items), "events").entries for r in e.related]
    editorial = Editorial(pinned=("https://www.example.org/news/updated-only/", p(1009)), dropped=(p(1002), p(1005)))
    issue = compose(settings, items, editorial)
    assert keys(issue, SEC) == ["https://www.example.org/news/updated-only/", p(1001)]
    assert [e.pinned for e in section(issue, SEC).entries] == [True, False]
    assert [e.pinned for e in section(issue, DIG).entries] == [True]
    assert p(1002) not in item_keys(issue)
    assert not {p(1002), p(1005)} & {r.key for s in issue.sections for e in s.entries for r in e.related}
    assert issue.editorial == editorial


def test_urls_are_absolute_and_dates_in_the_site_timezone(settings):
    relative = Item(key="r", feed="f", kind=ItemKind.BRIEF, title="R", url="/publications/r/",
                    published=WINDOW.start + timedelta(hours=5), summary_html="", content_html="<p>Body</p>")
    hostile = replace(relative, key="h", url="javascript:alert(1)")
    entries = section(compose(settings, [relative, hostile]), "more").entries
    assert {e.item.url for e in entries} == {"https://www.example.org/publications/r/", "https://www.example.org"}
    assert entries[0].item.published.utcoffset() == timedelta(hours=1)
    assert entries[0].item.summary_html == "<p>Body</p>" and entries[0].item.content_html == ""


def test_nothing_new_when_only_upcoming_events(settings, items):
    old_events = [i for i in items if i.kind == ItemKind.EVENT and i.key == event_key(2001)]
    issue = compose_issue([], WINDOW, settings.series, settings, NOW, events=old_events)
    assert keys(issue, "events") == [event_key(2001)]
    assert not has_news(issue)
    assert has_news(compose(settings, items))


# --- editorial choices ----------------------------------------------------------------------------

def test_edit_editorial_checks_keys_and_cleans_text(settings, items):
    issue = replace(compose(settings, items), number=4)
    edited = edit_editorial(issue, subject="Week\r\nBcc: x@example.org ", intro="  Hello\r\nteam\x07 ", drop=[p(1003)], pin=[p(1001)])
    assert edited.subject == "Week Bcc: x@example.org"
    assert edited.intro == "Hello\nteam"
    assert edited.dropped == (p(1003),) and edited.pinned == (p(1001),)
    with pytest.raises(EditorialError, match="no item with key"):
        edit_editorial(issue, pin=["https://nowhere.example/"])
    with pytest.raises(EditorialError, match="undrop it before pinning"):
        edit_editorial(replace(issue, editorial=edited), pin=[p(1003)])
    with pytest.raises(EditorialError, match="is not pinned"):
        edit_editorial(issue, unpin=[p(1001)])
    with pytest.raises(EditorialError, match="keep it to 200"):
        edit_editorial(issue, subject="x" * 201)
    assert edit_editorial(replace(issue, editorial=edited), undrop=[p(1003)], unpin=[p(1001)]) == Editorial(
        intro="Hello\nteam", subject="Week Bcc: x@example.org")


# --- the manifest ---------------------------------------------------------------------------------

def test_manifest_has_the_interface_shape(settings, items):
    manifest = issue_to_manifest(replace(compose(settings, items), number=12), settings)
    json.dumps(manifest)
    assert manifest["issue"]["number"] == 12 and manifest["issue"]["status"] == "draft"
    assert manifest["issue"]["window"] == {"start": "2026-11-16T00:00:00+01:00", "end": "2026-11-23T00:00:00+01:00"}
    first = manifest["sections"][0]
    assert {k: first[k] for k in ("id", "type", "title", "series")} == {
        "id": SEC, "type": "series", "title": settings.series[0].name, "series": SEC}
    item = first["items"][0]
    assert {"key", "kind", "title", "url", "published", "authors", "series", "also_in", "language",
            "summary_html", "event", "media", "related"} <= set(item)
    assert item["published"].endswith("+01:00") and item["url"].startswith("https://")
    events = next(s for s in manifest["sections"] if s["id"] == "events")
    assert events["type"] == "events" and events["series"] is None and events["title"] == "Upcoming events"
    assert {"start", "end", "location", "online"} <= set(events["items"][0]["event"])
    media = next(s for s in manifest["sections"] if s["id"] == "media")["items"]
    assert media[1]["media"]["outlet"] == "Austria Presse Agentur" and media[1]["language"] == "de"
    assert [s["id"] for s in manifest["sections"]][-3:] == ["events", "media", "more"]


def test_manifest_round_trips_exactly(settings, items):
    issue = replace(compose(settings, items, Editorial(intro="Hi", pinned=(p(1001),), dropped=(p(1003),))), number=3)
    manifest = json.loads(json.dumps(issue_to_manifest(issue, settings)))
    assert issue_from_manifest(manifest) == issue


def test_version_ignores_window_end_and_feeds_but_not_content(settings, items):
    issue = compose(settings, items)
    version = issue_version(issue_to_manifest(issue, settings))
    later = replace(issue, window=Window(WINDOW.start, WINDOW.end + timedelta(hours=1)), created_at=NOW)
    assert issue_version(issue_to_manifest(later, settings)) == version
    edited = replace(issue, editorial=Editorial(intro="New intro"))
    assert issue_version(issue_to_manifest(edited, settings)) != version


def test_default_subject_names_the_site_and_day(settings, items):
    issue = compose(settings, items)
    assert issue_subject(issue, settings) == "Europa Progressiva Foundation digest — 23 November 2026"
    assert issue_subject(replace(issue, editorial=Editorial(subject="Our week")), settings) == "Our week"


# --- segments -------------------------------------------------------------------------------------

def test_sections_for_preferences(settings, items):
    issue = compose(settings, items)
    assert sections_for(issue, (), True, True) == (SEC, DIG, "events", "media", "more")
    assert sections_for(issue, (DIG,), False, False) == (DIG, "more")
    # Economy & Trade has no section, but its reader gets the two-series item (filed under Security).
    assert sections_for(issue, (ECO,), False, True) == (ECO, "media", "more")


def test_reader_of_the_second_series_gets_the_item_once_under_that_series(settings, items):
    issue = compose(settings, items)
    shown = edition_sections(issue, sections_for(issue, (ECO,), False, False))
    # Issue 14: under the first series this reader follows, "Also in" naming the others.
    assert [(s.id, [e.item.key for e in s.entries]) for s in shown][0] == (ECO, [p(1002)])
    assert shown[0].entries[0].also_in == (SEC,)
    both = edition_sections(issue, sections_for(issue, (ECO, SEC), False, False))
    placed = [e.item.key for s in both for e in s.entries]
    assert placed.count(p(1002)) == 1 and len(placed) == len(set(placed))


def test_segments_are_distinct_stable_and_skip_empty_combinations(settings):
    lone = Item(key="x", feed="f", kind=ItemKind.MEDIA, title="X", url="https://news.example/x",
                published=WINDOW.start + timedelta(days=1), media=MediaInfo(outlet="Example"))
    issue = compose(settings, [lone])
    prefs = [((), True, False, "en"), ((SEC,), False, False, "en"), ((), True, True, "de"), ((DIG,), True, True, "de")]
    segments = segments_for(issue, prefs)
    assert [(s.section_ids, s.language) for s in segments] == [(("media",), "de")]
    assert segments[0].id == segment_id(("media",), "de") == segments_for(issue, reversed(prefs))[0].id
    assert segment_id(("media",), "en") != segments[0].id
