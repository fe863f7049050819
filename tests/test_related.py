"""Related content: the right series only, upcoming series events first, similarity for the rest."""

from __future__ import annotations

from datetime import timedelta

import pytest
from compose_fixtures import DIG, ECO, NOW, SEC, WINDOW, event_key, fixture_items, p
from conftest import make_settings

from digest.compose import compose_issue
from digest.models import EventInfo, Item, ItemKind
from digest.related import find_related


@pytest.fixture
def settings(tmp_path):
    return make_settings(tmp_path)


def item(key, title, series=(), kind=ItemKind.BRIEF, days=-30, categories=(), start=None, summary=""):
    return Item(key=key, feed="f", kind=kind, title=title, url=f"https://www.example.org/{key}/",
                published=WINDOW.start + timedelta(days=days), series=series, categories=categories,
                summary_html=summary, event=EventInfo(start=start) if start else None)


def related_keys(links, key):
    return [link.key for link in links[key]]


def test_series_item_links_upcoming_series_events_first_then_same_series(settings):
    subject = item("brief", "European defence procurement", (SEC,), days=2)
    pool = [
        item("sec-old", "Defence procurement in 2019", (SEC,), days=-2000),
        item("sec-event-late", "Defence summit", (SEC,), ItemKind.EVENT, start=WINDOW.end + timedelta(days=20)),
        item("sec-event-soon", "Defence breakfast", (SEC,), ItemKind.EVENT, start=WINDOW.end + timedelta(days=3)),
        item("eco-event", "European defence procurement and trade", (ECO,), ItemKind.EVENT, start=WINDOW.end + timedelta(days=1)),
        item("eco-brief", "European defence procurement budgets", (ECO,)),
    ]
    links = find_related([subject], pool, [SEC, ECO, DIG], 3, WINDOW.end)
    assert related_keys(links, "brief") == ["sec-event-soon", "sec-event-late", "sec-old"]


def test_never_another_series_content_even_when_more_similar(settings):
    subject = item("brief", "Semiconductor export controls", (SEC,), days=2)
    pool = [item("eco", "Semiconductor export controls explained", (ECO,)),
            item("eco-ev", "Semiconductor export controls webinar", (ECO,), ItemKind.EVENT, start=WINDOW.end + timedelta(days=1)),
            item("free", "Semiconductor export controls: a primer"),
            item("unrelated", "Gardening in spring")]
    assert related_keys(find_related([subject], pool, [SEC, ECO], 3, WINDOW.end), "brief") == ["free"]


def test_item_in_no_series_gets_similar_content_but_no_series_event(settings):
    subject = item("news", "Energy prices and the Green Deal", days=2)
    pool = [item("sec-brief", "Green Deal energy prices", (SEC,)),
            item("sec-event", "Green Deal energy prices debate", (SEC,), ItemKind.EVENT, start=WINDOW.end + timedelta(days=2)),
            item("plain", "Energy prices in winter"),
            item("unrelated", "Gardening in spring")]
    assert sorted(related_keys(find_related([subject], pool, [SEC], 3, WINDOW.end), "news")) == ["plain", "sec-brief"]


def test_shared_categories_rank_before_plain_recency(settings):
    subject = item("brief", "Quarterly outlook", (SEC,), days=2, categories=("NATO",))
    pool = [item("newer", "Annual report", (SEC,), days=-1), item("tagged", "Annual report", (SEC,), days=-300, categories=("nato",))]
    assert related_keys(find_related([subject], pool, [SEC], 1, WINDOW.end), "brief") == ["tagged"]


def test_never_itself_nor_the_same_article_twice_nor_media(settings):
    subject = item("brief", "Defence budgets", (SEC,), days=2)
    copy = Item(key="copy", feed="news", kind=ItemKind.NEWS, title="Defence budgets", url=subject.url,
                published=subject.published, series=(SEC,))
    pool = [subject, copy, item("a", "Defence budgets A", (SEC,)), item("a2", "Defence budgets A", (SEC,)),
            Item(key="m", feed="alerts", kind=ItemKind.MEDIA, title="Defence budgets", url="https://news.example/m")]
    pool[3] = Item(**{**pool[3].__dict__, "url": pool[2].url})
    assert related_keys(find_related([subject], pool, [SEC], 3, WINDOW.end), "brief") == ["a"]


def test_no_words_at_all_still_composes(settings):
    subject = item("1", "2026", days=2)
    assert find_related([subject], [item("2", "2025")], [], 3, WINDOW.end) == {"1": ()}


def test_fixture_issue_links_stay_within_the_series_and_sections_carry_the_find_all_url(settings):
    items = fixture_items(settings)
    issue = compose_issue(items, WINDOW, settings.series, settings, NOW, events=items, candidates=items)
    by_key = {i.key: i for i in items}
    security = next(s for s in issue.sections if s.id == SEC)
    assert security.more_url == "https://www.example.org/series/security-defence/"
    brief = next(e for e in security.entries if e.item.key == p(1001))
    assert brief.related[0].key == event_key(2001)  # the series' upcoming conference first
    # Economy & Trade's webinar: related to the item also in that series, to no other Security item.
    assert [e.item.key for e in security.entries if event_key(2003) in [r.key for r in e.related]] == [p(1002)]
    for entry in security.entries:
        assert 0 < len(entry.related) <= settings.digest.related_links
        for link in entry.related:
            assert link.key != entry.item.key
            linked = by_key[link.key]
            assert not linked.series or set(linked.series) & set(entry.item.series)
    for entry in (e for s in issue.sections for e in s.entries if not e.item.series):
        assert all(not by_key[r.key].series or by_key[r.key].kind != ItemKind.EVENT for r in entry.related)


def test_content_published_after_the_window_is_not_linked(settings):
    subject = item("brief", "Defence budgets", (SEC,), days=2)
    before = item("before", "Defence budgets before", (SEC,), days=-3)
    after = item("after", "Defence budgets after", (SEC,), days=8)  # the window is 7 days long
    issue = compose_issue([subject], WINDOW, settings.series, settings, NOW, candidates=[before, after])
    assert [r.key for r in issue.sections[0].entries[0].related] == ["before"]
