"""Compose: stored items, a window and the series config → an Issue (sections, related links).

Pure functions: the clock is passed in, nothing here reads the store or the time. The rules:
- An item is new when `window.start <= effective_published < window.end` (instants, any timezone);
  items that came in late (digest.offers decides which) are placed too, though published earlier.
- Briefs, articles and news go to the section of their first series (config order), listing the
  others in `also_in`; items in no series go to "more"; media mentions go to "media", one per
  real article; events go to "events" when they start in [window end, window end + horizon).
- Pinned items lead their section (in pin order); dropped items are left out.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from zoneinfo import ZoneInfo

from .config import LANGUAGES, Settings
from .models import (
    EDITORIAL_FIELDS,
    Editorial,
    EditorialTexts,
    Issue,
    IssueEntry,
    IssueStatus,
    Item,
    ItemKind,
    Section,
    SectionType,
    Series,
    Window,
)
from .related import find_related

EVENTS_TITLE = "Upcoming events"
MEDIA_TITLE = "In the media"
MORE_TITLE = "More from us"
FIXED_SECTION_IDS = ("events", "media", "more")
# Within a series section: briefs, then magazine articles, then news.
KIND_ORDER = {ItemKind.BRIEF: 0, ItemKind.ARTICLE: 1, ItemKind.NEWS: 2}
SUBJECT_MAX = 200
INTRO_MAX = 5000
LEAD_MAX = 1000
NO_EDITORIAL = Editorial()


class EditorialError(ValueError):
    """An editorial choice that cannot be applied; the message says what to change."""


# --- the window -----------------------------------------------------------------------------------

def default_window(now: datetime, last_end: datetime | None, window_days: int, tz: ZoneInfo) -> Window:
    """From the end of the last sent issue (first issue: `window_days` back) to now.

    The days are the site's wall-clock days (`tz`): across a daylight-saving change, 7 days back
    from Monday 09:00 is the Monday before at 09:00, 7 days plus or minus an hour.
    """
    # Aware arithmetic within one tzinfo is wall-clock arithmetic; the offset is recomputed after.
    start = last_end if last_end is not None else now.astimezone(tz) - timedelta(days=window_days)
    return Window(start=start, end=now)


def parse_instant(text: str, tz: ZoneInfo) -> datetime:
    """An ISO date or datetime from the command line; naive values are in the site timezone."""
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO date or datetime; use e.g. 2026-11-16 or 2026-11-16T09:00+01:00") from None
    return value.replace(tzinfo=tz) if value.tzinfo is None else value


def is_new(item: Item, window: Window) -> bool:
    """Whether the item was published in the window (compares instants; no date → first seen)."""
    when = item.effective_published
    return when is not None and window.contains(when)


# --- the issue ------------------------------------------------------------------------------------

def compose_issue(
    items: Iterable[Item],
    window: Window,
    series: Sequence[Series],
    settings: Settings,
    now: datetime,
    editorial: Editorial = NO_EDITORIAL,
    events: Iterable[Item] = (),
    candidates: Iterable[Item] = (),
    late: Iterable[Item] = (),
) -> Issue:
    """The draft issue for `window`: sections in display order, with related links on every entry.

    `items` are the window's stored items (others are ignored), `late` items published before the
    window that go into this issue all the same (digest.offers), `events` the stored events that
    may be upcoming, `candidates` other stored content related links may point to (only content
    published before the window end is used, plus the issue's own items and upcoming events).
    """
    tz = settings.site.tz
    base = settings.site.url
    placed_late = [i for i in late if i.kind != ItemKind.EVENT and _published_before(i, window.start)]
    new = [_normalise(i, tz, base) for i in _dedupe([*(i for i in items if is_new(i, window)), *placed_late])]
    upcoming = _upcoming_events(
        (_normalise(e, tz, base) for e in [*events, *(i for i in new if i.kind == ItemKind.EVENT)]),
        window, settings.digest.upcoming_events_days)
    dropped = set(editorial.dropped)
    sections = _sections(new, upcoming, series)
    sections = [_apply_editorial(s, dropped, editorial.pinned) for s in sections]
    placed = [e.item for s in sections for e in s.entries]
    # Only what existed by the window end, so a later refresh of this window links the same content.
    pool = [_normalise(c, tz, base) for c in candidates if _published_before(c, window.end)]
    # A dropped item is not linked from the others either.
    pool = [c for c in [*pool, *upcoming, *new] if c.key not in dropped]
    related = find_related(placed, pool, [s.id for s in series], settings.digest.related_links, window.end,
                           section_of={e.item.key: s.id for s in sections for e in s.entries},
                           series_terms=[t for s in series for t in (s.name, *s.aliases)])
    sections = [replace(s, entries=tuple(replace(e, related=related.get(e.item.key, ())) for e in s.entries))
                for s in sections]
    return Issue(number=None, status=IssueStatus.DRAFT, window=window, sections=tuple(sections),
                 editorial=editorial, created_at=now)


def has_news(issue: Issue) -> bool:
    """Whether anything in the issue was published in its window (upcoming events alone are not news)."""
    return any(is_new(e.item, issue.window) for s in issue.sections for e in s.entries)


def item_keys(issue: Issue) -> list[str]:
    """Keys of every entry, in display order."""
    return [e.item.key for s in issue.sections for e in s.entries]


# --- editorial choices ----------------------------------------------------------------------------

def clean_subject(text: str) -> str:
    """One line of plain text (no CR/LF: it becomes a mail header), at most SUBJECT_MAX characters."""
    line = " ".join("".join(c if unicodedata.category(c)[0] != "C" else " " for c in text).split())
    if len(line) > SUBJECT_MAX:
        raise EditorialError(f"the subject has {len(line)} characters; keep it to {SUBJECT_MAX} at most")
    return line


def clean_intro(text: str, limit: int = INTRO_MAX, what: str = "the intro") -> str:
    """Plain text paragraphs (rendered escaped), control characters removed, at most `limit` characters."""
    kept = "".join(c for c in text.replace("\r\n", "\n").replace("\r", "\n")
                   if c in "\n\t" or unicodedata.category(c)[0] != "C")
    kept = kept.strip()
    if len(kept) > limit:
        raise EditorialError(f"{what} has {len(kept)} characters; keep it to {limit} at most")
    return kept


def clean_lead(text: str) -> str:
    """The lead story's text: like the intro, at most LEAD_MAX characters."""
    return clean_intro(text, LEAD_MAX, "the lead story's text")


_CLEANERS = {"subject": clean_subject, "intro": clean_intro, "lead": clean_lead}


def edit_editorial(issue: Issue, *, intro: str | None = None, subject: str | None = None,
                   drop: Sequence[str] = (), undrop: Sequence[str] = (),
                   pin: Sequence[str] = (), unpin: Sequence[str] = (), lead: str | None = None,
                   texts: Mapping[str, Mapping[str, str | None] | None] | None = None) -> Editorial:
    """The issue's editorial choices with these changes; keys must name entries of the issue.

    `texts` changes other languages' subject, intro and lead: {"fr": {"intro": "…"}} sets one
    field (an empty string clears it, fields not named stay), {"fr": None} clears the language.
    """
    ed = issue.editorial
    present = set(item_keys(issue))
    for key in [*drop, *pin]:
        if key not in present and key not in ed.dropped:
            raise EditorialError(f"no item with key {key!r} in issue {issue.number}; "
                                 "see the keys with `digest issue show N`")
    for key in pin:
        if key in ed.dropped or key in drop:
            raise EditorialError(f"{key!r} is dropped; undrop it before pinning it")
    for key, kept, verb in [*((k, ed.dropped, "dropped") for k in undrop), *((k, ed.pinned, "pinned") for k in unpin)]:
        if key not in kept:
            raise EditorialError(f"{key!r} is not {verb} in issue {issue.number}")
    dropped = _ordered_set([k for k in ed.dropped if k not in undrop], drop)
    pinned = _ordered_set([k for k in ed.pinned if k not in unpin and k not in drop], pin)
    return Editorial(
        intro=ed.intro if intro is None else clean_intro(intro),
        subject=ed.subject if subject is None else clean_subject(subject),
        dropped=dropped,
        pinned=pinned,
        lead=ed.lead if lead is None else clean_lead(lead),
        texts=ed.texts if texts is None else edit_texts(ed.texts, texts),
    )


def edit_texts(current: Sequence[EditorialTexts],
               changes: Mapping[str, Mapping[str, str | None] | None]) -> tuple[EditorialTexts, ...]:
    """Other languages' texts with `changes` applied (see edit_editorial); languages left empty go."""
    by_language = {t.language: t for t in current}
    for language, fields in changes.items():
        if language not in LANGUAGES:
            raise EditorialError(f"texts in {language!r}: editions are in {', '.join(LANGUAGES)} only")
        if fields is None:
            by_language.pop(language, None)
            continue
        if not isinstance(fields, Mapping) or not all(isinstance(v, str | None) for v in fields.values()):
            raise EditorialError(f"texts in {language!r}: give subject, intro and lead as strings")
        unknown = sorted(set(fields) - set(EDITORIAL_FIELDS))
        if unknown:
            raise EditorialError(f"texts in {language!r}: unknown field(s) {', '.join(unknown)}; "
                                 f"use {', '.join(EDITORIAL_FIELDS)}")
        values = {f: _CLEANERS[f](v or "") for f, v in fields.items()}
        by_language[language] = replace(by_language.get(language, EditorialTexts(language)), **values)
    return tuple(t for _, t in sorted(by_language.items()) if t.subject or t.intro or t.lead)


def _ordered_set(kept: Sequence[str], added: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys([*kept, *added]))


# --- sections -------------------------------------------------------------------------------------

def _sections(new: list[Item], upcoming: list[Item], series: Sequence[Series]) -> list[Section]:
    order = [s.id for s in series]
    by_series: dict[str, list[IssueEntry]] = {sid: [] for sid in order}
    media: list[Item] = []
    more: list[IssueEntry] = []
    for item in new:
        if item.kind == ItemKind.EVENT:
            continue
        if item.kind == ItemKind.MEDIA:
            media.append(item)
            continue
        mine = [sid for sid in order if sid in item.series]
        if mine:
            by_series[mine[0]].append(IssueEntry(item=item, also_in=tuple(mine[1:])))
        else:
            more.append(IssueEntry(item=item))
    sections = [
        Section(id=s.id, type=SectionType.SERIES, title=s.name, series=s.id,
                entries=tuple(sorted(by_series[s.id], key=_by_kind_newest)), more_url=s.url)
        for s in series if by_series[s.id]
    ]
    sections.append(Section(id="events", type=SectionType.EVENTS, title=EVENTS_TITLE,
                            entries=tuple(IssueEntry(item=e) for e in upcoming)))
    sections.append(Section(id="media", type=SectionType.MEDIA, title=MEDIA_TITLE,
                            entries=tuple(IssueEntry(item=m) for m in _newest_first(media))))
    sections.append(Section(id="more", type=SectionType.MORE, title=MORE_TITLE,
                            entries=tuple(sorted(more, key=_by_kind_newest))))
    return sections


def _by_kind_newest(entry: IssueEntry) -> tuple:
    item = entry.item
    return (KIND_ORDER.get(item.kind, 9), -item.effective_published.timestamp(), item.key)


def _upcoming_events(events: Iterable[Item], window: Window, horizon_days: int) -> list[Item]:
    horizon = Window(window.end, window.end + timedelta(days=horizon_days))
    found = [e for e in _dedupe(events) if e.event and e.event.start and horizon.contains(e.event.start)]
    return sorted(found, key=lambda e: (e.event.start, e.key))


def _newest_first(media: list[Item]) -> list[Item]:
    """Mentions newest first; `_dedupe` already kept one per real article (the earliest alert)."""
    return sorted(media, key=lambda m: (-m.effective_published.timestamp(), m.key))


def _apply_editorial(section: Section, dropped: set[str], pinned: Sequence[str]) -> Section:
    kept = [e for e in section.entries if e.item.key not in dropped]
    rank = {key: i for i, key in enumerate(pinned)}
    top = sorted((replace(e, pinned=True) for e in kept if e.item.key in rank), key=lambda e: rank[e.item.key])
    rest = [e for e in kept if e.item.key not in rank]
    return replace(section, entries=tuple(top + rest))


# --- items ----------------------------------------------------------------------------------------

def _dedupe(items: Iterable[Item]) -> list[Item]:
    """One item per key and per real URL; a later copy of a key wins; of URL twins the earliest
    published stays, with the series of both."""
    by_key: dict[str, Item] = {}
    for item in items:
        by_key[item.key] = item
    by_url: dict[tuple, Item] = {}
    for item in sorted(by_key.values(), key=_earliest_first):
        twin_key = _twin_key(item)
        twin = by_url.get(twin_key)
        if twin is None:
            by_url[twin_key] = item
        else:
            by_url[twin_key] = replace(twin, series=tuple(dict.fromkeys([*twin.series, *item.series])))
    return list(by_url.values())


def _earliest_first(item: Item) -> tuple:
    when = item.effective_published
    return (when is None, when.timestamp() if when else 0.0, item.key)


def _twin_key(item: Item) -> tuple:
    # Two keys for one article (the same post in two feeds) share a URL; events also need the same
    # start (a listing page may link every event), and a bare home-page link identifies nothing.
    url = canonical_url(item.url)
    if urlsplit(url).path == "/" and not urlsplit(url).query:
        return ("key", item.key)
    start = item.event.start if item.event else None
    return ("url", url, start)


def _published_before(item: Item, end: datetime) -> bool:
    when = item.effective_published
    return when is not None and when < end


def _normalise(item: Item, tz: ZoneInfo, base_url: str) -> Item:
    """The item as an issue shows it: dated in the site timezone, absolute URL, summary filled in.

    `published` becomes the effective publication instant, so the manifest round-trips exactly;
    the full content is left out (the summary falls back to it) to keep manifests small.
    """
    when = item.effective_published
    event = item.event
    if event is not None:
        event = replace(event, start=_local(event.start, tz), end=_local(event.end, tz))
    return replace(
        item,
        url=absolute_url(item.url, base_url),
        published=_local(when, tz),
        updated=_local(item.updated, tz),
        first_seen=_local(item.first_seen, tz),
        summary_html=item.summary_html or item.content_html,
        content_html="",
        event=event,
    )


def _local(value: datetime | None, tz: ZoneInfo) -> datetime | None:
    return value.astimezone(tz) if value is not None else None


def absolute_url(url: str, base_url: str) -> str:
    """`url` made absolute against the site; anything but http(s) becomes the site URL."""
    joined = urljoin(base_url if base_url.endswith("/") else base_url + "/", url.strip())
    return joined if urlsplit(joined).scheme in ("http", "https") else base_url


_TRACKING = re.compile(r"^(utm_|fbclid$|gclid$|mc_)")


def canonical_url(url: str) -> str:
    """A URL reduced to what identifies an article: scheme/host case, fragment, tracking parameters."""
    parts = urlsplit(url.strip())
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING.match(k)])
    path = parts.path.rstrip("/") or "/"
    return urlunsplit(("https" if parts.scheme in ("http", "https") else parts.scheme,
                       parts.netloc.lower().removeprefix("www."), path, query, ""))
