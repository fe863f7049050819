"""Alembic migrations, run in-process: every open brings the schema to head, so upgrades never lose data.

Most opens find the schema already at head. Checking that takes one cheap query, so Alembic
(≈0.15 s to import) is only imported when there is something to migrate: a fresh database, an
out-of-date one, or one whose version Alembic must judge (several heads, an unknown revision).
HEAD_REVISION must name the newest migration; tests/test_store.py checks it against Alembic.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Engine, inspect, text

from .schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0011"  # the newest file in migrations/versions; update it with every new migration
VERSION_TABLE = "alembic_version"


class MigrationError(Exception):
    """The store's schema cannot be brought to this digest's version; the message says why and what to do."""


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    """Alembic filter: tables digest does not own (APScheduler's job store) are never migrated or compared."""
    return not (type_ == "table" and reflected and name not in metadata.tables)


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def upgrade_to_head(engine: Engine) -> None:
    """Apply every pending migration inside one transaction; nothing (not even an import) when at head.

    Raises MigrationError for a store this digest cannot migrate, e.g. one a newer digest wrote.
    """
    with engine.connect() as connection:
        stored = stored_revisions(connection)
    if stored == [HEAD_REVISION]:
        return
    from alembic import command
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = alembic_config()
    known = {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}
    unknown = [revision for revision in stored if revision not in known]
    if unknown:
        raise MigrationError(f"the store is at revision {', '.join(unknown)}, newer than this digest: upgrade digest")
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except CommandError as exc:
        raise MigrationError(f"cannot migrate the store to this digest's schema: {exc}") from None


def stored_revisions(connection: Connection) -> list[str]:
    """The revisions recorded in the database's alembic_version table ([] for a fresh database)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())
