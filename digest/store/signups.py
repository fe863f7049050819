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

from sqlalchemy import Connection, Engine, select

from ..models import Subscriber
from .schema import signup_requests, subscribers


@dataclass(frozen=True)
class SignupRequest:
    """A web sign-up waiting for its confirmation link: what the form asked for, kept in the store."""

    subscriber_id: int
    nonce: str
    choices: Subscriber  # name, language, series, want_events, want_media as submitted
    ip: str
    created_at: datetime


def record_signup_request(engine: Engine, subscriber_id: int, wanted: Subscriber, ip: str,
                          cooldown: timedelta = timedelta(0), now: datetime | None = None) -> str | None:
    """Store a request for `subscriber_id`; its nonce, or None if one was stored less than `cooldown` ago.

    The cooldown caps confirmation emails per address (one per cooldown), whoever asks and from
    wherever. The subscriber row is locked first (PostgreSQL), so two sign-ups at once send one.
    """
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        if conn.execute(select(subscribers.c.id).where(subscribers.c.id == subscriber_id).with_for_update()).first() is None:
            return None
        if cooldown > timedelta(0) and conn.execute(select(signup_requests.c.id).where(
                signup_requests.c.subscriber_id == subscriber_id,
                signup_requests.c.created_at > now - cooldown).limit(1)).first():
            return None
        nonce = secrets.token_urlsafe(16)
        conn.execute(signup_requests.insert().values(
            subscriber_id=subscriber_id, nonce=nonce, name=wanted.name, language=wanted.language,
            series=list(wanted.series), want_events=wanted.want_events, want_media=wanted.want_media,
            ip=ip[:64], created_at=now))
    return nonce


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
