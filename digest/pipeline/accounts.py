"""Use case: accounts. Who may use the admin: the admin password, and signed-out sessions.

Rules that live here and nowhere else:
- the admin password's hash comes from $DIGEST_ADMIN_PASSWORD_HASH, else `web.admin_password_hash`;
  without one nobody signs in;
- a signed-out session stays refused until its cookie would have expired, on every process sharing
  the store (digest.web.admin_auth signs and reads the cookie itself).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from ..config import Settings
from ..passwords import PasswordHashError, configured_hash, hash_password, verify_password
from ..store import sessions as session_store

__all__ = ["PasswordHashError", "admin_password_hash", "check_admin_password", "hash_password", "revoke_session",
           "session_revoked"]


def admin_password_hash(settings: Settings) -> str:
    """The admin password's hash in force ('' when none is set)."""
    return configured_hash(settings.web.admin_password_hash)


def check_admin_password(settings: Settings, password: str) -> bool:
    """True if `password` is the admin's; False when no hash is set; PasswordHashError for a malformed hash."""
    encoded = admin_password_hash(settings)
    return bool(encoded) and verify_password(password, encoded)


def revoke_session(engine: Engine, session_id: str, expires_at: datetime, now: datetime | None = None) -> None:
    """Sign a session out everywhere until `expires_at` (when its cookie expires anyway); idempotent."""
    session_store.revoke_session(engine, session_id, expires_at, now or datetime.now(UTC))


def session_revoked(engine: Engine, session_id: str) -> bool:
    """Whether the session was signed out."""
    return session_store.session_revoked(engine, session_id)
