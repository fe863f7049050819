"""Opening the store: migrations run when needed and only then; relaxed-durability writes for fetches."""

import subprocess
import sys

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from digest.models import FeedStatus
from digest.store import open_store, relaxed_durability
from digest.store.feeds import get_feed_state, record_fetch
from digest.store.migrate import HEAD_REVISION, VERSION_TABLE, alembic_config, stored_revisions


def revisions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return stored_revisions(conn)
    finally:
        engine.dispose()


def test_head_revision_constant_is_alembics_head():
    # The cheap "already at head?" check trusts this constant: a new migration must update it.
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD_REVISION]


def test_a_fresh_store_is_migrated_to_head(store_url):
    assert revisions(store_url) == []
    engine = open_store(store_url)
    try:
        assert {"items", "feeds", "deliveries", VERSION_TABLE} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert revisions(store_url) == [HEAD_REVISION]


def test_a_store_at_head_opens_without_importing_alembic(store_url):
    open_store(store_url).dispose()
    code = ("import sys\nfrom digest.store import open_store\n"
            f"open_store({store_url!r}).dispose()\nprint('alembic' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_the_migrations_downgrade_to_nothing_and_upgrade_again(store_url):
    """Every migration has a working downgrade; a store taken back to base is rebuilt on the next open."""
    from alembic import command

    from digest.store.schema import metadata

    engine = open_store(store_url)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "base")
    assert not set(inspect(engine).get_table_names()) & set(metadata.tables)
    engine.dispose()
    engine = open_store(store_url)
    try:
        assert revisions(store_url) == [HEAD_REVISION]
        assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_an_unknown_revision_is_left_to_alembic_which_refuses_it(store_url):
    engine = open_store(store_url)
    with engine.begin() as conn:  # a store written by a newer digest
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(Exception, match="9999"):
        open_store(store_url)


def _durability(engine) -> str:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return {0: "off", 1: "normal", 2: "full", 3: "extra"}[conn.exec_driver_sql("PRAGMA synchronous").scalar()]
        return conn.exec_driver_sql("SHOW synchronous_commit").scalar()


def test_relaxed_writes_skip_the_disk_wait_and_are_seen_by_the_store(engine):
    durable = _durability(engine)
    with relaxed_durability(engine) as relaxed:
        assert _durability(relaxed) in ("normal", "off")
        record_fetch(relaxed, "Relaxed", "https://example.org/feed", FeedStatus.OK, etag='"r1"')
    assert get_feed_state(engine, "Relaxed", "https://example.org/feed").etag == '"r1"'
    assert _durability(engine) == durable  # the store's own connections (the delivery ledger) stay as they were
    assert durable in ("full", "on")


def test_an_in_memory_store_is_relaxed_through_its_own_engine():
    engine = open_store("sqlite://")
    with relaxed_durability(engine) as relaxed:
        assert relaxed is engine
    engine.dispose()


def test_the_migrations_build_exactly_the_schema_the_code_uses(store_url):
    """Alembic finds nothing to change between a migrated store and digest.store.schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from digest.store.migrate import include_object
    from digest.store.schema import metadata

    engine = open_store(store_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include_object, "compare_type": True})
        differences = compare_metadata(context, metadata)
    engine.dispose()
    assert differences == []
