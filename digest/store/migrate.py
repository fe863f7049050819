"""Alembic migrations, run in-process: every open brings the schema to head, so upgrades never lose data.

Most opens find the schema already at head. Checking that takes one cheap query, so Alembic
(≈0.15 s to import) is only imported when there is something to migrate: a fresh database, an
out-of-date one, or one whose version Alembic must judge (several heads, an unknown revision).
HEAD_REVISION must name the newest migration; tests/test_store.py checks it against Alembic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine, inspect, text

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0001"  # the newest file in migrations/versions; update it with every new migration
VERSION_TABLE = "alembic_version"


def include_object(obj, name, type_, reflected, compare_to) -> bool:  # noqa: ANN001, ARG001
    """Alembic filter: tables digest does not own (APScheduler's job store) are never migrated or compared."""
    from .schema import metadata

    return not (type_ == "table" and reflected and name not in metadata.tables)


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply every pending migration inside one transaction; nothing (not even an import) when at head."""
    with engine.connect() as connection:
        if stored_revisions(connection) == [HEAD_REVISION]:
            return
    from alembic import command

    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def stored_revisions(connection: Connection) -> list[str]:
    """The revisions recorded in the database's alembic_version table ([] for a fresh database)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
