"""Settings sections managed in the store ("schedule", "branding"), one JSON value each, used when
digest.toml has no such table.

Only digest.pipeline calls these. Each row has a `version` that grows with every change, so an edit
made from a page that showed an older version is refused as a conflict instead of overwriting.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from .schema import branding_files as files
from .schema import managed_settings as table


def managed_sections(engine: Engine) -> dict[str, dict[str, Any]]:
    """section → its stored value, for every section the store holds."""
    with engine.connect() as conn:
        rows = conn.execute(select(table.c.section, table.c.value)).fetchall()
    return {row.section: dict(row.value or {}) for row in rows}


class StaleSection(Exception):
    """The section changed since the version the caller saw (or was created meanwhile)."""


@dataclass(frozen=True)
class StoredSection:
    value: dict[str, Any]
    version: int  # 0: nothing stored yet
    updated_at: datetime | None = None
    updated_by: str = ""


def read_section(engine: Engine, section: str) -> StoredSection:
    """One section's stored value and version (version 0 and no value when the store holds none)."""
    with engine.connect() as conn:
        row = conn.execute(select(table).where(table.c.section == section)).first()
    if row is None:
        return StoredSection({}, 0)
    return StoredSection(dict(row.value or {}), row.version, row.updated_at, row.updated_by)


def save_section(engine: Engine, section: str, value: dict[str, Any], version: int, now: datetime, by: str) -> int:
    """Store `value` if the section is still at `version` (0: not stored yet); returns the new version.

    StaleSection when someone saved in between: the UPDATE's version check (or the primary key, for
    two first saves) makes exactly one of two concurrent saves win.
    """
    values = {"value": value, "updated_at": now, "updated_by": by[:200]}
    try:
        with engine.begin() as conn:
            if version == 0:
                conn.execute(insert(table).values(section=section, version=1, **values))
                return 1
            done = conn.execute(update(table).where(table.c.section == section, table.c.version == version)
                                .values(version=version + 1, **values))
            if done.rowcount != 1:
                raise StaleSection(section)
            return version + 1
    except IntegrityError:
        raise StaleSection(section) from None


# --- uploaded branding files (logos), kept by content: an email sent with an older logo still shows it ---

@dataclass(frozen=True)
class BrandingFile:
    name: str
    content_type: str
    data: bytes
    sha256: str
    updated_at: datetime


def save_branding_file(engine: Engine, name: str, content_type: str, data: bytes, sha256: str, now: datetime) -> None:
    """Keep a file under `name` (named after its content, so saving the same file twice changes nothing)."""
    with engine.begin() as conn:
        if conn.execute(select(files.c.name).where(files.c.name == name)).first() is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(files).values(name=name, content_type=content_type, data=data,
                                                      sha256=sha256, updated_at=now))
            except IntegrityError:
                pass  # the same content saved at the same moment by another request


def branding_file(engine: Engine, name: str) -> BrandingFile | None:
    with engine.connect() as conn:
        row = conn.execute(select(files).where(files.c.name == name)).first()
    return None if row is None else BrandingFile(row.name, row.content_type, bytes(row.data), row.sha256, row.updated_at)
