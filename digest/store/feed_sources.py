"""Feeds managed in the store (used when digest.toml lists no [[feeds]]): add, list, pause, rename, remove.

Only digest.pipeline.feeds calls these; it checks names, URLs and kinds first. Names and URLs are
unique (the primary key and a unique constraint), so two processes adding the same feed at once
cannot both succeed: the loser gets DuplicateFeed, and nothing of it is saved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, Row, func, select
from sqlalchemy.exc import IntegrityError

from ..item_keys import CONTENT_KEY_PREFIX, content_key
from .schema import feed_sources as sources_table
from .schema import feeds as states_table
from .schema import items as items_table


class DuplicateFeed(Exception):
    """A feed with this name or URL is already stored; nothing was saved."""


class NoSuchFeed(LookupError):
    """No stored feed has this name."""


@dataclass(frozen=True)
class StoredFeed:
    name: str
    url: str
    kind: str
    language: str | None
    paused: bool
    position: int


def stored_feeds(engine: Engine) -> list[StoredFeed]:
    """Every stored feed, paused ones too, in the order they were added."""
    with engine.connect() as conn:
        rows = conn.execute(select(sources_table).order_by(sources_table.c.position, sources_table.c.name))
        return [_feed(row) for row in rows]


def _feed(row: Row) -> StoredFeed:
    return StoredFeed(name=row.name, url=row.url, kind=row.kind, language=row.language, paused=bool(row.paused),
                      position=row.position)


def insert_feeds(engine: Engine, feeds: Sequence[tuple[str, str, str, str | None]], now: datetime,
                 paused: set[str] | frozenset[str] = frozenset()) -> None:
    """Add (name, url, kind, language) feeds in one transaction: all of them, or none (DuplicateFeed).

    Those named in `paused` are added paused."""
    try:
        with engine.begin() as conn:
            position = conn.execute(select(func.coalesce(func.max(sources_table.c.position), 0))).scalar_one()
            for name, url, kind, language in feeds:
                _refuse_duplicate(conn, name, url)
                position += 1
                conn.execute(sources_table.insert().values(name=name, url=url, kind=kind, language=language,
                                                           paused=name in paused, position=position, added_at=now))
    except IntegrityError:  # another process added the same name or URL in between
        raise DuplicateFeed("a feed with this name or URL was just added by someone else; nothing was saved") from None


def _refuse_duplicate(conn: Connection, name: str, url: str) -> None:
    same = conn.execute(select(sources_table.c.name, sources_table.c.url).where(
        (sources_table.c.name == name) | (sources_table.c.url == url))).first()
    if same is None:
        return
    if same.name == name:
        raise DuplicateFeed(f"there is already a feed named {name!r}; choose another name")
    raise DuplicateFeed(f"{url} is already fetched as the feed {same.name!r}")


def set_paused(engine: Engine, name: str, paused: bool) -> bool:
    """Pause or resume a feed; False when it already was in that state."""
    with engine.begin() as conn:
        row = _row(conn, name)
        if bool(row.paused) == paused:
            return False
        conn.execute(sources_table.update().where(sources_table.c.name == name).values(paused=paused))
        return True


def rename_feed(engine: Engine, name: str, new_name: str) -> None:
    """Rename a feed; its fetch state and its stored items follow (past issues keep the old name)."""
    try:
        with engine.begin() as conn:
            _row(conn, name)
            if conn.execute(select(sources_table.c.name).where(sources_table.c.name == new_name)).first():
                raise DuplicateFeed(f"there is already a feed named {new_name!r}; choose another name")
            conn.execute(sources_table.update().where(sources_table.c.name == name).values(name=new_name))
            # A leftover state row of a feed removed earlier under the new name would block the rename.
            conn.execute(states_table.delete().where(states_table.c.name == new_name))
            conn.execute(states_table.update().where(states_table.c.name == name).values(name=new_name))
            conn.execute(items_table.update().where(items_table.c.feed == name).values(feed=new_name))
            _rekey_content_items(conn, new_name)
    except IntegrityError:
        raise DuplicateFeed(f"a feed named {new_name!r} was just added by someone else; nothing was changed") from None


def _rekey_content_items(conn: Connection, feed: str) -> None:
    """Items without guid or link are keyed by their feed's name too (digest.item_keys): give them the key
    the parser now computes under the new name, in place, so the next fetch finds them (not new copies)."""
    columns = (items_table.c.id, items_table.c.title, items_table.c.published, items_table.c.summary_html,
               items_table.c.content_html, items_table.c.raw)
    query = select(*columns).where(items_table.c.feed == feed, items_table.c.key.startswith(CONTENT_KEY_PREFIX))
    for row in conn.execute(query).fetchall():
        # Keys come from the text as the feed gave it: the raw values where cleaning changed them.
        raw = dict(pair for pair in (row.raw or []) if pair[0] != "author")
        key = content_key(feed, raw.get("title", row.title), row.published, raw.get("summary_html", row.summary_html),
                          raw.get("content_html", row.content_html))
        conn.execute(items_table.update().where(items_table.c.id == row.id).values(key=key))


def delete_feed(engine: Engine, name: str) -> None:
    """Stop fetching a feed: its row and fetch state go; its items and past issues stay."""
    with engine.begin() as conn:
        _row(conn, name)
        conn.execute(sources_table.delete().where(sources_table.c.name == name))
        conn.execute(states_table.delete().where(states_table.c.name == name))


def _row(conn: Connection, name: str) -> Row:
    row = conn.execute(select(sources_table).where(sources_table.c.name == name)).first()
    if row is None:
        raise NoSuchFeed(f"there is no feed named {name!r}; `digest feeds list` shows the names")
    return row
