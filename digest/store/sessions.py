"""Signed-out admin sessions: ids of session cookies that no longer sign anyone in.

The admin session is a signed cookie (digest.web.admin_auth), valid until it expires. Signing out
records its id here until that expiry, so a copy of the cookie (another browser, a stolen one)
stops working at once, on every process sharing the store.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from .schema import revoked_admin_sessions as revoked


def revoke_session(engine: Engine, session_id: str, expires_at: datetime, now: datetime | None = None) -> None:
    """Record that `session_id` is signed out (idempotent); forgets revocations that have expired."""
    now = now or datetime.now(UTC)
    # Already revoked (signed out twice, or by another request at the same moment): nothing to add.
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    with engine.begin() as conn:
        conn.execute(revoked.delete().where(revoked.c.expires_at < now))
        conn.execute(dialect.insert(revoked).values(session_id=session_id, expires_at=expires_at)
                     .on_conflict_do_nothing(index_elements=[revoked.c.session_id]))


def session_revoked(engine: Engine, session_id: str) -> bool:
    """Whether the session was signed out."""
    with engine.connect() as conn:
        return conn.execute(select(revoked.c.session_id).where(revoked.c.session_id == session_id)).first() is not None
