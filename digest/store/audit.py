"""The audit trail's rows: appended, never changed; read newest first, filtered by issue or person."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Row, and_, func, select, true

from .schema import audit_events


def add_event(engine: Engine, at: datetime, actor: str, actor_email: str, action: str, issue_number: int | None,
              target: str, detail: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(audit_events.insert().values(at=at, actor=actor, actor_email=actor_email, action=action,
                                                  issue_number=issue_number, target=target, detail=detail))


def _where(issue_number: int | None, actor_email: str | None) -> ColumnElement[bool]:
    parts = []
    if issue_number is not None:
        parts.append(audit_events.c.issue_number == issue_number)
    if actor_email:
        parts.append(audit_events.c.actor_email == actor_email)
    return and_(*parts) if parts else true()


def list_events(engine: Engine, issue_number: int | None = None, actor_email: str | None = None,
                limit: int | None = 50, offset: int = 0) -> list[Row]:
    """Rows newest first, in the order they were appended; `limit` None for all."""
    query = (select(audit_events).where(_where(issue_number, actor_email))
             .order_by(audit_events.c.id.desc()).offset(offset))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return list(conn.execute(query))


def count_events(engine: Engine, issue_number: int | None = None, actor_email: str | None = None) -> int:
    with engine.connect() as conn:
        query = select(func.count()).select_from(audit_events).where(_where(issue_number, actor_email))
        return conn.execute(query).scalar_one()


def actors(engine: Engine) -> list[tuple[str, str]]:
    """(email, newest label) of everyone with an account who changed something, by email."""
    query = (select(audit_events.c.actor_email, func.max(audit_events.c.actor))
             .where(audit_events.c.actor_email != "").group_by(audit_events.c.actor_email)
             .order_by(audit_events.c.actor_email))
    with engine.connect() as conn:
        return [(r[0], r[1]) for r in conn.execute(query)]


def latest(engine: Engine, issue_number: int, actions: tuple[str, ...]) -> Row | None:
    """The newest row about an issue with one of `actions`, or None."""
    query = (select(audit_events).where(audit_events.c.issue_number == issue_number,
                                        audit_events.c.action.in_(actions))
             .order_by(audit_events.c.id.desc()).limit(1))
    with engine.connect() as conn:
        return conn.execute(query).first()
