"""The dry run of a subscriber list import: what `import_rows` would do with each row, changing nothing.

Decided by the import's own rules (digest.store.subscribers.decide_rows and import_change), so a dry
run and the import that follows never disagree on the same store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, Row

from ..listfile import ListRow, RejectedRow
from ..models import SubscriberStatus
from .subscribers import checked_keys, decide_rows, import_change, valid_batches

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PlannedRow:
    """One row of a dry run: its outcome (added, updated, unchanged, suppressed, rejected) and why, in words."""

    line: int
    outcome: str
    email: str
    reason: str


def plan_import(engine: Engine, rows: Iterable[ListRow | RejectedRow], keys: Sequence[bytes]) -> Iterator[PlannedRow]:
    """What `import_rows` would do with each row, changing nothing (a dry run); streamed in batches.

    Decided by the same rules as the import itself (`decide_rows`), so the two never disagree on the
    same store. Rows rejected while a batch was read come before that batch: sort by line for file order.
    """
    keys = checked_keys(engine, keys)
    rejected: list[RejectedRow] = []
    for batch in valid_batches(rows, None, rejected):
        yield from (PlannedRow(r.line, "rejected", "", r.reason) for r in rejected)
        rejected.clear()
        with engine.connect() as conn:
            decisions = decide_rows(conn, batch, keys)
        for row, kind, old in decisions:
            change = import_change(old, row, _EPOCH) if kind == "update" else None
            yield _planned(row, kind, old, change)
    yield from (PlannedRow(r.line, "rejected", "", r.reason) for r in rejected)


def _planned(row: ListRow, kind: str, old: Row | None, change: dict | None) -> PlannedRow:
    new = row.subscriber
    status = new.status.value
    if kind == "insert":
        pending = new.status == SubscriberStatus.PENDING
        return PlannedRow(row.line, "added", new.email, "new address, waiting for its owner's confirmation" if pending
                          else "new address")
    if kind == "update" and change is None:
        return PlannedRow(row.line, "unchanged", new.email, "already stored with these details")
    if kind == "update":
        return PlannedRow(row.line, "updated", new.email, _what_changes(old, change))
    reasons = {
        "insert_opted_out": f"new address the file marks {status}: stored as {status}, never mailed",
        "erased": "this address was erased: it is never added again",
        "opted_out": f"{old.status if old else ''} here: only their own sign-up brings them back",
        "erased_pending": "erased earlier: only its owner's own confirmation brings it back",
        "opt_out": f"the file marks it {status}: that opt-out is applied here",
    }
    return PlannedRow(row.line, "suppressed", new.email, reasons[kind])


def _what_changes(old: Row, change: dict) -> str:
    parts = []
    if change["confirming"]:
        parts.append("confirms a sign-up that waited for confirmation")
    for label, before, after in (("name", old.name, change["name"]), ("language", old.language, change["language"]),
                                 ("series", list(old.series or ()), change["series"]),
                                 ("sections", (old.want_events, old.want_media),
                                  (change["want_events"], change["want_media"]))):
        if before != after:
            parts.append(f"{label} changes")
    return "; ".join(parts) or "updated"
