"""Each subscriber's message: their segment's edition, rendered once per process, then personalised.

`edition_messages(settings, issue)` returns the send loop's message factory. The first subscriber of
a (sections, language) combination pays for Jinja2 + MJML (render_edition) and for the MIME skeleton
(MessageTemplate); every later one only signs their links and fills the tokens. A new template is
first tried on one message for nobody in particular, so a problem of the edition (a link no header
can carry) stops the send instead of failing every subscriber. (Links that cannot work where the
messages go, http over SMTP, are refused when the configuration loads: config_checks._check_https_over_smtp.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from ..archive_urls import archive_url
from ..config import Settings
from ..models import Issue, Segment, Subscriber
from ..render import reader_values, render_edition
from ..segments import segment_for
from ..signing import TokenSigner, subscriber_links
from .message import MessageTemplate
from .transport import OutgoingMessage

# Staff test sends carry a link to no real subscriber (id 0 matches no row, so it changes nothing).
STAFF_ID = 0


class EditionError(Exception):
    """A segment's message template cannot be built (e.g. a bad `delivery.sender`, or a link no
    header can carry): no subscriber of it could be sent to, so sending stops instead of failing
    them one by one."""


def edition_messages(settings: Settings, issue: Issue) -> Callable[[Subscriber], OutgoingMessage | None]:
    """A factory: subscriber → their personalised message, or None if their preferences select
    nothing in this issue (digest.segments.segment_for). Templates are cached per segment for the
    factory's life.

    ValueError/KeyError concern one subscriber (an address no header can carry); EditionError,
    RenderError and DkimError concern everyone.
    """
    signer = TokenSigner(settings)
    templates: dict[tuple[tuple[str, ...], str], MessageTemplate] = {}
    issue_values = {"view_url": archive_url(settings, issue.number)}

    def message_for(subscriber: Subscriber) -> OutgoingMessage | None:
        segment = segment_for(issue, subscriber, settings.site.language)
        if segment is None:
            return None
        key = (segment.section_ids, segment.language)
        template = templates.get(key)
        if template is None:
            try:
                template = segment_template(settings, issue, segment, issue_values)
                # One message for nobody in particular: a problem it meets (e.g. a web.base_url no
                # List-Unsubscribe header can carry) is the edition's, not each subscriber's.
                personalised(template, replace(subscriber, email=template.envelope_from, name="", id=STAFF_ID),
                             segment.language)
            except (ValueError, KeyError) as exc:  # subscriber-level errors are these too: tell them apart
                raise EditionError(f"cannot build the {segment.language} edition of issue {issue.number} "
                                   f"({', '.join(segment.section_ids)}): {exc}") from exc
            templates[key] = template
        return personalised(template, subscriber, segment.language)

    def personalised(template: MessageTemplate, subscriber: Subscriber, language: str) -> OutgoingMessage:
        links = subscriber_links(settings, subscriber, signer)
        values = reader_values(subscriber.name, subscriber.email, language,
                               links.unsubscribe_url, links.preferences_url)
        return template.build_for(subscriber.email, subscriber.name, values)

    return message_for


def segment_template(settings: Settings, issue: Issue, segment: Segment,
                     issue_values: dict[str, str] | None = None) -> MessageTemplate:
    """The MIME template of one segment's edition (the expensive step, once per segment)."""
    edition = render_edition(issue, segment, settings)
    return MessageTemplate.from_settings(settings, edition, issue_values=issue_values)


def staff_subscriber(settings: Settings, email: str, like: Subscriber | None = None) -> Subscriber:
    """Who a test send goes to: `email`, receiving `like`'s edition, or the full edition; its links
    point at no real subscriber, so a click by staff unsubscribes nobody."""
    if like is not None:
        return replace(like, email=email, id=STAFF_ID)
    return Subscriber(email=email, name="", language=settings.site.language, id=STAFF_ID)
