"""Segments: the distinct sets of sections subscribers' preferences select, so each is rendered once.

A segment's `section_ids` name the series a reader follows that have something for them, then
"events", "media" and "more" (everyone gets "more"), each only when it has entries. An item in
several series appears once per reader: under the first of its series, in the edition's order, that
the reader follows, with "Also in: …" naming the others (`edition_sections(issue,
segment.section_ids, series_order)` returns exactly the sections a segment shows).
An empty tuple means "send this reader nothing".

`segment_for(issue, subscriber, default_language)` is the one rule "which edition does this
subscriber read": the delivery, `digest render --subscriber`, the admin preview and test sends all
take it from here. Reading today's subscribers from the store is the pipeline's
(digest.pipeline.editions.issue_segments).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import replace

from .config import LANGUAGES
from .models import Issue, IssueEntry, Section, SectionType, Segment, Subscriber

Preference = tuple[tuple[str, ...], bool, bool, str]  # (series followed, want events, want media, language)


def sections_for(issue: Issue, series_followed: tuple[str, ...], want_events: bool, want_media: bool) -> tuple[str, ...]:
    """Ids a reader with these preferences receives (empty `series_followed` = every series)."""
    follows_all = not series_followed
    ids: list[str] = []
    for section in issue.sections:
        if section.type == SectionType.SERIES:
            ids.extend(_series_served(section, series_followed) if not follows_all else
                       [section.id] if section.entries else [])
        elif section.entries and _wanted(section, want_events, want_media):
            ids.append(section.id)
    return tuple(dict.fromkeys(ids))


def _series_served(section: Section, followed: tuple[str, ...]) -> list[str]:
    """The followed series this section has items for (itself, or via an item's `also_in`)."""
    served = [section.id] if section.id in followed and section.entries else []
    served += [s for e in section.entries for s in e.also_in if s in followed]
    return served


def _wanted(section: Section, want_events: bool, want_media: bool) -> bool:
    if section.type == SectionType.EVENTS:
        return want_events
    if section.type == SectionType.MEDIA:
        return want_media
    return True


def segment_id(section_ids: tuple[str, ...], language: str) -> str:
    """Stable id of a segment: a short hash of its section ids and language."""
    return hashlib.sha256(f"{language}|{','.join(section_ids)}".encode()).hexdigest()[:16]


def segments_for(issue: Issue, preferences: Iterable[Preference], default_language: str = "") -> list[Segment]:
    """Distinct non-empty segments for these preferences, ordered by language then sections.

    With `default_language`, a language that is not offered reads as that one (as segment_for does).
    """
    found: dict[tuple[tuple[str, ...], str], Segment] = {}
    for series_followed, want_events, want_media, language in preferences:
        if default_language:
            language = reader_language(language, default_language)
        segment = _segment(issue, tuple(series_followed), want_events, want_media, language)
        if segment is not None and (segment.section_ids, language) not in found:
            found[(segment.section_ids, language)] = segment
    return [found[k] for k in sorted(found, key=lambda k: (k[1], k[0]))]


def segment_for(issue: Issue, subscriber: Subscriber, default_language: str) -> Segment | None:
    """The segment a subscriber reads in `issue` (the id segments_for gives), or None: send them nothing.

    Their series and event/media choices select the sections; their language, or `default_language`
    when theirs is not offered.
    """
    language = reader_language(subscriber.language, default_language)
    return _segment(issue, subscriber.series, subscriber.want_events, subscriber.want_media, language)


def reader_language(language: str, default_language: str) -> str:
    """The edition language a reader gets: theirs when it is offered, else `default_language`."""
    return language if language in LANGUAGES else default_language


def _segment(issue: Issue, series_followed: tuple[str, ...], want_events: bool, want_media: bool,
             language: str) -> Segment | None:
    ids = sections_for(issue, tuple(series_followed), want_events, want_media)
    return Segment(id=segment_id(ids, language), section_ids=ids, language=language) if ids else None


def edition_sections(issue: Issue, section_ids: Iterable[str],
                     series_order: Sequence[str] = ()) -> tuple[Section, ...]:
    """The sections a segment shows, in issue order, each item once.

    An item in several series sits under the first of its series, in the edition's order
    (`series_order`, the configured order; else the issue's), that the segment shows; its `also_in`
    then names its other series. So a reader who follows only an item's second series finds it
    under that series' heading: a section the issue does not have is made for it (title "", the
    view names it from the settings).
    """
    wanted = set(section_ids)
    series_sections = [s for s in issue.sections if s.type == SectionType.SERIES]
    order = list(dict.fromkeys([*series_order, *(s.id for s in series_sections),
                                *(sid for s in series_sections for e in s.entries for sid in e.also_in)]))
    homes: dict[str, list[tuple[bool, IssueEntry]]] = {}
    for section in issue.sections:
        if section.type != SectionType.SERIES:
            continue
        for entry in section.entries:
            mine = [section.id, *entry.also_in]
            home = next((sid for sid in order if sid in mine and sid in wanted), None)
            if home is None:
                continue
            others = tuple(sid for sid in order if sid in mine and sid != home)
            homes.setdefault(home, []).append((home != section.id, replace(entry, also_in=others)))
    existing = {s.id: s for s in issue.sections if s.type == SectionType.SERIES}
    shown: list[Section] = []
    for sid in order:
        if homes.get(sid):
            base = existing.get(sid) or Section(id=sid, type=SectionType.SERIES, title="", series=sid)
            # The section's own items first (pinned ones lead), then those that came from another series.
            shown.append(replace(base, entries=tuple(e for _, e in sorted(homes[sid], key=lambda h: h[0]))))
    for section in issue.sections:
        if section.type != SectionType.SERIES and section.id in wanted and section.entries:
            shown.append(section)
    return tuple(shown)
