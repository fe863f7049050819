"""The domain model: frozen dataclasses and enums shared by every pipeline stage.

Imports nothing from the package. Datetimes are always timezone-aware.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum


class ItemKind(StrEnum):
    BRIEF = "brief"
    EVENT = "event"
    NEWS = "news"
    ARTICLE = "article"
    MEDIA = "media"


class FeedStatus(StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"
    NOT_MODIFIED = "not_modified"


class IssueStatus(StrEnum):
    DRAFT = "draft"
    APPROVED = "approved"
    SENDING = "sending"
    SENT = "sent"
    CANCELLED = "cancelled"


class SectionType(StrEnum):
    SERIES = "series"
    EVENTS = "events"
    MEDIA = "media"
    MORE = "more"


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class DeliveryStatus(StrEnum):
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED_TEMPORARY = "failed_temporary"
    FAILED_PERMANENT = "failed_permanent"
    # Not sent on purpose: unsubscribed meanwhile, or their preferences select no section.
    SKIPPED = "skipped"
    # Final: the whole message was sent, twice at most, and each time the connection was lost before
    # the server confirmed it. It may have arrived; never resent again, never counted as given up.
    POSSIBLY_DELIVERED = "possibly_delivered"


@dataclass(frozen=True)
class Feed:
    """A configured source: an http(s) URL or a local file path."""

    name: str
    url: str
    kind: ItemKind
    language: str | None = None


@dataclass(frozen=True)
class Series:
    """A named publication series; `aliases` are extra category spellings that map to it.

    `name` is the site language's; `names` holds other languages' as (language, name) pairs.
    """

    id: str
    name: str
    aliases: tuple[str, ...] = ()
    url: str = ""
    names: tuple[tuple[str, str], ...] = ()

    def name_in(self, language: str | None) -> str:
        """The series' name in `language`, else its site-language name."""
        return dict(self.names).get(language or "", self.name)


@dataclass(frozen=True)
class EventInfo:
    start: datetime | None = None
    end: datetime | None = None
    location: str = ""
    organizer: str = ""
    type: str = ""
    online: bool = False
    hybrid: bool = False


@dataclass(frozen=True)
class MediaInfo:
    outlet: str = ""
    # The link as the feed gave it (e.g. a Google Alerts redirect), kept for audit.
    source_url: str = ""


@dataclass(frozen=True)
class Item:
    """One clean, typed piece of content: titles are plain text, HTML fields are sanitised."""

    key: str
    feed: str
    kind: ItemKind
    title: str
    url: str
    published: datetime | None = None
    updated: datetime | None = None
    authors: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    series: tuple[str, ...] = ()
    language: str | None = None
    summary_html: str = ""
    content_html: str = ""
    event: EventInfo | None = None
    media: MediaInfo | None = None
    first_seen: datetime | None = None
    # What the feed gave (sanitised) for the fields cleaning changed (digest.clean_text), as pairs:
    # title, summary_html, content_html, author (one per author), event.location; empty: nothing changed.
    raw: tuple[tuple[str, str], ...] = ()
    image: str = ""  # an https image URL from an allowed host (digest.feed_images); alt text is the title

    @property
    def effective_published(self) -> datetime | None:
        """When the item counts as published: its date, else when digest first saw it."""
        return self.published or self.updated or self.first_seen


def earliest_published(kept: Item, other: Item) -> Item:
    """`kept`, published at the earlier of the two items' publication times (one item seen twice)."""
    if other.published is not None and (kept.published is None or other.published < kept.published):
        return replace(kept, published=other.published)
    return kept


@dataclass(frozen=True)
class FetchReport:
    """What happened to one feed in one `digest fetch` run."""

    feed: str
    url: str
    status: FeedStatus
    message: str = ""
    items: int = 0
    new: int = 0
    updated: int = 0


@dataclass(frozen=True)
class Window:
    """Half-open interval of instants: start <= t < end."""

    start: datetime
    end: datetime

    def contains(self, instant: datetime) -> bool:
        return self.start <= instant < self.end


@dataclass(frozen=True)
class RelatedLink:
    """A link under an item to related content; `language` is the target's (None: unknown), `editions`
    the edition languages that show it (empty: every edition; digest.related picks per language)."""

    key: str
    kind: ItemKind
    title: str
    url: str
    language: str | None = None
    editions: tuple[str, ...] = ()

    def shown_in(self, language: str) -> bool:
        """Whether the edition in `language` shows this link (every edition does when `editions` is empty)."""
        return not self.editions or language in self.editions


@dataclass(frozen=True)
class IssueEntry:
    """An item placed in an issue section, with what compose worked out about it."""

    item: Item
    also_in: tuple[str, ...] = ()
    related: tuple[RelatedLink, ...] = ()
    pinned: bool = False


@dataclass(frozen=True)
class Section:
    id: str
    type: SectionType
    title: str
    series: str | None = None
    entries: tuple[IssueEntry, ...] = ()
    more_url: str = ""


@dataclass(frozen=True)
class EditorialTexts:
    """What staff wrote for the readers of one language: subject, intro and the lead story's text."""

    language: str
    subject: str = ""
    intro: str = ""
    lead: str = ""


EDITORIAL_FIELDS = ("subject", "intro", "lead")


@dataclass(frozen=True)
class Editorial:
    """Staff choices on a draft that survive a refresh.

    `subject`, `intro` and `lead` are the site language's; `texts` holds other languages' (one
    EditorialTexts each, sorted by language). `lead` is a short text shown with the lead story (the
    first pinned item the edition has), in place of its feed summary.
    """

    intro: str = ""
    subject: str = ""
    dropped: tuple[str, ...] = ()
    pinned: tuple[str, ...] = ()
    lead: str = ""
    texts: tuple[EditorialTexts, ...] = ()

    def own_texts(self, language: str) -> EditorialTexts:
        """What staff wrote for `language` itself (empty fields where they wrote nothing)."""
        return next((t for t in self.texts if t.language == language), EditorialTexts(language))

    def texts_for(self, language: str, site_language: str) -> EditorialTexts:
        """The texts readers of `language` get: their own where written, else the site language's."""
        if language == site_language:
            return EditorialTexts(language, self.subject, self.intro, self.lead)
        own = self.own_texts(language)
        return EditorialTexts(language, own.subject or self.subject, own.intro or self.intro, own.lead or self.lead)

    def borrowed(self, language: str, site_language: str) -> tuple[str, ...]:
        """The fields (of EDITORIAL_FIELDS) readers of `language` get in the site language instead."""
        if language == site_language:
            return ()
        own = self.own_texts(language)
        return tuple(f for f in EDITORIAL_FIELDS if getattr(self, f) and not getattr(own, f))


@dataclass(frozen=True)
class Issue:
    number: int | None
    status: IssueStatus
    window: Window
    sections: tuple[Section, ...] = ()
    editorial: Editorial = field(default_factory=Editorial)
    feeds: tuple[FetchReport, ...] = ()
    created_at: datetime | None = None
    version: str = ""
    # A copy for a staff test send (never stored): "[Test]" in the subject, a banner, and the
    # reader-only links (preferences, unsubscribe) explained instead of linked.
    test: bool = False
    # The public archive's copy (never stored): no greeting, no personal footer, "Subscribe" instead
    # of a reader's preferences and unsubscribe links.
    public: bool = False


@dataclass(frozen=True)
class Segment:
    """A distinct combination of sections some subscribers receive, in one language."""

    id: str
    section_ids: tuple[str, ...]
    language: str


@dataclass(frozen=True)
class Subscriber:
    email: str
    name: str = ""
    language: str = "en"
    # Series ids followed; empty means all series.
    series: tuple[str, ...] = ()
    want_events: bool = True
    want_media: bool = True
    status: SubscriberStatus = SubscriberStatus.PENDING
    id: int | None = None
    consent_at: datetime | None = None
    consent_method: str = ""
    consent_ip: str = ""
    # When the row was stored (None for a subscriber not read from the store).
    created_at: datetime | None = None


@dataclass(frozen=True)
class Delivery:
    issue_number: int
    subscriber_id: int
    status: DeliveryStatus
    attempts: int = 0
    last_error: str = ""


class Role(StrEnum):
    """What a staff account may do; each role may do everything the one before it may."""

    EDITOR = "editor"
    APPROVER = "approver"
    ADMIN = "admin"


@dataclass(frozen=True)
class Account:
    """A staff account: who signs in to the admin and with which role (never its password hash)."""

    email: str
    role: Role
    name: str = ""
    id: int | None = None
    disabled: bool = False
    has_password: bool = False
    created_at: datetime | None = None

    @property
    def label(self) -> str:
        """How the account is named where people read it (approvals, the audit trail); an actor
        without an address (the scheduler, the shared password's typed name) by its name."""
        if not self.email:
            return self.name
        return f"{self.name} <{self.email}>" if self.name else self.email
