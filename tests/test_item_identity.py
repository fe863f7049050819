"""Issue 15 on real feed files: item identity without guid and link, text titles, near-miss series, item languages."""

import os
import re
from pathlib import Path

from conftest import make_settings

from digest.models import Feed, ItemKind, Series
from digest.parse import ParseResult, first_words, parse_feed
from digest.pipeline.ingest import fetch_all
from digest.store.items import get_item, save_items

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
SERIES = [
    Series("esa-security-defence", "European Strategic Autonomy series – Security & Defence"),
    Series("esa-economy-trade", "European Strategic Autonomy series – Economy & Trade"),
    Series("esa-digital-technology", "European Strategic Autonomy series – Digital & Technology"),
]


def parse(name: str, feed_name: str | None = None, kind: str = "brief") -> ParseResult:
    feed = Feed(name=feed_name or name, url=f"https://feeds.example.net/{name}", kind=ItemKind(kind))
    return parse_feed((FEEDS / name).read_bytes(), feed, SERIES)


# --- identity -------------------------------------------------------------------------------------
def test_three_description_only_items_stay_three():
    result = parse("description-only.xml")
    assert result.error is None and result.warnings == []  # RSS 2.0 allows it: nothing to act on
    assert result.notes == ["3 item(s) without a link, shown without one"]
    assert len(result.items) == 3 and len({i.key for i in result.items}) == 3
    assert all(i.key.startswith("content:") and i.url == "" for i in result.items)
    assert result.items[0].title == "Our Brussels office is closed on 24 and 25 December."
    assert [i.key for i in parse("description-only.xml").items] == [i.key for i in result.items]  # stable


def test_the_key_without_guid_and_link_includes_the_feed():
    a = parse("description-only.xml", "Notices").items[0]
    b = parse("description-only.xml", "Front desk").items[0]
    assert a.key != b.key


def test_two_feeds_of_title_less_entries_never_overwrite_each_other(engine):
    """feedparser's atom10/entry_content_escaped_markup.xml and entry_content_text_plain.xml in one configuration."""
    markup = parse("atom-content-escaped-markup.xml", "Policy notes").items
    plain = parse("atom-content-text-plain.xml", "Press desk").items
    assert len(markup) == len(plain) == 1 and markup[0].key != plain[0].key
    order = ("Policy notes", "Press desk")
    assert save_items(engine, markup, feed_order=order).new == 1
    assert save_items(engine, plain, feed_order=order).new == 1
    assert get_item(engine, markup[0].key).feed == "Policy notes"
    assert get_item(engine, plain[0].key).feed == "Press desk"
    assert "policy note" in get_item(engine, markup[0].key).summary_html


def test_an_item_without_a_usable_url_is_keyed_by_content_and_has_no_link():
    items = {i.key: i for i in parse("rss-titles.xml").items}
    linkless = [i for i in items.values() if not i.url]
    assert len(linkless) == 2
    guided = next(i for i in linkless if i.key == "https://www.example.org/?p=61004")  # a guid still keys it
    markup_link = next(i for i in linkless if i is not guided)
    assert markup_link.key.startswith("content:")
    assert markup_link.title == "An item whose link is markup and whose title is only a line break."
    assert guided.title.startswith("Enlargement after 2030: what the candidate countries expect")


def test_an_item_without_url_is_stored_and_counted_once_across_fetches(tmp_path, store_url, engine):
    (tmp_path / "notices.xml").write_bytes((FEEDS / "description-only.xml").read_bytes())
    settings = make_settings(tmp_path, store_url, feeds=[{"name": "Notices", "url": "notices.xml", "kind": "news"}])
    (first,) = fetch_all(settings, engine)
    assert (first.status.value, first.items, first.new) == ("ok", 3, 3)
    os.utime(tmp_path / "notices.xml", ns=(1, 1))  # another mtime: read and parsed again
    (again,) = fetch_all(settings, engine)
    assert (again.items, again.new, again.updated) == (3, 0, 0)


# --- titles ---------------------------------------------------------------------------------------
def test_atom_titles_typed_as_text_keep_every_character():
    result = parse("atom-text-titles.xml")
    assert result.title == "Web history <notes>"
    assert [i.title for i in result.items] == [
        "History of the <blink> tag",
        "Why x<y and y>z matters",
        "Fish & chips: a history",
        "The xhtml title",
    ]


def test_rss_titles_that_are_plain_keep_every_character_and_html_ones_lose_their_markup():
    titles = [i.title for i in parse("rss-titles.xml").items]
    assert titles[:3] == ["History of the <blink> tag", "Why x<y and y>z matters", "Double-escaped HTML & a title"]


def test_a_pure_markup_title_becomes_the_summarys_first_words():
    items = parse("rss-titles.xml").items
    banner = next(i for i in items if i.key == "https://www.example.org/?p=61004")
    assert banner.title == ("Enlargement after 2030: what the candidate countries expect from the Union, "
                            "and what the Union expects from them in…")
    assert len(banner.title) <= 120 and "<" not in banner.title


def test_first_words_cut_between_words():
    assert first_words("short") == "short"
    text = "word " * 40
    cut = first_words(text.strip(), 30)
    assert cut.endswith("…") and cut[:-1].split() == ["word"] * 5


def test_text_titles_are_escaped_in_the_email_and_an_item_without_url_has_no_link(settings):
    from render_fixtures import SERIES_IDS, WINDOW, all_sections, brief, section

    from digest.models import Issue, IssueStatus, SectionType
    from digest.render import personalise, render_edition

    items = [brief(1, SERIES_IDS[0], title="Why x<y and y>z matters"),
             brief(2, SERIES_IDS[0], title="History of the <blink> tag", url="")]
    issue = Issue(number=1, status=IssueStatus.DRAFT, window=WINDOW,
                  sections=(section(SERIES_IDS[0], SectionType.SERIES, "Security", items, series=SERIES_IDS[0]),))
    values = {"name": "Zoë", "email": "zoe@example.com", "unsubscribe_url": "https://www.example.org/u/1",
              "preferences_url": "https://www.example.org/p/1", "view_url": "https://www.example.org/archive/1"}
    html, text = personalise(render_edition(issue, all_sections(issue), settings), values)
    assert "Why x&lt;y and y&gt;z matters" in html and "<blink>" not in html
    assert "History of the &lt;blink&gt; tag" in html
    assert "Why x<y and y>z matters" in text and "History of the <blink> tag" in text
    links = re.findall(r"<a\b[^>]*>(.*?)</a>", html, re.S)
    assert any("Why x&lt;y" in text for text in links)
    assert not any("blink" in text for text in links)  # the URL-less item's title is no link


# --- near-miss series categories ------------------------------------------------------------------
def test_a_category_that_nearly_names_a_series_is_a_warning_with_the_alias_to_add():
    result = parse("near-miss-categories.xml")
    chips, defence, trade = result.items
    assert chips.series == () and defence.series == () and trade.series == ("esa-economy-trade",)
    misses = [w for w in result.warnings if "matches no series" in w]
    assert len(misses) == 2  # the Digital typo once (two spellings of it), the US "Defense" once
    digital = next(w for w in misses if "Europen" in w)
    assert "did you mean 'European Strategic Autonomy series – Digital & Technology'?" in digital
    assert "id = 'esa-digital-technology': aliases = [\"Europen Strategic Autonomy series – Digital & Technology\"]" in digital
    assert any("Security & Defense" in w and "esa-security-defence" in w for w in misses)
    # A different category stays silent: "… – Archive" and "Security & Defence" alone.
    assert not any("Archive" in w or "'Security & Defence'" in w for w in result.warnings)


def test_near_misses_are_reported_through_the_feeds_status(tmp_path, store_url, engine):
    (tmp_path / "pubs.xml").write_bytes((FEEDS / "near-miss-categories.xml").read_bytes())
    settings = make_settings(tmp_path, store_url, feeds=[{"name": "Publications", "url": "pubs.xml", "kind": "brief"}])
    (report,) = fetch_all(settings, engine)
    assert report.status.value == "warning" and "did you mean" in report.message and report.new == 3


# --- item languages -------------------------------------------------------------------------------
def test_items_whose_text_strongly_disagrees_with_the_channel_language_are_detected():
    languages = {i.title: i.language for i in parse("events-languages.xml", kind="event").items}
    assert languages == {
        "Podiumsdiskussion: Wie souverän ist Europas Energieversorgung?": "de",
        "Table ronde : quelle politique industrielle pour l’Union ?": "fr",
        "Webinar: Digitale Souveränität": "en",  # too little text to overrule the feed
        "Launch: the Sovereign Union, with its authors": "en",
        "Dibattito: l’Europa e il Mediterraneo": "en",  # the item's own dc:language is final
    }


def test_the_event_fixtures_german_and_french_events_are_no_longer_english():
    languages = {i.title: i.language for i in parse("events-mod-event.xml", kind="event").items}
    assert languages["Wiener Forum: Europas Wirtschaft zwischen Washington und Peking"] == "de"
    assert languages["Rencontre : l’Europe sociale après 2027"] == "fr"
    assert languages["Strategic autonomy in defence: who pays?"] == "en"


def test_the_feed_configs_language_is_never_overruled():
    feed = Feed(name="Events", url="https://feeds.example.net/e", kind=ItemKind.EVENT, language="en")
    result = parse_feed((FEEDS / "events-languages.xml").read_bytes(), feed, SERIES)
    assert {i.language for i in result.items} == {"en"}


def test_a_feed_in_its_declared_language_never_loads_the_language_model():
    """The check is gated by function words: a monolingual feed costs no model (≈0.8 s and ≈65 MB per worker)."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from digest.models import Feed, ItemKind; "
            "from digest.parse import parse_feed; "
            f"r = parse_feed(Path({str(FEEDS / 'wordpress-rss.xml')!r}).read_bytes(), Feed('W', 'x', ItemKind.BRIEF), []); "
            "assert {i.language for i in r.items} == {'en'}, r.items; print('py3langid' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
