"""Table definitions (SQLAlchemy Core) shared by SQLite and PostgreSQL.

The Alembic migrations under migrations/versions create exactly these tables; a test compares them.
Datetimes are stored as naive UTC and returned aware (UTCDateTime), so both backends agree.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Aware datetimes in, aware UTC datetimes out; naive UTC in the database."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; pass an aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


metadata = MetaData()

feeds = Table(
    "feeds",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("url", Text, nullable=False),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("retry_after", UTCDateTime),
    Column("last_fetch_at", UTCDateTime),
    Column("last_success_at", UTCDateTime),
    Column("last_status", String(20)),
    Column("last_message", Text, nullable=False, default=""),
    Column("last_error_at", UTCDateTime),
    Column("consecutive_failures", Integer, nullable=False, default=0),
)

# Feeds managed in the store (digest.pipeline.feeds), used when digest.toml lists no [[feeds]].
# Their fetch state stays in `feeds` above, keyed by the same name.
feed_sources = Table(
    "feed_sources",
    metadata,
    Column("name", String(200), primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("language", String(10)),
    Column("paused", Boolean, nullable=False, default=False),
    Column("position", Integer, nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    UniqueConstraint("url", name="uq_feed_sources_url"),
)

items = Table(
    "items",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("key", String(2000), nullable=False, unique=True),
    Column("feed", String(200), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("title", Text, nullable=False),
    Column("url", Text, nullable=False),
    Column("published", UTCDateTime),
    Column("updated", UTCDateTime),
    # effective_published: published, else updated, else first_seen; what windows compare.
    Column("sort_at", UTCDateTime, nullable=False),
    Column("first_seen", UTCDateTime, nullable=False),
    Column("last_seen", UTCDateTime, nullable=False),
    Column("authors", JSON, nullable=False),
    Column("categories", JSON, nullable=False),
    Column("series", JSON, nullable=False),
    Column("language", String(10)),
    Column("summary_html", Text, nullable=False, default=""),
    Column("content_html", Text, nullable=False, default=""),
    Column("event", JSON),
    Column("event_start", UTCDateTime),
    Column("media", JSON),
    Column("content_hash", String(64), nullable=False),
    # When the content last changed: an edit seen by a fetch (content_hash changed) is dated then; a new
    # item by its feed's updated/published date (never later than the fetch). An item changed less
    # than fetch.stabilise_minutes before a build waits for the next one (migration 0005).
    Column("content_changed_at", UTCDateTime, nullable=False),
    # The sent issue that offered the item (placed it, or an editor dropped it) or passed over it
    # (too old for late offering, or older than the first issue's window); NULL: not offered yet.
    # Set when that issue starts sending; an item is offered to exactly one issue (migration 0005).
    Column("offered_in", Integer),
    # The title and summary as the feed gave them (sanitised) when cleaning them changed them
    # (digest.clean_text: boilerplate, repeated place or outlet, quotes); NULL when nothing changed.
    Column("raw", JSON),
    # The item's image (https, from an allowed host: digest.feed_images), or NULL.
    Column("image", Text),
)
Index("ix_items_sort_at", items.c.sort_at)
Index("ix_items_event_start", items.c.event_start)

issues = Table(
    "issues",
    metadata,
    Column("number", Integer, primary_key=True, autoincrement=False),
    Column("status", String(20), nullable=False),
    Column("window_start", UTCDateTime, nullable=False),
    Column("window_end", UTCDateTime, nullable=False),
    Column("intro", Text, nullable=False, default=""),
    Column("subject", Text, nullable=False, default=""),
    Column("dropped", JSON, nullable=False),
    Column("pinned", JSON, nullable=False),
    # The composed issue as its JSON manifest: sent issues are read from here, never recomposed.
    Column("manifest", JSON, nullable=False),
    Column("version", String(64), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("approved_at", UTCDateTime),
    Column("approved_by", String(200)),
    Column("approved_version", String(64)),
    Column("send_at", UTCDateTime),
    Column("sending_started_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    # What the last build offered, held back and passed over (digest.offers.BuildReport as JSON);
    # read when the issue starts sending, to mark its items offered (migration 0005).
    Column("build_report", JSON),
    # Subject, intro and lead per language other than the site's ({"fr": {"subject": …, "intro": …, "lead": …}}),
    # and under "default" the site language's lead (its subject and intro have their own columns);
    # a language without them gets the site language's (migration 0010).
    Column("texts", JSON),
    UniqueConstraint("window_start", "window_end", name="uq_issues_window"),
)

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", Text, nullable=False, default=""),
    Column("language", String(10), nullable=False, default="en"),
    Column("series", JSON, nullable=False),
    Column("want_events", Boolean, nullable=False, default=True),
    Column("want_media", Boolean, nullable=False, default=True),
    Column("status", String(20), nullable=False),
    Column("consent_at", UTCDateTime),
    Column("consent_method", String(20), nullable=False, default=""),
    Column("consent_ip", String(64), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("confirmed_at", UTCDateTime),
    Column("unsubscribed_at", UTCDateTime),
    Column("bounce_count", Integer, nullable=False, default=0),
    Column("source", String(200), nullable=False, default=""),
    # Ids are never reused (SQLite AUTOINCREMENT), so a link signed for an erased subscriber stays dead.
    sqlite_autoincrement=True,
)
Index("ix_subscribers_status", subscribers.c.status)

# GDPR erasure keeps only a keyed hash of the address here, so it is never mailed again.
suppressions = Table(
    "suppressions",
    metadata,
    Column("email_hash", String(128), primary_key=True),
    Column("reason", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Fingerprint of the suppression key the hash was made with (digest.suppression_keys.suppression_key_id);
    # "" for hashes made before migration 0002, when the key was derived from the signing secret.
    Column("key_id", String(32), nullable=False, server_default=""),
)

# What a web sign-up asked for (choices, the form's IP), kept here rather than in the confirmation
# link: the link carries only the subscriber id and `nonce`. Deleted once used or expired.
signup_requests = Table(
    "signup_requests",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), nullable=False),
    Column("nonce", String(64), nullable=False, unique=True),
    Column("name", Text, nullable=False, default=""),
    Column("language", String(10), nullable=False),
    Column("series", JSON, nullable=False),
    Column("want_events", Boolean, nullable=False),
    Column("want_media", Boolean, nullable=False),
    Column("ip", String(64), nullable=False, default=""),
    Column("created_at", UTCDateTime, nullable=False),
)
Index("ix_signup_requests_subscriber", signup_requests.c.subscriber_id, signup_requests.c.created_at)

# Sign-ups, confirmations, unsubscribes... for the admin charts and per-issue reports.
subscriber_events = Table(
    "subscriber_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True),
    Column("event", String(40), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("issue_number", Integer),
    Column("detail", Text, nullable=False, default=""),
)
Index("ix_subscriber_events_at", subscriber_events.c.at)

deliveries = Table(
    "deliveries",
    metadata,
    Column("issue_number", Integer, ForeignKey("issues.number"), primary_key=True),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=False, default=""),
    Column("next_attempt_at", UTCDateTime),
    Column("claimed_by", String(200)),
    Column("claimed_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    Column("message_id", String(300)),
    # When a message was first possibly delivered (sent, but the server's confirmation lost): such a
    # row is resent once at most (migration 0004).
    Column("possibly_delivered_at", UTCDateTime),
)
# subscriber_id last: marking one row (issue, subscriber, `sending`) is one lookup in any plan (migration 0011).
Index("ix_deliveries_status", deliveries.c.issue_number, deliveries.c.status, deliveries.c.subscriber_id)
# Bounces and complaints that arrive after the send are matched to their row by Message-ID (migration 0008).
Index("ix_deliveries_message_id", deliveries.c.message_id)

# Each bounce, complaint or webhook event already acted on (a hash of the report's identity and the
# recipient), so importing a mailbox twice changes nothing; also the Mailgun webhook tokens already
# used, so a captured request cannot be replayed (migration 0008).
bounce_reports = Table(
    "bounce_reports",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("source", String(20), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("subscriber_id", Integer, ForeignKey("subscribers.id", ondelete="SET NULL"), nullable=True),
    Column("issue_number", Integer),
    Column("received_at", UTCDateTime, nullable=False),
)
Index("ix_bounce_reports_received_at", bounce_reports.c.received_at)

# Lease locks (the scheduler on SQLite, the single sender on SQLite).
locks = Table(
    "locks",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)

# Scheduler notes shown by `digest status` (e.g. "week skipped: nothing new").
run_log = Table(
    "run_log",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("job", String(40), nullable=False),
    Column("outcome", String(40), nullable=False),
    Column("detail", Text, nullable=False, default=""),
    # The cron fire time a build/send job ran for: a second run for the same time is a no-op.
    Column("scheduled_for", UTCDateTime),
    Column("issue_number", Integer),
)
Index("ix_run_log_job", run_log.c.job, run_log.c.scheduled_for)

# Admin sessions signed out before their cookie expired (digest.web.admin_auth): a copied cookie
# stops working. Rows go once the cookie would have expired anyway.
revoked_admin_sessions = Table(
    "revoked_admin_sessions",
    metadata,
    Column("session_id", String(64), primary_key=True),
    Column("expires_at", UTCDateTime, nullable=False),
)


# Staff accounts (digest.pipeline.accounts): who signs in to the admin, with which role. Sessions
# signed before `sessions_after` no longer sign anyone in (a role change, a disable, a new password).
accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", Text, nullable=False, default=""),
    Column("role", String(20), nullable=False),
    Column("password_hash", Text, nullable=False, default=""),
    # The one set-password link that works (invite or reset); cleared once used.
    Column("password_nonce", String(64), nullable=False, default=""),
    Column("disabled_at", UTCDateTime),
    Column("sessions_after", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# The audit trail (digest.pipeline.audit): every state change, who made it and when. `actor` is
# the account's label as it was ("Eda <eda@example.org>"), so a removed account's changes keep it.
audit_events = Table(
    "audit_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("actor_email", String(320), nullable=False, default=""),
    Column("action", String(40), nullable=False),
    Column("issue_number", Integer),
    Column("target", Text, nullable=False, default=""),
    Column("detail", JSON, nullable=False),
)
Index("ix_audit_events_issue", audit_events.c.issue_number)
Index("ix_audit_events_actor", audit_events.c.actor_email)

# API bearer tokens (digest.pipeline.tokens): only a SHA-256 of the token is kept; it acts with its
# account's role of the moment, and stops working once revoked or the account is disabled or gone.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", Text, nullable=False, default=""),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
    Column("last_used_at", UTCDateTime),
)

# Clicks counted through the signed redirect (digest.clicks): a count per issue, link and edition
# language, and nothing else — no subscriber, no address, no time of a single click.
click_counts = Table(
    "click_counts",
    metadata,
    Column("issue_number", Integer, primary_key=True),
    Column("link", String(64), primary_key=True),  # the link's id within the issue
    Column("language", String(10), primary_key=True),
    Column("section", String(200), nullable=False, default=""),
    Column("item_key", String(2000), nullable=False, default=""),
    Column("url", Text, nullable=False),
    Column("clicks", Integer, nullable=False, default=0),
)

# Series managed in the store (used when digest.toml lists no [[series]]); `version` grows with each
# change, so an edit made from a page older than the last change is refused as a conflict.
series_sources = Table(
    "series_sources",
    metadata,
    Column("id", String(100), primary_key=True),
    Column("name", Text, nullable=False),
    Column("names", JSON, nullable=False),  # per language: {"fr": "…", "de": "…"}
    Column("aliases", JSON, nullable=False),
    Column("url", Text, nullable=False, default=""),
    Column("position", Integer, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Text, nullable=False, default=""),
)

# Other settings managed in the store, one JSON value per section ("schedule", "branding"), used when
# digest.toml has no such table; `version` as for series.
managed_settings = Table(
    "managed_settings",
    metadata,
    Column("section", String(40), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("version", Integer, nullable=False, default=1),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", Text, nullable=False, default=""),
)

# Uploaded branding files (the logo), served by the web app under /branding/.
branding_files = Table(
    "branding_files",
    metadata,
    Column("name", String(40), primary_key=True),
    Column("content_type", String(100), nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
