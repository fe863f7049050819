"""Use case: API tokens. Bearer tokens for /api/v1, one account each, shown once, stored hashed.

Rules that live here and nowhere else:
- only admins issue and revoke tokens (the server's command line may too);
- a token is shown once, when made; only its SHA-256 is kept, so a lost token is revoked and
  replaced, never recovered;
- a token acts as its account with the account's role of the moment: a role change applies at
  once, and a disabled or removed account's tokens stop working;
- issuing and revoking are in the audit trail.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine

from ..models import Account
from ..store import accounts as account_store
from ..store import tokens as token_store
from ..store.tokens import TokenRow
from .accounts import AccountError, find_account, require
from .audit import record

PREFIX = "dgst_"
MAX_NAME = 100


@dataclass(frozen=True)
class NewToken:
    """A token just made: `secret` is shown this once and kept nowhere."""

    id: int
    secret: str
    account: Account
    name: str


def issue_token(engine: Engine, email: str, name: str = "", actor: Account | None = None,
                now: datetime | None = None) -> NewToken:
    """Make a token for an enabled account; NotAllowed unless `actor` is an admin (None: the command line)."""
    if actor is not None:
        require(actor, "tokens")
    account = find_account(engine, email)
    if account is None or account.disabled:
        raise AccountError(f"there is no enabled account {email.strip()!r}; `digest users list` shows them")
    name = " ".join(name.split())[:MAX_NAME]
    secret = PREFIX + secrets.token_urlsafe(32)
    token_id = token_store.add_token(engine, account.id, name, _hash(secret), now or datetime.now(UTC))
    record(engine, actor, "token.issue", target=account.email, detail={"token": token_id, "name": name}, now=now)
    return NewToken(token_id, secret, account, name)


def list_tokens(engine: Engine, email: str | None = None) -> list[TokenRow]:
    """Every token (or one account's), live and revoked, oldest first; never their secrets."""
    if email is None:
        return token_store.list_tokens(engine)
    account = find_account(engine, email)
    return token_store.list_tokens(engine, account.id) if account else []


def revoke_token(engine: Engine, token_id: int, actor: Account | None = None, now: datetime | None = None) -> TokenRow:
    """Revoke a token at once; AccountError when there is none or it is revoked already."""
    if actor is not None:
        require(actor, "tokens")
    found = token_store.get_token(engine, token_id)
    if found is None or not token_store.revoke_token(engine, token_id, now or datetime.now(UTC)):
        raise AccountError(f"there is no live token {token_id}; `digest users tokens` lists them")
    record(engine, actor, "token.revoke", target=found.account_email, detail={"token": token_id, "name": found.name},
           now=now)
    return found


def token_account(engine: Engine, secret: str, now: datetime | None = None) -> Account | None:
    """The enabled account a bearer token acts as, or None (unknown, revoked, account disabled or gone)."""
    if not secret.startswith(PREFIX) or len(secret) > 200:
        return None
    account_id = token_store.account_id_for(engine, _hash(secret), now or datetime.now(UTC))
    account = account_store.get_account(engine, account_id) if account_id is not None else None
    return account if account is not None and not account.disabled else None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()
