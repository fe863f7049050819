"""Opening the store: migrations run when needed and only then; relaxed-durability writes for fetches."""

import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from alembic.script import ScriptDirectory
from conftest import FEEDS
from sqlalchemy import create_engine, inspect, text

from digest.models import Feed, FeedStatus, Item, ItemKind
from digest.parse import parse_feed
from digest.store import StoreError, open_store, relaxed_durability
from digest.store.feeds import get_feed_state, record_fetch
from digest.store.items import SaveCounts, content_hash, get_item, save_items
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


def test_a_store_written_by_a_newer_digest_is_a_store_error(store_url):
    engine = open_store(store_url)
    with engine.begin() as conn:  # a store written by a newer digest
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match="^the store is at revision 9999, newer than this digest: upgrade digest"):
        open_store(store_url)
    assert revisions(store_url) == ["9999"]  # left as it was


def test_an_unusable_sqlite_folder_is_a_store_error_naming_store_url():
    with pytest.raises(StoreError, match="store.url") as excinfo:
        open_store("sqlite:////proc/nope/x.db")
    assert "/proc/nope" in str(excinfo.value)


def test_the_cli_exits_2_for_an_unusable_store(tmp_path):
    from click.testing import CliRunner

    from digest.cli import main

    config = tmp_path / "digest.toml"
    config.write_text('[store]\nurl = "sqlite:////proc/nope/x.db"\n[[feeds]]\nname = "A"\nurl = "a.xml"\n',
                      encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "fetch"])
    assert result.exit_code == 2 and "store.url" in result.output and "/proc/nope" in result.output


# --- two feeds, one item ---------------------------------------------------------------------------
SHARED = Item(key="https://www.example.org/?p=1", feed="Publications", kind=ItemKind.BRIEF, title="Shared",
              url="https://www.example.org/shared/", published=datetime(2026, 11, 18, tzinfo=UTC))
ORDER = ("Publications", "News")


@pytest.mark.parametrize("arrival", [ORDER, ORDER[::-1]], ids=["earlier-first", "later-first"])
def test_the_feed_earlier_in_the_config_owns_a_shared_item_whichever_lands_last(engine, arrival):
    copies = {"Publications": SHARED, "News": replace(SHARED, feed="News", kind=ItemKind.NEWS, title="Shared (news)")}
    for name in arrival:
        save_items(engine, [copies[name]], feed_order=ORDER)
    for name in arrival:  # and again on the next run
        save_items(engine, [copies[name]], feed_order=ORDER)
    stored = get_item(engine, SHARED.key)
    assert (stored.feed, stored.kind, stored.title) == ("Publications", ItemKind.BRIEF, "Shared")


def test_a_later_alert_for_a_stored_mention_keeps_the_first_alerts_time(engine):
    """Google Alerts a day later about an article already stored: the same mention, still in its first window."""
    def alerts(name: str) -> list[Item]:
        feed = Feed(name="In the media", url="https://www.google.com/alerts/feeds/1", kind=ItemKind.MEDIA)
        return parse_feed((FEEDS / name).read_bytes(), feed, ()).items

    apa = "https://apa.at/news/eu-soll-gemeinsam-ruestung-einkaufen/"
    save_items(engine, alerts("google-alerts.xml"))
    counts = save_items(engine, alerts("google-alerts-next-day.xml"))
    stored = get_item(engine, apa)
    assert stored.published == datetime(2026, 11, 19, 10, 41, 8, tzinfo=UTC)  # not 21 Nov, the new alert's
    assert stored.title == "Rüstung: Europa Progressiva legt nach" and counts.updated == 1 and counts.new == 1
    assert save_items(engine, alerts("google-alerts-next-day.xml")) == SaveCounts(unchanged=2)  # stable


def test_a_briefs_new_date_is_kept_it_is_not_a_merged_duplicate(engine):
    later = replace(SHARED, published=datetime(2026, 11, 25, tzinfo=UTC))
    save_items(engine, [SHARED])
    save_items(engine, [later])
    assert get_item(engine, SHARED.key).published == datetime(2026, 11, 25, tzinfo=UTC)


def test_a_later_feeds_copy_counts_as_unchanged_and_an_unlisted_owner_gives_way(engine):
    save_items(engine, [SHARED], feed_order=ORDER)
    news = replace(SHARED, feed="News", kind=ItemKind.NEWS)
    assert save_items(engine, [news], feed_order=ORDER) == SaveCounts(unchanged=1)
    assert save_items(engine, [news], feed_order=("News",)) == SaveCounts(updated=1)  # Publications was removed
    assert get_item(engine, SHARED.key).feed == "News"


def test_the_content_hash_leaves_the_feed_out():
    assert content_hash(SHARED) == content_hash(replace(SHARED, feed="News"))
    assert content_hash(SHARED) != content_hash(replace(SHARED, kind=ItemKind.NEWS))


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
