"""API tokens' rows: stored by their SHA-256 only, looked up by it, revoked, never shown again."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, select

from .schema import accounts, api_tokens


@dataclass(frozen=True)
class TokenRow:
    id: int
    account_id: int
    account_email: str
    name: str
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


def add_token(engine: Engine, account_id: int, name: str, token_hash: str, now: datetime) -> int:
    with engine.begin() as conn:
        return conn.execute(api_tokens.insert().values(account_id=account_id, name=name, token_hash=token_hash,
                                                       created_at=now).returning(api_tokens.c.id)).scalar_one()


def list_tokens(engine: Engine, account_id: int | None = None) -> list[TokenRow]:
    query = (select(api_tokens, accounts.c.email).join(accounts, accounts.c.id == api_tokens.c.account_id)
             .order_by(api_tokens.c.id))
    if account_id is not None:
        query = query.where(api_tokens.c.account_id == account_id)
    with engine.connect() as conn:
        return [TokenRow(r.id, r.account_id, r.email, r.name, r.created_at, r.revoked_at, r.last_used_at)
                for r in conn.execute(query)]


def get_token(engine: Engine, token_id: int) -> TokenRow | None:
    return next((t for t in list_tokens(engine) if t.id == token_id), None)


def account_id_for(engine: Engine, token_hash: str, now: datetime) -> int | None:
    """The account of a live token with this hash (and note its use), or None."""
    query = select(api_tokens.c.id, api_tokens.c.account_id).where(
        api_tokens.c.token_hash == token_hash, api_tokens.c.revoked_at.is_(None))
    with engine.begin() as conn:
        row = conn.execute(query).first()
        if row is None:
            return None
        conn.execute(api_tokens.update().where(api_tokens.c.id == row.id).values(last_used_at=now))
    return row.account_id


def revoke_token(engine: Engine, token_id: int, now: datetime) -> bool:
    """True if the token was live and is now revoked."""
    with engine.begin() as conn:
        done = conn.execute(api_tokens.update().where(api_tokens.c.id == token_id, api_tokens.c.revoked_at.is_(None))
                            .values(revoked_at=now))
    return bool(done.rowcount)


def remove_tokens_of(engine: Engine, account_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(api_tokens.delete().where(api_tokens.c.account_id == account_id))
