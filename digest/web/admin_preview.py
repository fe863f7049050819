"""The admin preview: an issue's edition as a given reader gets it (full, a segment, or one subscriber).

For a subscriber the preview is their real edition: their sections, their language and their own
signed links. Compiled editions are cached per (issue, version, sections, language), so flipping
between desktop/mobile or HTML/text does not render MJML again.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from urllib.parse import urlencode

from sqlalchemy import Engine

from ..config import LANGUAGES, Settings
from ..models import Issue, IssueStatus, Segment, Subscriber
from ..render import Edition, full_segment, personalise, reader_values, render_edition
from ..segments import sections_for, segment_id, segments_from_store
from ..tokens import subscriber_links

FORMATS = ("html", "text")
VIEWS = ("desktop", "mobile")
PREVIEW_CSP = ("default-src 'none'; img-src https: http: data:; style-src 'unsafe-inline'; font-src https: data:; "
               "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; "
               "sandbox allow-popups allow-popups-to-escape-sandbox")
# Preview links for no real reader: id 0 matches no subscriber, so a click changes nothing.
PREVIEW_READER = Subscriber(email="preview@example.invalid", name="", id=0)


class PreviewError(LookupError):
    """The preview asked for cannot be shown (unknown subscriber or segment, nothing selected)."""


@dataclass(frozen=True)
class PreviewChoice:
    """What the switches on the issue page ask for; every field validated."""

    view: str = "desktop"
    format: str = "html"
    language: str = ""
    subscriber: str = ""
    segment: str = ""

    @classmethod
    def from_query(cls, query: dict[str, str], settings: Settings) -> PreviewChoice:
        def pick(name: str, allowed: tuple[str, ...], default: str) -> str:
            value = query.get(name, default)
            return value if value in allowed else default

        language = pick("lang", LANGUAGES, settings.site.language)
        subscriber = query.get("subscriber", "").strip()[:320]
        segment = query.get("segment", "").strip()[:64]
        if not segment.isalnum():
            segment = ""
        return cls(view=pick("view", VIEWS, "desktop"), format=pick("format", FORMATS, "html"),
                   language=language, subscriber=subscriber if "@" in subscriber else "", segment=segment)

    def query(self, **changes: str) -> dict[str, str]:
        """The query string of this choice with some switches changed (empty values left out)."""
        values = {"view": self.view, "format": self.format, "lang": self.language,
                  "subscriber": self.subscriber, "segment": self.segment, **changes}
        return {k: v for k, v in values.items() if v}


class EditionCache:
    """A small LRU of compiled editions, shared by the requests of one app."""

    def __init__(self, size: int = 24):
        self.size = size
        self._items: OrderedDict[tuple, Edition] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, issue: Issue, segment: Segment, settings: Settings) -> Edition:
        key = (issue.number, issue.version, issue.status, issue.editorial, segment.section_ids, segment.language)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        edition = render_edition(issue, segment, settings)
        with self._lock:
            self._items[key] = edition
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return edition


def preview_segment(engine: Engine, issue: Issue, choice: PreviewChoice) -> tuple[Segment, Subscriber]:
    """The segment to show and the reader whose values fill it."""
    if choice.subscriber:
        from ..store.subscribers import get_subscriber

        subscriber = get_subscriber(engine, choice.subscriber)
        if subscriber is None:
            raise PreviewError(f"there is no subscriber {choice.subscriber}")
        ids = sections_for(issue, subscriber.series, subscriber.want_events, subscriber.want_media)
        if not ids:
            raise PreviewError(f"{subscriber.email}'s preferences select nothing in this issue: "
                               "they would get no email")
        return Segment(segment_id(ids, subscriber.language), ids, subscriber.language), subscriber
    if choice.segment:
        for segment in segments_from_store(engine, issue):
            if segment.id == choice.segment:
                return segment, PREVIEW_READER
        raise PreviewError(f"no segment {choice.segment} in this issue (subscribers' choices changed?)")
    return full_segment(issue, choice.language), PREVIEW_READER


def preview_document(settings: Settings, engine: Engine, issue: Issue, choice: PreviewChoice,
                     cache: EditionCache) -> tuple[str, Edition]:
    """(HTML or text document, the edition it came from) for the choice."""
    segment, reader = preview_segment(engine, issue, choice)
    edition = cache.get(issue, segment, settings)
    links = subscriber_links(settings, reader)
    base = settings.web.base_url.rstrip("/")
    values = reader_values(reader.name, reader.email, segment.language, links.unsubscribe_url,
                           links.preferences_url, f"{base}/archive/{issue.number}")
    html, text = personalise(edition, values)
    return (html if choice.format == "html" else text), edition


def segment_label(segment: Segment, issue: Issue) -> str:
    """A readable name for a segment: its language and section titles."""
    titles = {s.id: s.title for s in issue.sections}
    return f"{segment.language}: " + ", ".join(titles.get(i, i) for i in segment.section_ids)


def issue_page_context(settings: Settings, engine: Engine, issue: Issue, summary, choice: PreviewChoice,  # noqa: ANN001
                       cache: EditionCache) -> dict:
    """Everything the issue page template shows besides the session."""
    from ..manifest import issue_subject
    from ..store.runs import issue_timing
    from ..store.subscribers import iter_subscribers
    from ..timing import send_outlook

    segments = segments_from_store(engine, issue)
    preview_error = ""
    try:  # rendered now so the page can say what is wrong, and cached for the iframe's request
        preview_document(settings, engine, issue, choice, cache)
    except PreviewError as exc:
        preview_error = str(exc)
    timing = issue_timing(engine, issue.number)
    open_issue = issue.status in (IssueStatus.DRAFT, IssueStatus.APPROVED)
    outlook = send_outlook(settings, timing, datetime.now(UTC)) if open_issue and timing else None
    return {
        "issue": issue, "summary": summary, "choice": choice, "languages": LANGUAGES,
        "subject": issue_subject(issue, settings),
        "default_subject": issue_subject(replace(issue, editorial=replace(issue.editorial, subject="")), settings),
        "segments": [(s.id, segment_label(s, issue)) for s in segments],
        "subscriber_emails": [s.email for _, s in zip(range(200), iter_subscribers(engine), strict=False)],
        "preview_src": f"/admin/issues/{issue.number}/preview?" + urlencode({**choice.query(), "v": issue.version[:12]}),
        "preview_error": preview_error, "showing": _showing(choice, segments, issue),
        "entries": [{"key": e.item.key, "title": e.item.title, "section": s.title,
                     "pinned": e.pinned or e.item.key in issue.editorial.pinned}
                    for s in issue.sections for e in s.entries],
        "editable": open_issue,
        "send_due": outlook.due if outlook else None,
        "send_note": send_note(settings, timing, outlook=outlook) if outlook else "",
        "timezone": settings.site.timezone,
        "send_at_value": timing.send_at.astimezone(settings.site.tz).strftime("%Y-%m-%dT%H:%M")
        if timing and timing.send_at else "",
    }


def send_note(settings: Settings, timing, now: datetime | None = None, outlook=None) -> str:  # noqa: ANN001
    """What the page says under "Goes out" once the send time has passed ('' while it is ahead).

    Worded from digest.timing.send_outlook (at `now`, unless the caller has its `outlook`), the
    rule the send job itself follows.
    """
    from ..timing import SendWhen, send_outlook

    outlook = outlook or send_outlook(settings, timing, now or datetime.now(UTC))
    if outlook.when in (SendWhen.NOT_SCHEDULED, SendWhen.AT_SEND_TIME):
        return ""
    send_time = f"its send time ({outlook.due.astimezone(settings.site.tz):%d %b %Y, %H:%M})"
    if outlook.when == SendWhen.AFTER_FRESH_APPROVAL:
        return (f"Only after a fresh approval: {send_time} passed more than {settings.schedule.stale_after_hours} h "
                "ago (schedule.stale_after_hours), so the scheduler holds it back.")
    if timing.status == IssueStatus.DRAFT.value:
        return f"At once when approved: {send_time} has passed."
    return f"Now: {send_time} has passed, so the scheduler sends it at its next check (every minute)."


def _showing(choice: PreviewChoice, segments: list[Segment], issue: Issue) -> str:
    if choice.subscriber:
        return f"{choice.subscriber}'s edition"
    if choice.segment:
        return "segment " + next((segment_label(s, issue) for s in segments if s.id == choice.segment), "?")
    return f"the full edition ({choice.language})"
