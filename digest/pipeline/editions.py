"""Use case: editions. What one audience of an issue reads: `edition_for(settings, engine, issue, audience)`.

The audiences:
- `Everyone`: the full edition for nobody in particular (`digest render` without --subscriber):
  placeholder values (reader@example.org, "Hello there").
- `Staff`: what staff preview: the full edition in a language, or one segment of today's
  subscribers; its links are signed for no subscriber (id 0, as in a test send), so a click
  changes nothing.
- `Reader`: one subscriber's own edition: their sections, their language, their name and signed links.
- `Visitor`: someone on the public archive page: the full edition of a *sent* issue, with links to
  the subscribe page instead of personal ones.

Rules that live here and nowhere else:
- which segment a subscriber reads is digest.segments.segment_for (the delivery uses it too);
  nothing selected, no edition;
- an audience's language is theirs when it is offered, else the site's (`site.language`);
- every edition's "view in browser" link is the issue's archive page (digest.archive_urls);
- an archive visitor only ever reads a sent issue.

Compiling an edition (Jinja2 + MJML) is the slow step: pass an `EditionCache` to reuse compiled
editions across calls. The web app keeps one per app (previews flip between formats and widths,
the archive serves the same page many times); the CLI renders once and needs none.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from sqlalchemy import Engine

from ..archive_urls import archive_url
from ..config import Settings
from ..deliver.message import MessageTemplate
from ..models import Issue, IssueStatus, Segment, Subscriber
from ..render import (
    Edition,
    RenderedIssue,
    full_segment,
    personalise,
    preview_values,
    reader_values,
    render_edition,
)
from ..segments import reader_language, segment_for, segments_for
from ..signing import subscriber_links
from ..store.issues import require_issue
from ..store.subscribers import distinct_preferences, get_subscriber
from .managed import uses_current_settings

# Links for no real reader: id 0 matches no subscriber, so a click changes nothing.
STAFF_READER = Subscriber(email="preview@example.invalid", name="", id=0)


@dataclass(frozen=True)
class Everyone:
    """The full edition for nobody in particular, in `language` (default: the site's)."""

    language: str = ""


@dataclass(frozen=True)
class Staff:
    """A staff preview: the full edition in `language`, or the segment `segment_id` of today's subscribers."""

    language: str = ""
    segment_id: str = ""


@dataclass(frozen=True)
class Reader:
    """The subscriber with this address, reading their own edition."""

    email: str


@dataclass(frozen=True)
class Visitor:
    """A visitor of the public archive, reading a sent issue in `language` (default: the site's)."""

    language: str = ""


Audience = Everyone | Staff | Reader | Visitor


class NoEdition(LookupError):
    """The audience reads nothing of this issue: an unknown subscriber or segment, nothing selected, not public."""


@dataclass(frozen=True)
class AudienceEdition:
    """What one audience reads: the compiled edition, the values that fill it, and the result."""

    edition: Edition  # tokens in place; shared by everyone of its segment
    values: dict[str, str]  # what fills the tokens for this audience
    html: str
    text: str
    name: str  # who it is addressed to ('' for nobody in particular)

    @property
    def email(self) -> str:
        return self.values["email"]


class EditionCache:
    """A small LRU of compiled editions, safe to share between threads (the web app's requests)."""

    def __init__(self, size: int = 24) -> None:
        self.size = size
        self._items: OrderedDict[tuple, Edition] = OrderedDict()
        self._lock = threading.Lock()

    def edition(self, settings: Settings, issue: Issue, segment: Segment) -> Edition:
        """The compiled edition of `segment` for this exact version of the issue (compiled on a miss)."""
        # Series names and branding are edited in the admin: an edition compiled before an edit is not reused.
        key = (issue.number, issue.version, issue.status, issue.editorial, issue.test, issue.public,
               segment.section_ids, segment.language, tuple(settings.series), settings.branding)
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


@uses_current_settings
def edition_for(settings: Settings, engine: Engine, issue: Issue | int, audience: Audience,
                cache: EditionCache | None = None) -> AudienceEdition:
    """What `audience` reads of `issue` (an Issue, or its number), compiled and filled in.

    Raises IssueNotFound (no such issue number), NoEdition (a LookupError: no such subscriber or
    segment, their preferences select nothing, a visitor asking for an issue not sent) and
    RenderError (a template problem, naming file and line).
    """
    issue = require_issue(engine, issue) if isinstance(issue, int) else issue
    if isinstance(audience, Visitor):  # the archive's copy: nothing personal in it (Issue.public)
        issue = replace(issue, public=True)
    segment, name, values = _reading(settings, engine, issue, audience)
    edition = cache.edition(settings, issue, segment) if cache else render_edition(issue, segment, settings)
    html, text = personalise(edition, values)
    return AudienceEdition(edition=edition, values=values, html=html, text=text, name=name)


@uses_current_settings
def render_issue(settings: Settings, engine: Engine, number: int, subscriber_email: str | None = None) -> RenderedIssue:
    """The full edition of an issue, or one subscriber's, with its complete message (`digest render`).

    Raises IssueNotFound, NoEdition (a LookupError: no such subscriber, their preferences select
    nothing in this issue) and RenderError.
    """
    audience = Everyone() if subscriber_email is None else Reader(subscriber_email)
    reading = edition_for(settings, engine, number, audience)
    message = MessageTemplate.from_settings(settings, reading.edition).build_for(reading.email, reading.name,
                                                                                reading.values)
    return RenderedIssue(edition=reading.edition, html=reading.html, text=reading.text, eml=message.data,
                         recipient=reading.email)


@uses_current_settings
def issue_segments(settings: Settings, engine: Engine, issue: Issue) -> list[Segment]:
    """The distinct segments today's confirmed subscribers read in `issue` (each rendered once)."""
    return segments_for(issue, distinct_preferences(engine), settings.site.language)


def _reading(settings: Settings, engine: Engine, issue: Issue,
             audience: Audience) -> tuple[Segment, str, dict[str, str]]:
    """(segment, addressee's name, token values) for one audience."""
    view = archive_url(settings, issue.number)
    if isinstance(audience, Reader):
        subscriber = get_subscriber(engine, audience.email)
        if subscriber is None:
            raise NoEdition(f"there is no subscriber {audience.email}")
        segment = segment_for(issue, subscriber, settings.site.language)
        if segment is None:
            raise NoEdition(f"{subscriber.email} receives nothing from issue {issue.number}: "
                            "their preferences select no section")
        return segment, subscriber.name, _reader_values(settings, subscriber, segment.language, view)
    language = reader_language(audience.language, settings.site.language)
    if isinstance(audience, Everyone):
        return full_segment(issue, language), "", preview_values(settings, language, view)
    if isinstance(audience, Visitor):
        if issue.status != IssueStatus.SENT:
            raise NoEdition(f"issue {issue.number} is not in the archive: only sent issues are public")
        subscribe = f"{settings.web.base_url.rstrip('/')}/subscribe"
        return full_segment(issue, language), "", reader_values("", "", language, subscribe, subscribe, view)
    segment = _staff_segment(settings, engine, issue, audience.segment_id) if audience.segment_id else \
        full_segment(issue, language)
    return segment, "", _reader_values(settings, STAFF_READER, segment.language, view)


def _staff_segment(settings: Settings, engine: Engine, issue: Issue, segment_id: str) -> Segment:
    for segment in issue_segments(settings, engine, issue):
        if segment.id == segment_id:
            return segment
    raise NoEdition(f"no segment {segment_id} in this issue (subscribers' choices changed?)")


def _reader_values(settings: Settings, reader: Subscriber, language: str, view: str) -> dict[str, str]:
    links = subscriber_links(settings, reader)
    return reader_values(reader.name, reader.email, language, links.unsubscribe_url, links.preferences_url, view)
