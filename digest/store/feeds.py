"""Per-feed state kept across runs: HTTP validators, Retry-After, health."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Row, select

from ..models import FeedStatus
from .schema import feeds as feeds_table


@dataclass(frozen=True)
class FeedState:
    name: str
    url: str
    etag: str | None = None
    last_modified: str | None = None
    retry_after: datetime | None = None
    last_fetch_at: datetime | None = None
    last_success_at: datetime | None = None
    last_status: str | None = None
    last_message: str = ""
    last_error_at: datetime | None = None
    consecutive_failures: int = 0


def get_feed_state(engine: Engine, name: str, url: str) -> FeedState:
    """The stored state of a feed; validators are dropped when its URL changed."""
    return get_feed_states(engine, [(name, url)])[0]


def get_feed_states(engine: Engine, feeds: Sequence[tuple[str, str]]) -> list[FeedState]:
    """get_feed_state for each (name, url) in `feeds`, in order: one query per 500 feeds."""
    names = [name for name, _ in feeds]
    rows: dict[str, Row] = {}
    with engine.connect() as conn:
        for start in range(0, len(names), 500):
            chunk = names[start : start + 500]
            rows.update((row.name, row) for row in conn.execute(select(feeds_table).where(feeds_table.c.name.in_(chunk))))
    return [_state_from(rows.get(name), name, url) for name, url in feeds]


def _state(conn: Connection, name: str, url: str) -> FeedState:
    return _state_from(conn.execute(select(feeds_table).where(feeds_table.c.name == name)).first(), name, url)


def _state_from(row: Row | None, name: str, url: str) -> FeedState:
    if row is None:
        return FeedState(name=name, url=url)
    state = FeedState(**row._mapping)
    if state.url != url:
        return FeedState(name=name, url=url, consecutive_failures=state.consecutive_failures)
    return state


def all_feed_states(engine: Engine) -> list[FeedState]:
    with engine.connect() as conn:
        return [FeedState(**r._mapping) for r in conn.execute(select(feeds_table).order_by(feeds_table.c.name))]


def record_fetch(
    engine: Engine,
    name: str,
    url: str,
    status: FeedStatus,
    message: str = "",
    etag: str | None = None,
    last_modified: str | None = None,
    retry_after: datetime | None = None,
    now: datetime | None = None,
) -> None:
    """Store the outcome of one fetch; validators survive a 304 or an error (None keeps the old one)."""
    now = now or datetime.now(UTC)
    failed = status == FeedStatus.ERROR
    with engine.begin() as conn:  # one transaction: read the old state, write the new one
        old = _state(conn, name, url)
        values = {
            "url": url,
            "etag": etag if etag is not None else old.etag,
            "last_modified": last_modified if last_modified is not None else old.last_modified,
            "retry_after": retry_after,
            "last_fetch_at": now,
            "last_success_at": old.last_success_at if failed else now,
            "last_status": status.value,
            "last_message": message,
            "last_error_at": now if failed else old.last_error_at,
            "consecutive_failures": old.consecutive_failures + 1 if failed else 0,
        }
        updated = conn.execute(feeds_table.update().where(feeds_table.c.name == name).values(**values))
        if updated.rowcount == 0:
            conn.execute(feeds_table.insert().values(name=name, **values))
