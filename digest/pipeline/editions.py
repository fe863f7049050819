"""Use case: editions. What one audience of an issue reads: the full edition, a segment, one subscriber's.

Rules that live here and nowhere else:
- a subscriber's segment is the sections their series and event/media choices select, in their
  language (the site's default when theirs is not offered); nothing selected, no edition;
- every edition's "view in browser" link is the issue's archive page.
"""

from __future__ import annotations

from sqlalchemy import Engine

from ..config import LANGUAGES, Settings
from ..deliver.editions import view_url
from ..deliver.message import MessageTemplate
from ..models import Issue, Segment, Subscriber
from ..render import RenderedIssue, full_segment, personalise, preview_values, reader_values, render_edition
from ..segments import sections_for, segment_id
from ..store.issues import require_issue
from ..store.subscribers import get_subscriber
from ..tokens import subscriber_links


def render_issue(settings: Settings, engine: Engine, number: int, subscriber_email: str | None = None) -> RenderedIssue:
    """The full edition of an issue, or one subscriber's personalised edition, as a RenderedIssue.

    Raises IssueNotFound, LookupError (no such subscriber), ValueError (their preferences select
    nothing in this issue) and RenderError (a template problem, naming file and line).
    """
    issue = require_issue(engine, number)
    if subscriber_email is None:
        segment = full_segment(issue, settings.site.language)
        values = preview_values(settings, segment.language, view_url(settings, number))
        name = ""
    else:
        subscriber = get_subscriber(engine, subscriber_email)
        if subscriber is None:
            raise LookupError(f"there is no subscriber {subscriber_email!r}; see `digest subscribers list`")
        segment = subscriber_segment(settings, issue, subscriber)
        links = subscriber_links(settings, subscriber)
        values = reader_values(subscriber.name, subscriber.email, segment.language, links.unsubscribe_url,
                               links.preferences_url, view_url(settings, number))
        name = subscriber.name
    edition = render_edition(issue, segment, settings)
    html, text = personalise(edition, values)
    message = MessageTemplate.from_settings(settings, edition).build_for(values["email"], name, values)
    return RenderedIssue(edition=edition, html=html, text=text, eml=message.data, recipient=values["email"])


def subscriber_segment(settings: Settings, issue: Issue, subscriber: Subscriber) -> Segment:
    """The segment a subscriber's preferences select in `issue`; ValueError when they select nothing."""
    ids = sections_for(issue, subscriber.series, subscriber.want_events, subscriber.want_media)
    if not ids:
        raise ValueError(f"{subscriber.email} receives nothing from issue {issue.number}: their preferences select no section")
    language = subscriber.language if subscriber.language in LANGUAGES else settings.site.language
    return Segment(id=segment_id(ids, language), section_ids=ids, language=language)
