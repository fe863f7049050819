"""Series managed in the store (used when digest.toml lists no [[series]]).

Only digest.pipeline calls these; digest.pipeline.series_settings checks ids, names, aliases and URLs
first. Each row has a `version` that grows with every change: a change names the version its caller
saw, and is made with `UPDATE … WHERE version = :seen`, so an edit made from a page that showed an
older version is refused (StaleSeries) instead of overwriting someone else's, even between processes.
Ids are the primary key, so two processes adding the same id at once cannot both succeed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, Row, func, select
from sqlalchemy.exc import IntegrityError

from ..models import Series
from .schema import items as items_table
from .schema import series_sources as table


class DuplicateSeries(Exception):
    """A series with this id is already stored; nothing was saved."""


class NoSuchSeries(LookupError):
    """No stored series has this id."""


class StaleSeries(Exception):
    """The series changed since the version the caller saw; nothing was saved."""


STALE = ("someone changed the series {id!r} since you opened the page, so nothing was saved: "
         "reload the page to see their change, then make yours again")


@dataclass(frozen=True)
class StoredSeries:
    series: Series
    position: int
    version: int
    updated_at: datetime
    updated_by: str


def stored_series(engine: Engine) -> list[Series]:
    """Every stored series, in display order."""
    return [row.series for row in stored_series_rows(engine)]


def stored_series_rows(engine: Engine) -> list[StoredSeries]:
    """Every stored series with its position, version and last change, in display order."""
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.position, table.c.id)).fetchall()
    return [_stored(row) for row in rows]


def _stored(row: Row) -> StoredSeries:
    series = Series(id=row.id, name=row.name, aliases=tuple(row.aliases or ()), url=row.url or "",
                    names=tuple(sorted((row.names or {}).items())))
    return StoredSeries(series, row.position, row.version, row.updated_at, row.updated_by or "")


def insert_series(engine: Engine, series: Series, now: datetime, by: str) -> StoredSeries:
    """Add a series after the others (version 1); DuplicateSeries when its id is taken."""
    try:
        with engine.begin() as conn:
            if conn.execute(select(table.c.id).where(table.c.id == series.id)).first():
                raise DuplicateSeries(f"there is already a series with the id {series.id!r}; choose another id")
            position = conn.execute(select(func.coalesce(func.max(table.c.position), 0))).scalar_one() + 1
            conn.execute(table.insert().values(id=series.id, version=1, position=position, updated_at=now,
                                               updated_by=by, **_values(series)))
    except IntegrityError:  # another process added the same id in between
        raise DuplicateSeries(f"a series with the id {series.id!r} was just added by someone else; "
                              "nothing was saved") from None
    return StoredSeries(series, position, 1, now, by)


def _values(series: Series) -> dict[str, object]:
    return {"name": series.name, "names": dict(series.names), "aliases": list(series.aliases), "url": series.url}


def update_series(engine: Engine, series: Series, seen_version: int, now: datetime, by: str) -> int:
    """Replace the stored series with this id by `series`, if it is still at `seen_version`; the new version.

    StaleSeries when someone changed it since; NoSuchSeries when it is gone.
    """
    with engine.begin() as conn:
        return _update_checked(conn, series.id, seen_version, now, by, **_values(series))


def _update_checked(conn: Connection, series_id: str, seen_version: int, now: datetime, by: str, **values: object) -> int:
    done = conn.execute(table.update().where(table.c.id == series_id, table.c.version == seen_version).values(
        version=seen_version + 1, updated_at=now, updated_by=by, **values))
    if done.rowcount != 1:
        _require(conn, series_id)
        raise StaleSeries(STALE.format(id=series_id))
    return seen_version + 1


def _require(conn: Connection, series_id: str) -> Row:
    row = conn.execute(select(table).where(table.c.id == series_id)).first()
    if row is None:
        raise NoSuchSeries(f"there is no series with the id {series_id!r}; `digest series list` shows the ids")
    return row


def current_version(engine: Engine, series_id: str) -> int:
    """The stored version of a series (NoSuchSeries when it is gone)."""
    with engine.connect() as conn:
        return _require(conn, series_id).version


def move_series(engine: Engine, series_id: str, seen_version: int, step: int, now: datetime, by: str) -> bool:
    """Swap a series with its neighbour above (step -1) or below (+1); False when it is already first/last.

    Only the moved series' version is checked and grows: its neighbour's content is untouched.
    """
    with engine.begin() as conn:
        row = _require(conn, series_id)
        ordered = table.c.position.desc() if step < 0 else table.c.position.asc()
        beyond = table.c.position < row.position if step < 0 else table.c.position > row.position
        neighbour = conn.execute(select(table.c.id, table.c.position).where(beyond).order_by(ordered).limit(1)).first()
        if row.version != seen_version:
            raise StaleSeries(STALE.format(id=series_id))
        if neighbour is None:
            return False
        _update_checked(conn, series_id, seen_version, now, by, position=neighbour.position)
        conn.execute(table.update().where(table.c.id == neighbour.id).values(position=row.position))
        return True


def delete_series(engine: Engine, series_id: str, seen_version: int) -> None:
    """Remove a series if it is still at `seen_version` (StaleSeries otherwise). Items keep their series ids."""
    with engine.begin() as conn:
        done = conn.execute(table.delete().where(table.c.id == series_id, table.c.version == seen_version))
        if done.rowcount != 1:
            _require(conn, series_id)
            raise StaleSeries(STALE.format(id=series_id))


def categories_since(engine: Engine, since: datetime) -> list[list[str]]:
    """The categories of every item first seen at or after `since`, one list per item."""
    with engine.connect() as conn:
        rows = conn.execute(select(items_table.c.categories).where(items_table.c.first_seen >= since)).fetchall()
    return [[c for c in row.categories or () if isinstance(c, str)] for row in rows]


def items_for_matching(engine: Engine, since: datetime) -> list[tuple[int, list[str], list[str]]]:
    """(id, categories, series) of every item first seen at or after `since`."""
    with engine.connect() as conn:
        rows = conn.execute(select(items_table.c.id, items_table.c.categories, items_table.c.series)
                            .where(items_table.c.first_seen >= since)).fetchall()
    return [(row.id, list(row.categories or ()), list(row.series or ())) for row in rows]


def set_item_series(engine: Engine, changes: dict[int, list[str]]) -> None:
    """Give items new series ids ({item id: [series ids]}), in one transaction."""
    with engine.begin() as conn:
        for item_id, series_ids in changes.items():
            conn.execute(items_table.update().where(items_table.c.id == item_id).values(series=series_ids))
