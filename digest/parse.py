"""Feed bytes → clean, typed Items. Pure: no I/O, no clock.

feedparser always reads an `io.BytesIO` (given a string it would open files and URLs), and
only after `digest.defuse` checked the DTD for entity declarations (billion laughs, external
entities) and cut over-long author texts (feedparser's e-mail regex is quadratic in them).
feedparser's own sanitiser and URI resolution are off; every HTML field goes through nh3
(`digest.sanitize`) with relative links resolved against xml:base, else the channel's link,
and never against the URL the feed was fetched from. The encoding is chosen first
(`digest.feed_encoding`: the server's charset, the document's declaration, detection), and an entry
without guid and link is keyed by its feed and content (`digest.item_keys`). See docs/feeds.md.
"""

from __future__ import annotations

import html
import io
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from email.utils import parsedate_to_datetime

import feedparser
from feedparser import CharacterEncodingOverride

from .clean_text import clean_item
from .defuse import refusal, replace_invalid_char_refs, trim_person_names
from .feed_encoding import EncodingChoice, choose_encoding
from .feed_images import pick_image
from .item_keys import bounded_key, content_key
from .language import item_language, normalise_language
from .models import EventInfo, Feed, Item, ItemKind, MediaInfo, Series, earliest_published
from .sanitize import (
    MAX_NAME_CHARS,
    host_name,
    html_from_text,
    looks_like_markup,
    plain_text,
    safe_link,
    sanitize_html,
    unwrap_redirect,
)
from .series import match_series, near_misses

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "html", "xhtml"})

ERROR_NOT_FEED = "not a feed: no RSS, Atom or RDF document found"


@dataclass(frozen=True)
class ParseResult:
    """What one feed's bytes held: items, warnings (recovered problems) or an error (nothing read).

    `notes` are worth knowing but need no action, so they leave the feed "ok" (a guid repeated
    inside the feed, as WordPress does with sticky posts every week; the encoding of a feed that is
    not UTF-8); warnings are for staff to act on (a category that nearly names a series: add the
    alias). `encoding` says which character encoding was used and why ("koi8-r, declared by the server").
    """

    items: list[Item]
    warnings: list[str]
    error: str | None
    title: str = ""
    notes: list[str] = field(default_factory=list)
    encoding: str = ""


@dataclass(frozen=True)
class _Context:
    feed: Feed
    series: Sequence[Series]
    channel_link: str
    channel_language: str | None
    # Atom declares a text construct's type (text by default); RSS leaves feedparser to guess it.
    types_declared: bool


def parse_feed(body: bytes, feed: Feed, series: Sequence[Series], content_location: str | None = None,
               content_type: str | None = None) -> ParseResult:
    """Parse and normalise one feed's bytes into Items; never raises for bad input.

    `content_type` is the HTTP Content-Type the body came with: its charset decides the encoding
    (digest.feed_encoding). `content_location` (the URL the body came from) is accepted but
    deliberately not used as a base for relative links: a feed served through a redirect or CDN
    would get wrong links. Neither reaches feedparser as such (see _parse).
    """
    refused = refusal(body)
    if refused:
        return ParseResult([], [], refused)
    body = replace_invalid_char_refs(trim_person_names(body))
    choice = choose_encoding(body, content_type)
    try:
        parsed = _parse(body, choice)
    except Exception as exc:  # noqa: BLE001 - a feedparser bug on odd input costs this feed only
        return ParseResult([], [], f"{ERROR_NOT_FEED} (feedparser failed: {exc.__class__.__name__}: {exc})")
    if not parsed.get("version") and not parsed.entries:
        reason = parsed.get("bozo_exception")
        return ParseResult([], [], f"{ERROR_NOT_FEED} ({reason})" if reason else ERROR_NOT_FEED)
    warnings = _document_warnings(parsed)
    encoding = _encoding_used(parsed, choice)
    # UTF-8 (and its subset ASCII) goes without saying; a wrong declaration is a warning already.
    quiet = encoding.startswith(("utf-8,", "us-ascii,", "ascii,")) or _encoding_overridden(parsed)
    notes: list[str] = [] if quiet else [f"text decoded as {encoding}"]
    context = _context(parsed, feed, series)
    items = _items(parsed.entries, context, warnings, notes)
    warnings += near_misses(_all_terms(parsed.entries), series)
    return ParseResult(items, warnings, None, _title(parsed, context), notes, encoding)


def _parse(body: bytes, choice: EncodingChoice) -> feedparser.FeedParserDict:
    """feedparser on the bytes; an encoding digest chose reaches it as the one header it reads.

    Only a Content-Type, and always an XML one: the server's media type (text/html, text/xml
    without charset, which RFC 3023 reads as US-ASCII) would otherwise cost warnings, and a
    Content-Location would become a base for relative links.
    """
    headers = {"content-type": f"application/xml; charset={choice.encoding}"} if choice.encoding else None
    return feedparser.parse(io.BytesIO(body), sanitize_html=False, resolve_relative_uris=False,
                            response_headers=headers)


def _encoding_used(parsed: feedparser.FeedParserDict, choice: EncodingChoice) -> str:
    """"koi8-r, declared by the server": the encoding feedparser decoded with, and why it was that one."""
    used = (parsed.get("encoding") or "").lower() or "unknown"
    if _encoding_overridden(parsed):
        return f"{used}, the one that fits the bytes (the declared one does not)"
    return f"{used}, {choice.reason}"


def _encoding_overridden(parsed: feedparser.FeedParserDict) -> bool:
    return isinstance(parsed.get("bozo_exception"), CharacterEncodingOverride)


def _document_warnings(parsed: feedparser.FeedParserDict) -> list[str]:
    if not parsed.get("bozo"):
        return []
    exc = parsed.get("bozo_exception")
    if isinstance(exc, CharacterEncodingOverride):
        return [f"wrong character encoding: {exc}; check the text of its items"]
    return [f"malformed feed, recovered {len(parsed.entries)} item(s): {exc}"]


# --- the feed -------------------------------------------------------------------------------------
def _context(parsed: feedparser.FeedParserDict, feed: Feed, series: Sequence[Series]) -> _Context:
    channel = parsed.feed
    return _Context(
        feed=feed,
        series=series,
        channel_link=safe_link(channel.get("link")),
        channel_language=normalise_language(channel.get("language")),
        types_declared=str(parsed.get("version") or "").startswith("atom"),
    )


def _title(parsed: feedparser.FeedParserDict, context: _Context) -> str:
    return _text_construct(parsed.feed.get("title", ""), parsed.feed.get("title_detail"), context)


def _text_construct(value: str, detail: dict | None, context: _Context) -> str:
    """A title as plain text: markup stripped only when it is HTML.

    Atom declares it (type="text" is the default: "History of the <blink> tag" keeps every
    character). RSS does not, and feedparser guesses HTML only from a closing tag or an entity it
    knows; digest also counts a lone known element (`<img …>`) and a closed one feedparser does
    not list, so a title that is only markup is no title (the summary's first words stand in).
    """
    declared_html = (detail or {}).get("type") in HTML_TYPES
    is_html = declared_html or (not context.types_declared and looks_like_markup(value or ""))
    return plain_text(value, is_html)


def _items(entries: list, context: _Context, warnings: list[str], notes: list[str]) -> list[Item]:
    """Normalised items in feed order; the first of several entries with one key wins, with the earliest publication time.

    Several entries with one key are one item published once: at the earliest of their times (a
    second Google Alert for an article is not a later article; WordPress repeats sticky posts).
    """
    items: dict[str, Item] = {}
    linkless = 0
    for number, entry in enumerate(entries, start=1):
        try:
            item = _item(entry, context)
        except Exception as exc:  # noqa: BLE001 - one odd entry must not cost the others
            warnings.append(f"skipped entry {number}: {exc.__class__.__name__}: {exc}")
            continue
        if not item.url and (entry.get("link") or "").strip():
            # A link that is there but unusable (javascript:, markup, relative without a base) is the
            # publisher's to fix; none at all is allowed by RSS 2.0 and nothing anyone can act on.
            warnings.append(f"entry {number} ({item.title[:60]!r}) has no usable http(s) link")
        elif not item.url:
            linkless += 1
        if item.key in items:
            items[item.key] = earliest_published(items[item.key], item)
            if context.feed.kind is not ItemKind.MEDIA:  # repeated alerts are normal, not even a note
                notes.append(f"entry {number} repeats the key {item.key!r}; kept the first")
            continue
        items[item.key] = item
    if linkless:
        notes.append(f"{linkless} item(s) without a link, shown without one")
    return list(items.values())


# --- one entry ------------------------------------------------------------------------------------
def _item(entry: feedparser.FeedParserDict, context: _Context) -> Item:
    kind = context.feed.kind
    link = safe_link(entry.get("link"), context.channel_link)
    media = None
    if kind is ItemKind.MEDIA:
        real = unwrap_redirect(link) if link else ""
        media = MediaInfo(outlet=_outlet(entry, real), source_url=link)
        link = real
    title = _text_construct(entry.get("title", ""), entry.get("title_detail"), context)
    content_html = _content_html(entry, context)
    # Atom feeds (Google Alerts among them) often carry only <content>: it is the summary then.
    summary_html = _html_field(entry.get("summary_detail"), context) or content_html
    categories = _categories(entry)
    updated = _datetime(dict.get(entry, "updated_parsed"))  # plain dict.get: no feedparser fallback
    published = _datetime(dict.get(entry, "published_parsed")) or updated
    # No title (none, or only markup): the summary's first words, else the link.
    title = title or first_words(plain_text(summary_html, is_html=True, limit=10**4)) or link
    # Keyed by what the feed said; then cleaned (boilerplate, typography, repeats), the raw kept.
    return clean_item(Item(
        key=_key(entry, link, kind) or content_key(context.feed.name, title, published, summary_html, content_html),
        feed=context.feed.name,
        kind=kind,
        title=title,
        url=link,
        published=published,
        updated=updated,
        authors=_authors(entry),
        categories=categories,
        series=match_series(_raw_terms(entry), context.series),
        language=_language(entry, context, title, summary_html),
        summary_html=summary_html,
        content_html=content_html,
        event=_event(entry, categories) if kind is ItemKind.EVENT else None,
        media=media,
        image=pick_image(entry, content_html or summary_html, link, context.channel_link),
    ))


def _key(entry: feedparser.FeedParserDict, link: str, kind: ItemKind) -> str:
    """guid/id, else the usable link; for media the real article URL, so repeated alerts are one item.

    "" when there is neither: the item is then keyed by its feed and content (digest.item_keys).
    """
    guid = plain_text(entry.get("id") or "", limit=10**6)
    key = (link or guid) if kind is ItemKind.MEDIA else (guid or link)
    return bounded_key(key) if key else ""


TITLE_WORDS_CHARS = 120


def first_words(text: str, limit: int = TITLE_WORDS_CHARS) -> str:
    """The first words of `text` up to `limit` characters, cut between words ("…" when cut)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip(" ,;:.-–") + "…"


def _html_field(detail: dict | None, context: _Context) -> str:
    if not detail or not detail.get("value"):
        return ""
    if detail.get("type") not in HTML_TYPES:
        return html_from_text(detail["value"])
    return sanitize_html(detail["value"], _base(detail.get("base"), context))


def _content_html(entry: feedparser.FeedParserDict, context: _Context) -> str:
    contents = entry.get("content") or []
    chosen = next((c for c in contents if c.get("type") in HTML_TYPES), contents[0] if contents else None)
    return _html_field(chosen, context)


def _base(xml_base: str | None, context: _Context) -> str:
    """xml:base in effect (made absolute against the channel link if needed), else the channel link."""
    return (safe_link(xml_base, context.channel_link) if xml_base else "") or context.channel_link


def _authors(entry: feedparser.FeedParserDict) -> tuple[str, ...]:
    names = []
    for author in entry.get("authors") or []:
        name = plain_text(author.get("name") or author.get("email") or "", is_html=True, limit=MAX_NAME_CHARS)
        if name and name not in names:
            names.append(name)
    if not names and entry.get("author"):
        names.append(plain_text(entry["author"], is_html=True, limit=MAX_NAME_CHARS))
    return tuple(n for n in names if n)


def _all_terms(entries: list) -> list[str]:
    return [term for entry in entries for term in _raw_terms(entry)]


def _raw_terms(entry: feedparser.FeedParserDict) -> list[str]:
    """Category terms as the feed gave them: RSS category, Atom category term, RSS 1.0 dc:subject."""
    return [t.get("term") or t.get("label") or "" for t in entry.get("tags") or []]


def _categories(entry: feedparser.FeedParserDict) -> tuple[str, ...]:
    categories = []
    for term in _raw_terms(entry):
        text = plain_text(term, is_html=True, limit=MAX_NAME_CHARS)
        if text and text not in categories:
            categories.append(text)
    return tuple(categories)


def _language(entry: feedparser.FeedParserDict, context: _Context, title: str, summary_html: str) -> str | None:
    """As stated (feed config, xml:lang, dc:language, channel language), else detected.

    The feed's config and an item's own statement (its dc:language, an xml:lang other than the
    channel's) are final. The channel's `<language>` speaks for the whole feed, and feedparser hands
    it down as every entry's xml:lang: an item whose text strongly disagrees with it is detected
    (an events feed declaring `en` with German and French events).
    """
    xml_lang = next(filter(None, map(normalise_language, (
        (entry.get("title_detail") or {}).get("language"), (entry.get("summary_detail") or {}).get("language")))), None)
    final = (
        normalise_language(context.feed.language),
        xml_lang if xml_lang != context.channel_language else None,
        normalise_language(entry.get("language")),
    )
    language = next(filter(None, final), None)
    if language:
        return language
    return item_language(context.channel_language, title, summary_html, lambda: f"{title}. {_text_sample(summary_html)}")


def _text_sample(html_fragment: str, limit: int = 300) -> str:
    """The start of a sanitised fragment's text: enough for language detection, cheap to get."""
    return html.unescape(_TAGS.sub(" ", html_fragment[: limit * 4]))[:limit]


_TAGS = re.compile(r"<[^>]*>?")


def _outlet(entry: feedparser.FeedParserDict, real_url: str) -> str:
    for author in entry.get("authors") or []:
        name = plain_text(author.get("name") or "", is_html=True, limit=MAX_NAME_CHARS)
        if name:
            return name
    source = entry.get("source") or {}
    name = plain_text(source.get("title") or "", is_html=True, limit=MAX_NAME_CHARS)
    return name or host_name(real_url)


# --- dates ----------------------------------------------------------------------------------------
def _datetime(value: time.struct_time | None) -> datetime | None:
    """feedparser's UTC struct_time as an aware datetime (a bare date is 00:00 UTC)."""
    if not value:
        return None
    try:
        return datetime(*value[:5], min(value[5], 59), tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def _offset_of(raw: str | None) -> timezone | None:
    """The UTC offset written in a raw pubDate/published string, if it has one."""
    if not raw:
        return None
    try:
        stamp = datetime.fromisoformat(raw.strip())
    except ValueError:
        try:
            stamp = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    offset = stamp.utcoffset()
    return timezone(offset) if offset is not None else None


def event_time(raw: str | None, naive_offset: timezone | None = None) -> datetime | None:
    """An ev:startdate/ev:enddate value as an aware datetime.

    W3C-DTF/ISO 8601 or RFC 822. A bare date is 00:00 UTC; a time without an offset takes
    `naive_offset` (the item's own pubDate offset), else UTC.
    """
    if not raw or not raw.strip():
        return None
    raw = raw.strip()
    try:
        stamp = datetime.fromisoformat(raw)
    except ValueError:
        try:
            stamp = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw):
        return stamp.replace(tzinfo=UTC)
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=naive_offset or UTC)
    return stamp


# --- events ---------------------------------------------------------------------------------------
_HYBRID = re.compile(
    r"\bhybrid\w*|\bhybride\b|in[- ]person (?:and|&|\+) online|vor ort (?:und|&|\+) online|"
    r"en présentiel et en ligne|présentiel (?:et|&|\+) (?:distanciel|en ligne)",
    re.IGNORECASE,
)
_ONLINE = re.compile(
    r"\bonline\b|\bwebinar\w*|\bwebinaire\w*|\bvirtual\b|\bvirtuel\w*|\bvirtuell\w*|\blive[- ]?stream\w*|"
    r"\ben ligne\b|\bdistanciel\b|\bvisioconf[ée]rence\b|\bzoom\b",
    re.IGNORECASE,
)


def _event(entry: feedparser.FeedParserDict, categories: tuple[str, ...]) -> EventInfo:
    offset = _offset_of(dict.get(entry, "published") or dict.get(entry, "updated"))
    location = plain_text(entry.get("ev_location", ""), is_html=True, limit=MAX_NAME_CHARS)
    event_type = plain_text(entry.get("ev_type", ""), is_html=True, limit=MAX_NAME_CHARS)
    hybrid, online = attendance(location, event_type, categories)
    return EventInfo(
        start=event_time(entry.get("ev_startdate"), offset),
        end=event_time(entry.get("ev_enddate"), offset),
        location=location,
        organizer=plain_text(entry.get("ev_organizer", ""), is_html=True, limit=MAX_NAME_CHARS),
        type=event_type,
        online=online,
        hybrid=hybrid,
    )


def attendance(location: str, event_type: str, categories: Sequence[str] = ()) -> tuple[bool, bool]:
    """(hybrid, online-only) as the location, event type and categories say, in en/de/fr."""
    text = " | ".join([location, event_type, *categories])
    if _HYBRID.search(text):
        return True, False
    return False, _ONLINE.search(text) is not None
