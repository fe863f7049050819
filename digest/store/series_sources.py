"""Series managed in the store (used when digest.toml lists no [[series]]).

Only digest.pipeline calls these. Each row has a `version` that grows with every change, so an edit
made from a page that showed an older version is refused as a conflict instead of overwriting.
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from ..models import Series
from .schema import series_sources as table


def stored_series(engine: Engine) -> list[Series]:
    """Every stored series, in display order."""
    with engine.connect() as conn:
        rows = conn.execute(select(table).order_by(table.c.position, table.c.id)).fetchall()
    return [Series(id=row.id, name=row.name, aliases=tuple(row.aliases or ()), url=row.url or "",
                   names=tuple(sorted((row.names or {}).items()))) for row in rows]
