"""What an edition shows: an Issue and a Segment turned into plain data for the templates.

Pure functions. Every string from a feed or the staff is plain text here (control characters,
non-characters and line breaks collapsed, placeholders and Jinja openers neutralised), summaries are text
excerpts, and only absolute http(s) URLs survive; the templates escape everything. Labels and dates
are localised in the segment's language.
"""

from __future__ import annotations

import html as html_lib
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

import nh3

from . import i18n
from .branding import check_accent
from .clicks import ClickLinks, click_links
from .config import BrandingSettings, Settings
from .feed_images import allowed_image
from .models import EditorialTexts, Issue, IssueEntry, Item, ItemKind, Section, SectionType, Segment
from .segments import edition_sections
from .unsafe_chars import CONTROLS, CONTROLS_ASCII, NONCHARACTERS, SURROGATES

# Per-subscriber placeholders start with this (see render.PLACEHOLDERS); content must never contain one.
PLACEHOLDER_PREFIX = "[[DIGEST:"
# What never belongs in an edition's text or URLs: C0 and C1 controls, DEL, the Unicode line and
# paragraph separators, lone surrogates and the non-characters (U+FDD0–U+FDEF and U+FFFE/U+FFFF in
# every plane). MRML refuses the XML-invalid ones (most C0 controls, U+FFFE, U+FFFF) outright, so
# one such character in one feed title would fail every edition.
CONTROL = re.compile(f"[{CONTROLS}{SURROGATES}{NONCHARACTERS}]+")
# The ASCII part of CONTROL: per-subscriber values (addresses, signed links) are nearly always ASCII,
# and str.isascii() is free, so they skip the long character class (a third of a placeholder fill's cost).
_CONTROL_ASCII = re.compile(f"[{CONTROLS_ASCII}]+")
# "{{" and "{%" in content would read as unrendered Jinja in the output (render.py refuses that).
_JINJA_OPENERS = re.compile(r"\{(?=[{%])")


def _control_class(text: str) -> re.Pattern[str]:
    return _CONTROL_ASCII if text.isascii() else CONTROL


def replace_controls(text: str) -> str:
    """`text` with every run of CONTROL characters replaced by a space."""
    return _control_class(text).sub(" ", text)


def neutralise_markers(text: str) -> str:
    """Break placeholder markers and Jinja openers in content with an invisible word joiner.

    A title saying "[[DIGEST:email]]" must not leak the address, and a title saying "{{ x }}" must
    not look like a template mistake.
    """
    if PLACEHOLDER_PREFIX in text:
        text = text.replace(PLACEHOLDER_PREFIX, "[[DIGEST\u2060:")
    return _JINJA_OPENERS.sub("{\u2060", text) if "{" in text else text


# --- the view: plain data the templates show ------------------------------------------------------

@dataclass(frozen=True)
class _ViewContext:
    settings: Settings
    language: str
    gettext: Any
    ngettext: Any
    summary_chars: int
    cap: int | None
    issue_number: int | None
    texts: EditorialTexts = EditorialTexts("")  # the subject, intro and lead this language's readers get
    clicks: ClickLinks | None = None  # counted links (digest.clicks), None: links go straight to their targets


def edition_view(issue: Issue, segment: Segment, settings: Settings, summary_chars: int,
                 cap: int | None = None) -> dict[str, Any]:
    """Everything the templates show about an issue, as plain strings the templates escape.

    Summaries are cut to `summary_chars`; `cap` limits items per section (the rest counted in `hidden`).
    """
    trans = i18n.translations(segment.language)
    texts = issue.editorial.texts_for(segment.language, settings.site.language)
    ctx = _ViewContext(settings, segment.language, trans.gettext, trans.ngettext, summary_chars, cap, issue.number,
                       clicks=click_links(settings, issue, segment.language), texts=texts)
    events = next((s.entries for s in issue.sections if s.type == SectionType.EVENTS), ())
    shown = edition_sections(issue, segment.section_ids, [s.id for s in settings.series])
    lead, shown = _take_lead_story(shown, issue.editorial.pinned)
    sections = [_section_view(s, ctx, events) for s in shown]
    lead_story = _lead_story_view(lead, ctx, events)
    headline = _subject(issue, ctx)
    # A test send says so in the subject, in the reader's language ("[Test]" leads, so inbox lists show it).
    subject = f"{ctx.gettext('[Test]')} {headline}" if issue.test else headline
    return {
        "language": segment.language, "site": _site_view(settings), "subject": subject, "headline": headline,
        "preheader": _preheader(([lead_story["title"]] if lead_story else []), sections, headline, ctx),
        "edition_label": _edition_label(issue, ctx), "intro": _typeset_paragraphs(texts.intro, ctx),
        "lead_story": lead_story,
        "sections": sections, "test": issue.test, "public": issue.public, "greeting": settings.render.greeting,
        "colon": i18n.colon(segment.language),
    }


def _site_view(settings: Settings) -> dict[str, str]:
    """The masthead's and footer's values: [branding] (digest.toml's or the store's) over [site].

    The accent is checked again here (a bad one falls back to the default), so no setting can make
    links unreadable; `accent_dark` is its partner for dark mode (digest.branding).
    """
    site, brand = settings.site, settings.branding
    try:
        accent = check_accent(brand.accent_color)
    except ValueError:
        accent = check_accent(BrandingSettings().accent_color)
    if not accent.ok:
        accent = check_accent(BrandingSettings().accent_color)
    name = display_line(site.name)
    return {"name": name, "url": safe_url(site.url) or "",
            "logo_url": safe_url(brand.logo_url) or safe_url(site.logo_url) or "",
            "logo_alt": display_line(brand.logo_alt) or name, "accent": accent.colour, "accent_dark": accent.dark_colour,
            "footer_text": display_line(brand.footer_text),
            "postal_address": display_line(settings.postal_address)}


def _edition_label(issue: Issue, ctx: _ViewContext) -> str:
    dates = i18n.date_range(issue.window.start, issue.window.end, ctx.language, ctx.settings.site.tz)
    if issue.number is None:
        return dates
    return ctx.gettext("Issue %(number)s · %(dates)s") % {"number": issue.number, "dates": dates}


def _subject(issue: Issue, ctx: _ViewContext) -> str:
    if ctx.texts.subject.strip():
        return i18n.typeset(display_line(ctx.texts.subject), ctx.language)
    # Dated the day the window ends (the day it goes out), as manifest.default_subject does in English.
    day = i18n.long_date(issue.window.end, ctx.language, ctx.settings.site.tz)
    return ctx.gettext("%(site)s digest — %(date)s") % {"site": display_line(ctx.settings.site.name), "date": day}


def _preheader(lead_titles: list[str], sections: list[dict], subject: str, ctx: _ViewContext) -> str:
    """40–140 characters that add to the subject: the intro's start, else the lead story's and the
    sections' first titles."""
    intro = _typeset_paragraphs(ctx.texts.intro, ctx)
    titles = [*lead_titles, *(s["entries"][0]["title"] for s in sections if s["entries"])]
    lead = intro[0] if intro else " · ".join(titles)
    generic = i18n.elide(ctx.gettext("Publications, events and media mentions from %(site)s") % {
        "site": display_line(ctx.settings.site.name)}, ctx.language)
    text = truncate(lead, 140)
    if len(text) < 40 or text == subject:
        text = truncate(f"{text} – {generic}" if text else generic, 140)
    # The generic line alone is over 40 characters in every catalogue language.
    return text


# How many upcoming events of a series its section announces ("Coming up in this series: …").
COMING_UP_EVENTS = 3


def _section_view(section: Section, ctx: _ViewContext, events: tuple[IssueEntry, ...] = ()) -> dict[str, Any]:
    entries = section.entries if ctx.cap is None else section.entries[:ctx.cap]
    series = ctx.settings.series_by_id().get(section.series or "")
    more_url = _link(section.more_url or (series.url if series else ""), section.id, ctx)
    coming_up = _coming_up(section, events, ctx)
    shown_events = {c["key"] for c in coming_up}
    return {
        "id": section.id, "type": str(section.type), "title": _section_title(section, ctx),
        "full_title": _series_name(section, ctx),
        "coming_up": coming_up,
        "entries": [_item_view(entry, section.id, ctx, shown_events) for entry in entries],
        "hidden": len(section.entries) - len(entries),
        "hidden_url": more_url or _link(ctx.settings.site.url, section.id, ctx) or "",
        "more_url": more_url or "",
    }


def _coming_up(section: Section, events: tuple[IssueEntry, ...], ctx: _ViewContext) -> list[dict[str, str]]:
    """A series' upcoming events (soonest first, as the events section lists them), once per section."""
    if section.type != SectionType.SERIES or not section.series:
        return []
    found = []
    for entry in events:
        item = entry.item
        url = _link(item.url, section.id, ctx, item.key)
        if section.series in item.series and url and item.event and item.event.start:
            day, _ = i18n.event_when(item.event.start, item.event.end, ctx.language, ctx.settings.site.tz)
            found.append({"key": item.key, "title": display_line(item.title) or url, "url": url, "date": day})
    return found[:COMING_UP_EVENTS]


def _series_name(section: Section, ctx: _ViewContext) -> str:
    """The series' full name in the edition's language where it has one, else its configured name
    (the section's own title, as the issue was built, for other sections)."""
    series = ctx.settings.series_by_id().get(section.series or "")
    named = dict(series.names).get(ctx.language) if series else None
    return display_line(named or section.title or (series.name if series else section.id))


def _section_title(section: Section, ctx: _ViewContext) -> str:
    if section.type in _SECTION_TITLES:
        return ctx.gettext(_SECTION_TITLES[section.type])
    return short_series_name(_series_name(section, ctx))


# "European Strategic Autonomy series – Security & Defence": the part after the last dash or colon
# is what tells one section from the next.
_NAME_PARTS = re.compile(r"\s+[–—]\s+|\s+-\s+|:\s+")


def short_series_name(name: str) -> str:
    """A series' short head: the last part of "Programme – Topic" names, else the whole name."""
    parts = [p for p in _NAME_PARTS.split(name) if p.strip()]
    return parts[-1].strip() if parts else name


def N_(message: str) -> str:  # the gettext convention: marks a string for extraction only
    return message


_KIND_LABELS = {ItemKind.BRIEF: N_("Brief"), ItemKind.ARTICLE: N_("Article"), ItemKind.NEWS: N_("News"),
                ItemKind.EVENT: N_("Event"), ItemKind.MEDIA: N_("Media")}
_SECTION_TITLES = {SectionType.EVENTS: N_("Upcoming events"), SectionType.MEDIA: N_("In the media"),
                   SectionType.MORE: N_("More from us")}


def _item_view(entry: IssueEntry, section_id: str, ctx: _ViewContext,
               shown_events: set[str] = frozenset()) -> dict[str, Any]:
    item = entry.item
    language = i18n.known_language(item.language)
    marker = None
    # A badge only where the item's language is known (a real ISO 639-1 code, not "und" or "xx")
    # and differs from the edition's.
    if language and language != ctx.language:
        marker = {"code": language.upper(), "name": i18n.language_name(language, language)}
    # The section already announces its series' upcoming events: not again under each item.
    related = [{"title": display_line(r.title) or r.url, "url": _link(r.url, section_id, ctx, r.key)}
               for r in entry.related if r.shown_in(ctx.language)
               if r.key not in shown_events][:ctx.settings.digest.related_links]
    series = ctx.settings.series_by_id()
    also_in = [short_series_name(display_line(series[s].name_in(ctx.language) if s in series else s))
               for s in entry.also_in]
    return {
        "kind": str(item.kind), "title": display_line(item.title) or ctx.gettext("(untitled)"),
        "url": _link(item.url, section_id, ctx, item.key), "language": language if marker else ctx.language,
        "marker": marker, "meta": _item_meta(item, ctx),
        "summary": truncate(summary_text(item.summary_html or item.content_html), ctx.summary_chars),
        "related": [r for r in related if r["url"]],
        "also_in": ", ".join(also_in),
        "event": _event_view(item, ctx) if item.kind == ItemKind.EVENT and item.event else None,
        # Thumbnails go with the summaries when the edition must shrink (render.FIT_STEPS).
        "image": _image_view(item, THUMBNAIL, ctx.settings) if ctx.summary_chars > 0 else None,
    }


# --- the lead story and images -------------------------------------------------------------------

def _take_lead_story(sections: tuple[Section, ...], pinned: tuple[str, ...]
                     ) -> tuple[tuple[Section, IssueEntry] | None, tuple[Section, ...]]:
    """The edition's lead story, the first pinned item it has, taken out of its section (so it appears
    once), and the sections without it (a section it leaves empty goes too)."""
    for key in pinned:
        for section in sections:
            entry = next((e for e in section.entries if e.item.key == key), None)
            if entry is None:
                continue
            rest = replace(section, entries=tuple(e for e in section.entries if e is not entry))
            kept = tuple(rest if s is section else s for s in sections if s is not section or rest.entries)
            return (section, entry), kept
    return None, sections


def _lead_story_view(lead: tuple[Section, IssueEntry] | None, ctx: _ViewContext,
                     events: tuple[IssueEntry, ...]) -> dict[str, Any] | None:
    """The lead story, shown larger: its section's name, its image, and staff's lead text (else its summary)."""
    if lead is None:
        return None
    section, entry = lead
    blurb = _typeset_paragraphs(ctx.texts.lead, ctx)
    # Its section announces the series' upcoming events already: not again as its related links.
    view = _item_view(entry, section.id, ctx, {c["key"] for c in _coming_up(section, events, ctx)})
    return {**view, "section": _section_title(section, ctx), "blurb": blurb,
            "summary": "" if blurb else view["summary"], "image": _image_view(entry.item, LEAD_IMAGE, ctx.settings)}


@dataclass(frozen=True)
class ImageBox:
    """The box an image is shown in: its width and height attributes, so the layout never jumps."""

    width: int
    height: int


LEAD_IMAGE = ImageBox(552, 311)  # the card's full width (600 px less its padding) at 16:9
THUMBNAIL = ImageBox(96, 96)


def _image_view(item: Item, box: ImageBox, settings: Settings) -> dict[str, Any] | None:
    src = edition_image(item.image, settings)
    if src is None:
        return None
    return {"src": src, "alt": display_line(item.title), "width": box.width, "height": box.height}


def edition_image(url: str | None, settings: Settings) -> str | None:
    """`url` if an edition may show it: images on (render.images), a safe https URL from an allowed
    host (digest.feed_images.allowed_image: render.image_hosts, else site.url's domain).

    Ingest checked it already; checked again here because settings change and stored issues outlive them.
    """
    if not url or not settings.render.images:
        return None
    safe = safe_url(url)
    if safe is None or not allowed_image(safe, settings.render.image_hosts, settings.site.url):
        return None
    return safe


def _item_meta(item: Item, ctx: _ViewContext) -> str:
    parts = []
    if item.kind == ItemKind.MEDIA:
        outlet = display_line(item.media.outlet if item.media else "")
        parts.append(outlet or ctx.gettext(_KIND_LABELS[item.kind]))
    elif item.kind != ItemKind.EVENT:
        parts.append(ctx.gettext(_KIND_LABELS.get(item.kind, "Brief")))
    when = item.effective_published
    if when is not None and item.kind != ItemKind.EVENT:
        parts.append(i18n.long_date(when, ctx.language, ctx.settings.site.tz))
    authors = ", ".join(display_line(a) for a in item.authors if display_line(a))
    if authors:
        parts.append(authors)
    return " · ".join(parts)


def _event_view(item: Item, ctx: _ViewContext) -> dict[str, Any]:
    event = item.event
    tz = ctx.settings.site.tz
    date, time = i18n.event_when(event.start, event.end, ctx.language, tz) if event.start else \
        (ctx.gettext("Date to be announced"), "")
    mode = ""
    if event.hybrid:
        mode = ctx.gettext("Hybrid: on site and online")
    elif event.online:
        mode = ctx.gettext("Online")
    return {
        "date": date, "time": time,
        "place": display_line(event.location), "mode": mode,
        "calendar_url": calendar_url(item, tz) or "",
    }


def calendar_url(item: Item, tz: ZoneInfo | None = None) -> str | None:
    """A Google Calendar "add event" link for an event item (no attachment needed); None without a start.

    With the site timezone `tz`, an all-day event (i18n.is_all_day) is added as whole days.
    """
    event = item.event
    if event is None or event.start is None:
        return None
    if tz is not None and i18n.is_all_day(event.start, event.end, tz):
        first, last = i18n.event_days(event.start, event.end, tz)
        dates = f"{first:%Y%m%d}/{last + timedelta(days=1):%Y%m%d}"  # Google's end day is exclusive
    else:
        end = event.end if event.end and event.end > event.start else event.start + timedelta(hours=1)
        stamp = "%Y%m%dT%H%M%SZ"
        dates = f"{_utc(event.start).strftime(stamp)}/{_utc(end).strftime(stamp)}"
    params = {"action": "TEMPLATE", "text": display_line(item.title),
              "dates": dates,
              "details": safe_url(item.url) or "", "location": display_line(event.location)}
    return "https://calendar.google.com/calendar/render?" + urlencode({k: v for k, v in params.items() if v})


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# --- safe content ---------------------------------------------------------------------------------

_SPACES = re.compile(r"\s+")


def display_line(text: str | None) -> str:
    """One line of plain text: control characters, non-characters and line breaks collapsed, markers neutralised."""
    if not text:
        return ""
    return neutralise_markers(_SPACES.sub(" ", replace_controls(text)).strip())


def summary_text(summary_html: str | None) -> str:
    """Feed HTML (already sanitised at parse, cleaned again here) as plain text: email shows excerpts."""
    if not summary_html:
        return ""
    stripped = nh3.clean(summary_html, tags=set(), attributes={})
    return display_line(html_lib.unescape(stripped))


def truncate(text: str, limit: int) -> str:
    """At most `limit` characters, cut at a word boundary with an ellipsis; 0 gives ""."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    cut = text[:limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[:cut.rindex(" ")]
    return cut.rstrip(" ,;:.–-·") + "…"


def _paragraphs(text: str) -> list[str]:
    return [display_line(p) for p in re.split(r"\n\s*\n", text or "") if display_line(p)]


def _typeset_paragraphs(text: str, ctx: _ViewContext) -> list[str]:
    """A staff-written text's paragraphs with the edition language's spacing (i18n.typeset)."""
    return [i18n.typeset(paragraph, ctx.language) for paragraph in _paragraphs(text)]


_URL_ESCAPES = str.maketrans({c: f"%{ord(c):02X}" for c in ' "<>\'`[]{}|\\^'})


def safe_url(url: str | None) -> str | None:
    """The URL if it is absolute http(s) with a host (control characters and non-characters refused); else None."""
    if not url or _control_class(url).search(url):
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host or parts.netloc.translate(_URL_ESCAPES) != parts.netloc:
        return None
    # Characters that have no business in a URL are percent-encoded: quotes and angle brackets cannot
    # leave an attribute, and brackets cannot form a live placeholder.
    path, query, fragment = (p.translate(_URL_ESCAPES) for p in (parts.path, parts.query, parts.fragment))
    return urlunsplit((parts.scheme.lower(), parts.netloc, path, query, fragment))


def _link(url: str | None, section_id: str, ctx: _ViewContext, item_key: str = "") -> str | None:
    """The edition's link to `url` (None unless absolute http(s)), shown in `section_id` for the item `item_key`.

    Its target is the safe URL, with UTM parameters where delivery.utm asks for them; with counted
    links (web.count_clicks, digest.clicks) the link is the signed redirect to that target.
    digest.pipeline.clicks.issue_links finds the same targets again when a counted link is followed.
    """
    safe = safe_url(url)
    if safe is not None and ctx.settings.delivery.utm:
        safe = add_utm(safe, ctx.settings.site.url, section_id, ctx.issue_number)
    if safe is None or ctx.clicks is None:
        return safe
    return ctx.clicks.url(section_id, item_key, safe)


def add_utm(url: str, site_url: str, section_id: str, issue_number: int | None) -> str:
    """utm_source/medium/campaign/content added to links whose host is the site's host (others untouched)."""
    parts = urlsplit(url)
    if (parts.hostname or "") != (urlsplit(site_url).hostname or "").lower():
        return url
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not k.startswith("utm_")]
    campaign = f"digest-{issue_number}" if issue_number is not None else "digest"
    query += [("utm_source", "digest"), ("utm_medium", "email"), ("utm_campaign", campaign),
              ("utm_content", section_id)]
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
