"""Staff accounts: rows of `accounts`, read and changed; the rules live in digest.pipeline.accounts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, Row, func, select
from sqlalchemy.exc import IntegrityError

from ..models import Account, Role
from .schema import accounts, api_tokens


class AccountExists(ValueError):
    """An account with that email address exists already."""


def _account(row: Row) -> Account:
    return Account(email=row.email, role=Role(row.role), name=row.name, id=row.id,
                   disabled=row.disabled_at is not None, has_password=bool(row.password_hash),
                   created_at=row.created_at)


def add_account(engine: Engine, email: str, name: str, role: Role, password_hash: str, nonce: str,
                now: datetime) -> Account:
    """Store a new account; AccountExists when the address has one."""
    try:
        with engine.begin() as conn:
            new_id = conn.execute(accounts.insert().values(
                email=email, name=name, role=role.value, password_hash=password_hash, password_nonce=nonce,
                sessions_after=now, created_at=now, updated_at=now).returning(accounts.c.id)).scalar_one()
    except IntegrityError:
        raise AccountExists(f"there is an account for {email} already; `digest users list` shows them") from None
    return get_account(engine, new_id)


def get_account(engine: Engine, key: int | str) -> Account | None:
    """The account with this id or email address (exactly as stored: lower case), or None."""
    column = accounts.c.id if isinstance(key, int) else accounts.c.email
    with engine.connect() as conn:
        row = conn.execute(select(accounts).where(column == key)).first()
    return _account(row) if row else None


def list_accounts(engine: Engine) -> list[Account]:
    with engine.connect() as conn:
        return [_account(r) for r in conn.execute(select(accounts).order_by(accounts.c.email))]


def count_accounts(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(accounts)).scalar_one()


def count_active_admins(engine: Engine) -> int:
    query = select(func.count()).select_from(accounts).where(
        accounts.c.role == Role.ADMIN.value, accounts.c.disabled_at.is_(None), accounts.c.password_hash != "")
    with engine.connect() as conn:
        return conn.execute(query).scalar_one()


def password_hash_of(engine: Engine, account_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(accounts.c.password_hash).where(accounts.c.id == account_id)).scalar() or ""


def password_nonce_of(engine: Engine, account_id: int) -> str:
    with engine.connect() as conn:
        return conn.execute(select(accounts.c.password_nonce).where(accounts.c.id == account_id)).scalar() or ""


def sessions_after(engine: Engine, account_id: int) -> datetime | None:
    """Sessions signed before this instant are over; None when the account is gone or disabled."""
    query = select(accounts.c.sessions_after).where(accounts.c.id == account_id, accounts.c.disabled_at.is_(None))
    with engine.connect() as conn:
        return conn.execute(query).scalar()


def update_account(engine: Engine, account_id: int, now: datetime, end_sessions: bool, **values: object) -> bool:
    """Change columns of one account (and end its sessions when `end_sessions`); False if it is gone."""
    if end_sessions:
        values["sessions_after"] = now
    with engine.begin() as conn:
        done = conn.execute(accounts.update().where(accounts.c.id == account_id).values(updated_at=now, **values))
    return bool(done.rowcount)


def use_password_nonce(engine: Engine, account_id: int, nonce: str, password_hash: str, now: datetime) -> bool:
    """Set the password if `nonce` is still the account's link nonce (once: the nonce is cleared); ends sessions."""
    with engine.begin() as conn:
        done = conn.execute(accounts.update().where(
            accounts.c.id == account_id, accounts.c.password_nonce == nonce, accounts.c.password_nonce != "",
            accounts.c.disabled_at.is_(None),
        ).values(password_hash=password_hash, password_nonce="", sessions_after=now, updated_at=now))
    return bool(done.rowcount)


def remove_account(engine: Engine, account_id: int) -> bool:
    """Delete an account and its API tokens (SQLite enforces no foreign keys here: done by hand)."""
    with engine.begin() as conn:
        conn.execute(api_tokens.delete().where(api_tokens.c.account_id == account_id))
        return bool(conn.execute(accounts.delete().where(accounts.c.id == account_id)).rowcount)
