"""Settings sections managed in the store ("schedule", "branding"), one JSON value each, used when
digest.toml has no such table.

Only digest.pipeline calls these. Each row has a `version` that grows with every change, so an edit
made from a page that showed an older version is refused as a conflict instead of overwriting.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from .schema import managed_settings as table


def managed_sections(engine: Engine) -> dict[str, dict[str, Any]]:
    """section → its stored value, for every section the store holds."""
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.section, table.c.value)).fetchall()
    return {row.section: dict(row.value or {}) for row in rows}
