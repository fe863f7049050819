"""Web sign-up requests waiting for their confirmation link (the signup_requests table).

A request holds what the subscribe form asked for (choices, the form's IP) so the confirmation
link carries only the subscriber id and the request's random nonce. Requests go when used
(confirmation), when the subscriber opts out or is erased, when their email could not be sent, and
when older than the link's lifetime.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, func, or_, select, text

from ..models import Subscriber
from .locks import advisory_key
from .schema import signup_requests, subscribers

# How far back web.confirm_mail_per_domain_hour counts.
DOMAIN_CAP_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class SignupRequest:
    """A web sign-up waiting for its confirmation link: what the form asked for, kept in the store."""

    subscriber_id: int
    nonce: str
    choices: Subscriber  # name, language, series, want_events, want_media as submitted
    ip: str
    created_at: datetime


def record_signup_request(engine: Engine, subscriber_id: int, wanted: Subscriber, ip: str,
                          cooldown: timedelta = timedelta(0), now: datetime | None = None, mailbox: str = "",
                          per_domain_hour: int = 0) -> str | None:
    """Store a request for `subscriber_id`; its nonce, or None when no confirmation email may go out.

    None when a request for the same mailbox was stored less than `cooldown` ago, or when
    `per_domain_hour` requests (0: no cap) for addresses at the mailbox's domain were stored in the
    last DOMAIN_CAP_WINDOW. `mailbox` is the canonical address (lower case, no "+tag"): its
    requests are those of the address itself and of every `local+tag@domain`; without it, only
    `subscriber_id`'s. These cap confirmation emails whoever asks and from wherever. On PostgreSQL
    the domain's advisory lock and the subscriber row's lock are taken first, so sign-ups at once
    in several processes still send one.
    """
    now = now or datetime.now(UTC)
    local, _, domain = mailbox.rpartition("@")
    with engine.begin() as conn:
        if domain and conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": advisory_key(f"digest-signup:{domain}")})
        if conn.execute(select(subscribers.c.id).where(subscribers.c.id == subscriber_id).with_for_update()).first() is None:
            return None
        recent = select(signup_requests.c.id).join(subscribers, subscribers.c.id == signup_requests.c.subscriber_id)
        if cooldown > timedelta(0):
            same = (or_(subscribers.c.email == mailbox,
                        subscribers.c.email.like(f"{_like_escape(local)}+%@{_like_escape(domain)}", escape="\\"))
                    if local else signup_requests.c.subscriber_id == subscriber_id)
            if conn.execute(recent.where(same, signup_requests.c.created_at > now - cooldown).limit(1)).first():
                return None
        if per_domain_hour > 0 and domain:
            at_domain = select(func.count()).select_from(
                signup_requests.join(subscribers, subscribers.c.id == signup_requests.c.subscriber_id)).where(
                subscribers.c.email.like(f"%@{_like_escape(domain)}", escape="\\"),
                signup_requests.c.created_at > now - DOMAIN_CAP_WINDOW)
            if conn.execute(at_domain).scalar_one() >= per_domain_hour:
                return None
        nonce = secrets.token_urlsafe(16)
        conn.execute(signup_requests.insert().values(
            subscriber_id=subscriber_id, nonce=nonce, name=wanted.name, language=wanted.language,
            series=list(wanted.series), want_events=wanted.want_events, want_media=wanted.want_media,
            ip=ip[:64], created_at=now))
    return nonce


def _like_escape(text_: str) -> str:
    """`text_` matched literally in a LIKE pattern (escape character: backslash)."""
    return text_.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def find_signup_request(engine: Engine, subscriber_id: int, nonce: str) -> SignupRequest | None:
    """The stored request a confirmation link names; None if used, withdrawn or purged."""
    query = select(signup_requests).where(signup_requests.c.subscriber_id == subscriber_id,
                                          signup_requests.c.nonce == nonce)
    with engine.connect() as conn:
        row = conn.execute(query).first()
    if row is None:
        return None
    choices = Subscriber(email="", name=row.name, language=row.language, series=tuple(row.series or ()),
                         want_events=bool(row.want_events), want_media=bool(row.want_media))
    return SignupRequest(subscriber_id=row.subscriber_id, nonce=row.nonce, choices=choices, ip=row.ip,
                         created_at=row.created_at)


def withdraw_signup_request(engine: Engine, subscriber_id: int, nonce: str) -> bool:
    """Delete one request whose confirmation email could not be sent; True if it was there.

    Its link reached nobody, so it must not hold back the next sign-up's email (the cooldown).
    """
    with engine.begin() as conn:
        return bool(conn.execute(signup_requests.delete().where(signup_requests.c.subscriber_id == subscriber_id,
                                                                signup_requests.c.nonce == nonce)).rowcount)


def forget_signup_requests(conn: Connection, subscriber_id: int) -> None:
    """Drop every request of a subscriber (inside the caller's transaction): used, opted out or erased."""
    conn.execute(signup_requests.delete().where(signup_requests.c.subscriber_id == subscriber_id))


def purge_signup_requests(engine: Engine, before: datetime) -> int:
    """Delete requests made before `before` (their links have expired); returns how many."""
    with engine.begin() as conn:
        return conn.execute(signup_requests.delete().where(signup_requests.c.created_at < before)).rowcount
