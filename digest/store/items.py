"""Items in the store: upsert by key, and the reads compose needs."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Row, func, select

from ..models import EventInfo, Item, ItemKind, MediaInfo, earliest_published
from .schema import items as items_table


@dataclass(frozen=True)
class SaveCounts:
    new: int = 0
    updated: int = 0
    unchanged: int = 0


def save_items(engine: Engine, items: Iterable[Item], now: datetime | None = None,
               feed_order: Sequence[str] = ()) -> SaveCounts:
    """Insert new items and update changed ones in place (same key = same item); one transaction.

    Two feeds may carry one item (the same guid). `feed_order` (the configured feed names, in
    config order) decides which feed owns it, whichever fetch finishes last: an item stored from
    another feed is left as it is unless this item's feed comes earlier in `feed_order`, or the
    other feed is no longer listed. Without `feed_order` the latest save wins.

    A media mention keeps its earliest publication time: a later alert for an article already
    stored is the same mention, not a newer one (it would otherwise move into a later window).
    """
    now = now or datetime.now(UTC)
    batch = _dedupe(items)
    if not batch:
        return SaveCounts()
    rank = {name: position for position, name in enumerate(feed_order)}
    new = updated = unchanged = 0
    with engine.begin() as conn:
        existing = _existing_rows(conn, list(batch))
        inserts, seen_again = [], []
        for key, item in batch.items():
            digest = content_hash(item)
            old = existing.get(key)
            if old is not None and item.kind is ItemKind.MEDIA and old.published is not None:
                item = earliest_published(item, replace(item, published=old.published))
            if old is None:
                inserts.append(_row(item, digest, first_seen=item.first_seen or now, last_seen=now,
                                    content_changed_at=_stated_change(item, now)))
                new += 1
            elif old.feed != item.feed and _owned_elsewhere(old.feed, item.feed, rank):
                seen_again.append(key)
                unchanged += 1
            elif old.content_hash != digest or old.feed != item.feed:
                # Only a change a reader sees restarts the stabilisation clock, not a change of owner.
                changed = now if old.content_hash != digest else old.content_changed_at
                row = _row(item, digest, first_seen=old.first_seen, last_seen=now, content_changed_at=changed)
                conn.execute(items_table.update().where(items_table.c.key == key).values(**row))
                updated += 1
            else:
                seen_again.append(key)
                unchanged += 1
        # Unchanged items only get last_seen: one statement per 500 keys, not one per item.
        for start in range(0, len(seen_again), 500):
            chunk = seen_again[start : start + 500]
            conn.execute(items_table.update().where(items_table.c.key.in_(chunk)).values(last_seen=now))
        for start in range(0, len(inserts), 500):
            conn.execute(items_table.insert(), inserts[start : start + 500])
    return SaveCounts(new=new, updated=updated, unchanged=unchanged)


def _existing_rows(conn: Connection, keys: list[str]) -> dict[str, Row]:
    """key -> (key, feed, content_hash, first_seen, published, content_changed_at) of the stored items among `keys`."""
    existing = {}
    columns = (items_table.c.key, items_table.c.feed, items_table.c.content_hash, items_table.c.first_seen,
               items_table.c.published, items_table.c.content_changed_at)
    for start in range(0, len(keys), 500):
        rows = conn.execute(select(*columns).where(items_table.c.key.in_(keys[start : start + 500])))
        existing.update({r.key: r for r in rows})
    return existing


def _stated_change(item: Item, now: datetime) -> datetime:
    """When a newly stored item last changed: as its feed dates it (updated, else published), never later
    than now; undated, now. A post fixed minutes ago is still settling; a backlog fetched for the first
    time is not, or a fetch followed at once by a build would hold back everything it found."""
    stated = item.updated or item.published
    return min(now, stated) if stated is not None else now


def _owned_elsewhere(stored_feed: str, feed: str, rank: dict[str, int]) -> bool:
    """Whether the item stays with `stored_feed`: a listed feed earlier than `feed`, or `feed` is unlisted."""
    if stored_feed not in rank:
        return False
    return feed not in rank or rank[stored_feed] < rank[feed]


def _dedupe(items: Iterable[Item]) -> dict[str, Item]:
    # The same key twice in one batch is one item; the later occurrence wins.
    return {item.key: item for item in items}


def content_hash(item: Item) -> str:
    """Stable hash of everything a reader sees, so re-fetching an unchanged item writes nothing.

    The feed is not part of it: which feed owns an item is settled by save_items.
    """
    payload = _row(item, "", first_seen=None, last_seen=None)
    # The feed's raw text is for the record: readers see the cleaned fields.
    for volatile in ("first_seen", "last_seen", "content_hash", "sort_at", "feed", "content_changed_at", "raw"):
        payload.pop(volatile)
    if payload["image"] is None:
        payload.pop("image")  # so an item without an image keeps the hash it had before images were kept
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _row(item: Item, digest: str, first_seen: datetime | None, last_seen: datetime | None,
         content_changed_at: datetime | None = None) -> dict:
    event = item.event
    return {
        "key": item.key,
        "feed": item.feed,
        "kind": item.kind.value,
        "title": item.title,
        "url": item.url,
        "published": item.published,
        "updated": item.updated,
        "sort_at": item.published or item.updated or first_seen,
        "first_seen": first_seen,
        "last_seen": last_seen,
        "authors": list(item.authors),
        "categories": list(item.categories),
        "series": list(item.series),
        "language": item.language,
        "summary_html": item.summary_html,
        "content_html": item.content_html,
        "event": _event_json(event) if event else None,
        "event_start": event.start if event else None,
        "media": {"outlet": item.media.outlet, "source_url": item.media.source_url} if item.media else None,
        "content_hash": digest,
        "content_changed_at": content_changed_at,
        "raw": [[name, value] for name, value in item.raw] or None,
        "image": item.image or None,
    }


def _event_json(event: EventInfo) -> dict:
    return {
        "start": event.start.isoformat() if event.start else None,
        "end": event.end.isoformat() if event.end else None,
        "location": event.location,
        "organizer": event.organizer,
        "type": event.type,
        "online": event.online,
        "hybrid": event.hybrid,
    }


def item_from_row(row: Row) -> Item:
    """Rebuild an Item from a row of the items table."""
    event = None
    if row.event:
        e = row.event
        event = EventInfo(
            start=_parse_dt(e.get("start")),
            end=_parse_dt(e.get("end")),
            location=e.get("location", ""),
            organizer=e.get("organizer", ""),
            type=e.get("type", ""),
            online=bool(e.get("online")),
            hybrid=bool(e.get("hybrid")),
        )
    media = MediaInfo(**row.media) if row.media else None
    return Item(
        key=row.key,
        feed=row.feed,
        kind=ItemKind(row.kind),
        title=row.title,
        url=row.url,
        published=row.published,
        updated=row.updated,
        authors=tuple(row.authors),
        categories=tuple(row.categories),
        series=tuple(row.series),
        language=row.language,
        summary_html=row.summary_html,
        content_html=row.content_html,
        event=event,
        media=media,
        first_seen=row.first_seen,
        # Read by name when present: migration 0006 rebuilds items from rows that predate these columns.
        raw=_raw_pairs(row._mapping.get("raw")),
        image=row._mapping.get("image") or "",
    )


def _raw_pairs(value: object) -> tuple[tuple[str, str], ...]:
    """The stored raw text as (field, value) pairs; anything not shaped so is ignored."""
    if not isinstance(value, list):
        return ()
    return tuple((pair[0], pair[1]) for pair in value
                 if isinstance(pair, list) and len(pair) == 2 and all(isinstance(p, str) for p in pair))


def _parse_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def items_between(engine: Engine, start: datetime, end: datetime, unoffered: bool = False) -> list[Item]:
    """Items whose effective publication instant is in [start, end) (`unoffered`: and no sent issue offered them)."""
    query = select(items_table).where(items_table.c.sort_at >= start, items_table.c.sort_at < end)
    if unoffered:
        query = query.where(items_table.c.offered_in.is_(None))
    with engine.connect() as conn:
        return [item_from_row(r) for r in conn.execute(query.order_by(items_table.c.sort_at.desc()))]


def events_starting_between(engine: Engine, start: datetime, end: datetime) -> list[Item]:
    """Events starting in [start, end), whenever they were announced, ordered by start."""
    query = select(items_table).where(
        items_table.c.kind == ItemKind.EVENT.value,
        items_table.c.event_start >= start,
        items_table.c.event_start < end,
    )
    with engine.connect() as conn:
        return [item_from_row(r) for r in conn.execute(query.order_by(items_table.c.event_start))]


def iter_items(engine: Engine, batch: int = 1000) -> Iterator[Item]:
    """Every stored item, streamed (for related-content candidates and exports)."""
    with engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=batch).execute(
            select(items_table).order_by(items_table.c.id)
        )
        for row in result:
            yield item_from_row(row)


def get_item(engine: Engine, key: str) -> Item | None:
    with engine.connect() as conn:
        row = conn.execute(select(items_table).where(items_table.c.key == key)).first()
    return item_from_row(row) if row else None


def count_items(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(items_table)).scalar_one()


def latest_items(engine: Engine, limit: int, kinds: Iterable[ItemKind] | None = None,
                 before: datetime | None = None) -> list[Item]:
    """The `limit` most recently published items (optionally of these kinds, published before), newest first."""
    query = select(items_table).order_by(items_table.c.sort_at.desc(), items_table.c.id.desc()).limit(limit)
    if before is not None:
        query = query.where(items_table.c.sort_at < before)
    if kinds is not None:
        query = query.where(items_table.c.kind.in_([ItemKind(k).value for k in kinds]))
    with engine.connect() as conn:
        return [item_from_row(r) for r in conn.execute(query)]


def items_in_series(engine: Engine, series_id: str, limit: int, before: datetime | None = None) -> list[Item]:
    """The `limit` most recently published items of one series (any feed; published before), newest first."""
    from sqlalchemy import Text, cast

    # The series column is a JSON list of ids ([A-Za-z0-9_-]); match the quoted id in its text.
    pattern = '%"' + series_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + '"%'
    query = (select(items_table).where(cast(items_table.c.series, Text).like(pattern, escape="\\"))
             .order_by(items_table.c.sort_at.desc(), items_table.c.id.desc()).limit(limit))
    if before is not None:
        query = query.where(items_table.c.sort_at < before)
    with engine.connect() as conn:
        return [item_from_row(r) for r in conn.execute(query)]


# --- offering each item to exactly one issue (digest.offers) --------------------------------------

def late_candidates(engine: Engine, start: datetime, end: datetime) -> list[Item]:
    """Items published in [start, end) that no sent issue offered, events aside (they go by their start)."""
    query = (select(items_table).where(items_table.c.sort_at >= start, items_table.c.sort_at < end,
                                       items_table.c.offered_in.is_(None), items_table.c.kind != ItemKind.EVENT.value)
             .order_by(items_table.c.sort_at, items_table.c.id))
    with engine.connect() as conn:
        return [item_from_row(r) for r in conn.execute(query)]


def too_old_items(engine: Engine, before: datetime, limit: int) -> tuple[int, list[Item]]:
    """How many items published before `before` no sent issue offered (events aside), and the newest `limit`."""
    where = (items_table.c.sort_at < before, items_table.c.offered_in.is_(None),
             items_table.c.kind != ItemKind.EVENT.value)
    with engine.connect() as conn:
        count = conn.execute(select(func.count()).select_from(items_table).where(*where)).scalar_one()
        rows = conn.execute(select(items_table).where(*where)
                            .order_by(items_table.c.sort_at.desc(), items_table.c.id.desc()).limit(limit))
        return count, [item_from_row(r) for r in rows]


def changed_since(engine: Engine, since: datetime, published_from: datetime) -> dict[str, datetime]:
    """key -> content_changed_at of items whose content changed after `since`, published from `published_from`."""
    query = select(items_table.c.key, items_table.c.content_changed_at).where(
        items_table.c.content_changed_at > since, items_table.c.sort_at >= published_from)
    with engine.connect() as conn:
        return {r.key: r.content_changed_at for r in conn.execute(query)}


def newest_item_id(engine: Engine) -> int:
    """The id of the newest stored item (0 for none): items with a larger id were stored later."""
    with engine.connect() as conn:
        return conn.execute(select(func.coalesce(func.max(items_table.c.id), 0))).scalar_one()


def mark_offered(conn: Connection, number: int, keys: Sequence[str], passed_before: datetime | None,
                 seen_up_to: int) -> None:
    """Record that issue `number` offered `keys`, and passed over the unoffered items (events aside) published
    before `passed_before` that were stored by its build (id up to `seen_up_to`). Items already offered keep
    their issue. Runs in the caller's transaction (the one that starts the issue sending)."""
    unoffered = items_table.c.offered_in.is_(None)
    for start in range(0, len(keys), 500):
        conn.execute(items_table.update().where(unoffered, items_table.c.key.in_(list(keys[start:start + 500])))
                     .values(offered_in=number))
    if passed_before is not None:
        conn.execute(items_table.update().where(
            unoffered, items_table.c.kind != ItemKind.EVENT.value, items_table.c.sort_at < passed_before,
            items_table.c.id <= seen_up_to).values(offered_in=number))


def mark_window_offered(conn: Connection, number: int, end: datetime) -> None:
    """For an issue built before digest kept build reports: everything unoffered published before its end."""
    conn.execute(items_table.update().where(
        items_table.c.offered_in.is_(None), items_table.c.kind != ItemKind.EVENT.value,
        items_table.c.sort_at < end).values(offered_in=number))
