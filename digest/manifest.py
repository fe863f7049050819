"""The issue manifest: an Issue as the JSON of INTERFACE.md, and back, exactly.

Render and deliver read sent issues from the stored manifest, never recompose them, so
`issue_from_manifest(issue_to_manifest(issue, settings)) == issue` for every composed issue.
Keys beyond INTERFACE.md (allowed extras, kept stable): issue.version/subject/intro/dropped/pinned/
created_at; item.feed/categories/updated/first_seen; event.hybrid/organizer/type; media.source_url;
section.more_url; top-level "segments" when given. Written only when not empty, so older manifests
read the same and keep their version: item.image (digest.feed_images), item.raw (the feed's own
text where cleaning changed it, as [field, value] pairs; not part of the version: readers never see
it), related.language (the target's) and related.editions (the edition languages that show the
link; absent: every edition, see digest.related).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .config import Settings
from .models import (
    Editorial,
    EventInfo,
    FeedStatus,
    FetchReport,
    Issue,
    IssueEntry,
    IssueStatus,
    Item,
    ItemKind,
    MediaInfo,
    RelatedLink,
    Section,
    SectionType,
    Segment,
    Window,
)

# Not part of what readers see: leaving them out of the version keeps approval valid across a
# refresh that changes nothing but the moment it ran (window end) or feed health.
_UNVERSIONED_ISSUE_KEYS = ("number", "status", "version", "created_at", "window")


def issue_to_manifest(issue: Issue, settings: Settings, segments: Sequence[Segment] | None = None) -> dict[str, Any]:
    """The manifest dict of INTERFACE.md; datetimes carry the site timezone's offset."""
    tz = settings.site.tz

    def when(value: datetime | None) -> str | None:
        return value.astimezone(tz).isoformat() if value is not None else None

    ed = issue.editorial
    manifest: dict[str, Any] = {
        "issue": {
            "number": issue.number,
            "status": issue.status.value,
            "window": {"start": when(issue.window.start), "end": when(issue.window.end)},
            "version": issue.version,
            "subject": issue_subject(issue, settings),
            "intro": ed.intro,
            "editorial": {"subject": ed.subject, "dropped": list(ed.dropped), "pinned": list(ed.pinned)},
            "created_at": when(issue.created_at),
        },
        "sections": [_section(s, when) for s in issue.sections],
        "feeds": [{"name": f.feed, "url": f.url, "status": f.status.value, "message": f.message} for f in issue.feeds],
    }
    if segments is not None:
        manifest["segments"] = [{"id": s.id, "sections": list(s.section_ids), "language": s.language} for s in segments]
    return manifest


def default_subject(issue: Issue, settings: Settings) -> str:
    """"{site name} digest — 23 November 2026" (the day the window ends, site timezone)."""
    day = issue.window.end.astimezone(settings.site.tz)
    return f"{settings.site.name} digest — {day.day} {day:%B %Y}"


def issue_subject(issue: Issue, settings: Settings) -> str:
    """The subject staff set, else the default one."""
    return issue.editorial.subject or default_subject(issue, settings)


def issue_version(manifest: dict[str, Any]) -> str:
    """Hash of what readers see: window start, sections, subject, intro and editorial choices."""
    issue = {k: v for k, v in manifest["issue"].items() if k not in _UNVERSIONED_ISSUE_KEYS}
    sections = [{**s, "items": [{k: v for k, v in i.items() if k != "raw"} for i in s.get("items", [])]}
                for s in manifest["sections"]]
    content = {"issue": issue, "start": manifest["issue"]["window"]["start"], "sections": sections}
    return hashlib.sha256(json.dumps(content, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:32]


def _section(section: Section, when: Callable[[datetime | None], str | None]) -> dict[str, Any]:
    return {
        "id": section.id,
        "type": section.type.value,
        "title": section.title,
        "series": section.series,
        "more_url": section.more_url,
        "items": [_entry(e, when) for e in section.entries],
    }


def _entry(entry: IssueEntry, when: Callable[[datetime | None], str | None]) -> dict[str, Any]:
    item = entry.item
    event = item.event
    return {
        "key": item.key,
        "kind": item.kind.value,
        "title": item.title,
        "url": item.url,
        "published": when(item.published),
        "authors": list(item.authors),
        "series": list(item.series),
        "also_in": list(entry.also_in),
        "language": item.language,
        "summary_html": item.summary_html,
        "event": None if event is None else {
            "start": when(event.start), "end": when(event.end), "location": event.location,
            "online": event.online, "hybrid": event.hybrid, "organizer": event.organizer, "type": event.type,
        },
        "media": None if item.media is None else {"outlet": item.media.outlet, "source_url": item.media.source_url},
        "related": [_related(r) for r in entry.related],
        "pinned": entry.pinned,
        "feed": item.feed,
        "categories": list(item.categories),
        "updated": when(item.updated),
        "first_seen": when(item.first_seen),
        "content_html": item.content_html,
        **({"image": item.image} if item.image else {}),
        **({"raw": [[name, value] for name, value in item.raw]} if item.raw else {}),
    }


def _related(link: RelatedLink) -> dict[str, Any]:
    out: dict[str, Any] = {"key": link.key, "kind": link.kind.value, "title": link.title, "url": link.url}
    if getattr(link, "language", None):
        out["language"] = link.language
    if getattr(link, "editions", ()):
        out["editions"] = list(link.editions)
    return out


def _related_from(raw: dict[str, Any]) -> RelatedLink:
    return RelatedLink(key=raw["key"], kind=ItemKind(raw["kind"]), title=raw["title"], url=raw["url"],
                       language=raw.get("language"), editions=tuple(raw.get("editions", ())))


# --- back to an Issue -----------------------------------------------------------------------------

def issue_from_manifest(manifest: dict[str, Any]) -> Issue:
    """The Issue a manifest describes (the inverse of issue_to_manifest)."""
    head = manifest["issue"]
    editorial = head.get("editorial", {})
    return Issue(
        number=head.get("number"),
        status=IssueStatus(head["status"]),
        window=Window(start=_dt(head["window"]["start"]), end=_dt(head["window"]["end"])),
        sections=tuple(_section_from(s) for s in manifest.get("sections", [])),
        editorial=Editorial(
            intro=head.get("intro", ""),
            subject=editorial.get("subject", ""),
            dropped=tuple(editorial.get("dropped", ())),
            pinned=tuple(editorial.get("pinned", ())),
        ),
        feeds=tuple(FetchReport(feed=f["name"], url=f["url"], status=FeedStatus(f["status"]), message=f.get("message", ""))
                    for f in manifest.get("feeds", [])),
        created_at=_dt(head.get("created_at")),
        version=head.get("version", ""),
    )


def _section_from(raw: dict[str, Any]) -> Section:
    return Section(
        id=raw["id"],
        type=SectionType(raw["type"]),
        title=raw["title"],
        series=raw.get("series"),
        entries=tuple(_entry_from(e) for e in raw.get("items", [])),
        more_url=raw.get("more_url", ""),
    )


def _entry_from(raw: dict[str, Any]) -> IssueEntry:
    event = raw.get("event")
    media = raw.get("media")
    item = Item(
        key=raw["key"],
        feed=raw.get("feed", ""),
        kind=ItemKind(raw["kind"]),
        title=raw["title"],
        url=raw["url"],
        published=_dt(raw.get("published")),
        updated=_dt(raw.get("updated")),
        authors=tuple(raw.get("authors", ())),
        categories=tuple(raw.get("categories", ())),
        series=tuple(raw.get("series", ())),
        language=raw.get("language"),
        summary_html=raw.get("summary_html", ""),
        content_html=raw.get("content_html", ""),
        event=None if event is None else EventInfo(
            start=_dt(event.get("start")), end=_dt(event.get("end")), location=event.get("location", ""),
            organizer=event.get("organizer", ""), type=event.get("type", ""),
            online=bool(event.get("online")), hybrid=bool(event.get("hybrid")),
        ),
        media=None if media is None else MediaInfo(outlet=media.get("outlet", ""), source_url=media.get("source_url", "")),
        first_seen=_dt(raw.get("first_seen")),
        raw=tuple((str(name), str(value)) for name, value in raw.get("raw", ())),
        image=raw.get("image", ""),
    )
    related = tuple(_related_from(r) for r in raw.get("related", []))
    return IssueEntry(item=item, also_in=tuple(raw.get("also_in", ())), related=related, pinned=bool(raw.get("pinned")))


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
