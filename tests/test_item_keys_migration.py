"""Migration 0006: rows stored under the old fallback key get the parser's new key; nothing comes back as new."""

import hashlib
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command

from digest.manifest import issue_version
from digest.models import Feed, ItemKind
from digest.parse import parse_feed
from digest.store import open_store
from digest.store.items import content_hash, save_items
from digest.store.migrate import alembic_config
from digest.store.schema import UTCDateTime

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
NOTICES = Feed("Notices", "https://feeds.example.net/notices", ItemKind.NEWS)
BLOG = Feed("Blog", "https://feeds.example.net/blog", ItemKind.ARTICLE)
STORED = datetime(2026, 11, 18, 9, 0, tzinfo=UTC)
OLD_FALLBACK = "sha256:" + hashlib.sha256(b"\n").hexdigest()  # sha256(title + date) of an entry with neither
MARKUP_URL = 'https://www.example.org/blog/<a href="https://www.example.org/blog/no-link/">Read</a>'

# The tables as they were at 0004, with only what these tests write.
ITEMS = sa.table("items", *(sa.column(name) for name in (
    "key", "feed", "kind", "title", "url", "language", "summary_html", "content_html", "content_hash")),
    *(sa.column(name, sa.JSON) for name in ("authors", "categories", "series", "event", "media")),
    *(sa.column(name, UTCDateTime) for name in ("published", "updated", "event_start", "sort_at", "first_seen",
                                                  "last_seen")))
ISSUES = sa.table("issues", *(sa.column(name) for name in (
    "number", "status", "intro", "subject", "version", "approved_version")),
    sa.column("window_start", UTCDateTime), sa.column("window_end", UTCDateTime),
    sa.column("created_at", UTCDateTime), sa.column("updated_at", UTCDateTime), sa.column("sent_at", UTCDateTime),
    sa.column("approved_at", UTCDateTime), sa.column("dropped", sa.JSON), sa.column("pinned", sa.JSON),
    sa.column("manifest", sa.JSON))


def store_at_0004(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")
    return engine


def old_row(item, key: str, url: str) -> dict:
    """The row digest stored for `item` before 0006, under its old key."""
    item = replace(item, key=key, url=url)
    return {"key": key, "feed": item.feed, "kind": item.kind.value, "title": item.title, "url": url,
            "published": item.published, "updated": item.updated, "authors": list(item.authors),
            "categories": list(item.categories), "series": list(item.series), "language": item.language,
            "summary_html": item.summary_html, "content_html": item.content_html, "event": None,
            "event_start": None, "media": None, "content_hash": content_hash(item),
            "sort_at": item.published or STORED, "first_seen": STORED, "last_seen": STORED}


def manifest_with(keys: list[str], status: str, number: int) -> dict:
    entries = [{"key": k, "title": "t", "url": "", "related": [{"key": keys[0], "title": "r"}]} for k in keys]
    manifest = {"issue": {"number": number, "status": status, "window": {"start": "2026-11-16T00:00:00+00:00",
                                                                         "end": "2026-11-23T00:00:00+00:00"},
                          "subject": "s", "dropped": [], "pinned": keys[:1]},
                "sections": [{"id": "more", "items": entries}]}
    manifest["issue"]["version"] = issue_version(manifest)
    return manifest


def test_old_fallback_keys_are_rekeyed_and_nothing_comes_back_as_new(store_url):
    notices = parse_feed((FEEDS / "description-only.xml").read_bytes(), NOTICES, []).items
    markup = next(i for i in parse_feed((FEEDS / "rss-titles.xml").read_bytes(), BLOG, []).items
                  if i.title.startswith("An item whose link is markup"))
    engine = store_at_0004(store_url)
    rows = [old_row(notices[0], OLD_FALLBACK, ""), old_row(markup, MARKUP_URL, MARKUP_URL)]
    sent = manifest_with([OLD_FALLBACK, MARKUP_URL], "sent", 1)
    approved = manifest_with([OLD_FALLBACK], "approved", 2)
    with engine.begin() as conn:
        conn.execute(ITEMS.insert(), rows)
        for number, manifest, status, end in ((1, sent, "sent", datetime(2026, 11, 23, tzinfo=UTC)),
                                              (2, approved, "approved", datetime(2026, 11, 30, tzinfo=UTC))):
            conn.execute(ISSUES.insert().values(
                number=number, status=status, intro="", subject="s", version=manifest["issue"]["version"],
                approved_version=manifest["issue"]["version"], window_start=datetime(2026, 11, 16, tzinfo=UTC),
                window_end=end, created_at=STORED, updated_at=STORED, sent_at=STORED if status == "sent" else None,
                approved_at=STORED, dropped=[], pinned=[OLD_FALLBACK], manifest=manifest))
    engine.dispose()

    engine = open_store(store_url)  # migrates to head
    try:
        with engine.connect() as conn:
            stored = {r.key: r for r in conn.execute(sa.text("SELECT key, url, title, first_seen FROM items"))}
            issues = {r.number: r for r in conn.execute(sa.select(ISSUES.c.number, ISSUES.c.manifest, ISSUES.c.pinned,
                                                                  ISSUES.c.version, ISSUES.c.approved_version))}
        assert set(stored) == {notices[0].key, markup.key}  # exactly the keys the parser gives now
        assert stored[markup.key].url == ""
        for number in (1, 2):
            manifest = issues[number].manifest
            keys = [e["key"] for s in manifest["sections"] for e in s["items"]]
            assert OLD_FALLBACK not in keys and MARKUP_URL not in keys and notices[0].key in keys
            assert manifest["sections"][0]["items"][0]["related"][0]["key"] == notices[0].key
            assert manifest["issue"]["pinned"] == [notices[0].key] and issues[number].pinned == [notices[0].key]
            assert issues[number].version == issue_version(manifest) == manifest["issue"]["version"]
            assert issues[number].approved_version == issues[number].version  # still approved as it was

        # The next fetch finds the migrated rows: unchanged, not new. Only the two entries the old key had
        # merged away are stored, for the first time.
        counts = save_items(engine, notices, now=datetime(2026, 11, 25, tzinfo=UTC))
        assert (counts.new, counts.updated, counts.unchanged) == (2, 0, 1)
        assert save_items(engine, [markup], now=datetime(2026, 11, 25, tzinfo=UTC)).unchanged == 1
        with engine.connect() as conn:
            first_seen = conn.execute(sa.select(ITEMS.c.first_seen).where(ITEMS.c.key == notices[0].key)).scalar_one()
            columns = {c["name"] for c in sa.inspect(conn).get_columns("items")}
            if "offered_in" in columns:  # issue 15 item 1: the sent issue still counts as having offered it
                offered = conn.execute(sa.text("SELECT offered_in FROM items WHERE key = :k"),
                                       {"k": notices[0].key}).scalar_one()
                assert offered == 1
        assert first_seen == STORED  # the row is the one stored before, not a new one
    finally:
        engine.dispose()


def test_rows_with_real_keys_are_left_alone(store_url):
    wordpress = parse_feed((FEEDS / "wordpress-rss.xml").read_bytes(), NOTICES, []).items
    long_guid = replace(wordpress[0], key="sha256:" + "a" * 64)  # a hashed long guid, with its link
    engine = store_at_0004(store_url)
    with engine.begin() as conn:
        conn.execute(ITEMS.insert(), [old_row(i, i.key, i.url) for i in wordpress[1:]] +
                     [old_row(long_guid, long_guid.key, long_guid.url)])
    engine.dispose()
    engine = open_store(store_url)
    try:
        with engine.connect() as conn:
            keys = set(conn.execute(sa.text("SELECT key FROM items")).scalars())
        assert keys == {i.key for i in wordpress[1:]} | {long_guid.key}
    finally:
        engine.dispose()
