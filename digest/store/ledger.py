"""The delivery ledger: one row per (issue, subscriber) and the issue's sending status.

Row states: queued → sending → sent | failed_temporary (→ sending again) | failed_permanent | skipped
| possibly_delivered (sent twice, each time without the server's confirmation: see mark_possibly_delivered).
A row is committed `sending` (claimed, with claimed_by/claimed_at) before its message goes to the
server and `sent` right after the server accepts it, so a crash leaves at most the messages in flight
to be sent twice, and never loses one. Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so any
number of workers share an issue; on SQLite a claim is one UPDATE statement, atomic under the
database's single writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Integer,
    Row,
    and_,
    bindparam,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ..models import DeliveryStatus, IssueStatus, Subscriber, SubscriberStatus
from .issues import IssueStateError
from .issues import set_status as set_issue_status
from .schema import UTCDateTime, deliveries, issues, subscribers

OPEN_STATUSES = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.FAILED_TEMPORARY)


class LedgerError(Exception):
    """The issue cannot be sent as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Claim:
    """A ledger row this sender now owns, with the subscriber as stored at claim time."""

    subscriber: Subscriber
    attempts: int
    # An earlier try was possibly delivered (sent, confirmation lost): this one is the last.
    possibly_delivered: bool = False


# --- the issue's status --------------------------------------------------------------------------

def start_sending(engine: Engine, number: int, now: datetime, late: bool = False) -> int:
    """Move an approved issue to `sending` and queue a row per confirmed subscriber; returns rows added.

    An issue already `sending` gets rows only for subscribers who have none yet. A `sent` issue gets
    nothing unless `late` (subscribers confirmed since it went out then receive it). Drafts,
    cancelled and unknown issues raise LedgerError. Safe to run from several processes at once.
    """
    status = issue_status(engine, number)
    if status is None:
        raise LedgerError(f"there is no issue {number}; `digest status` lists the issues")
    if status in (IssueStatus.DRAFT, IssueStatus.CANCELLED):
        raise LedgerError(f"issue {number} is {status.value}, not approved: approve it first (`digest approve {number}`)")
    if status == IssueStatus.SENT and not late:
        return 0
    # Rows first, then the status: an issue is never `sending` without its rows (a worker finding
    # an empty ledger would mark it sent).
    with engine.begin() as conn:
        added = _queue_confirmed(conn, number)
    if status == IssueStatus.APPROVED:
        try:
            set_issue_status(engine, number, IssueStatus.SENDING, now)
        except IssueStateError:  # another sender moved it first, or staff took the approval back
            status = issue_status(engine, number)
            if status not in (IssueStatus.SENDING, IssueStatus.SENT):
                raise LedgerError(f"issue {number} became {status.value if status else 'deleted'} while "
                                  "sending started; nothing was sent: approve it again") from None
    return added


def _queue_confirmed(conn: Connection, number: int) -> int:
    # One INSERT … SELECT: subscribers stream inside the database, never through this process.
    has_row = select(deliveries.c.subscriber_id).where(
        deliveries.c.issue_number == number, deliveries.c.subscriber_id == subscribers.c.id
    )
    rows = select(
        literal(number), subscribers.c.id, literal(DeliveryStatus.QUEUED.value), literal(0), literal("")
    ).where(subscribers.c.status == SubscriberStatus.CONFIRMED, ~has_row.exists())
    columns = ["issue_number", "subscriber_id", "status", "attempts", "last_error"]
    # Two senders filling at once: the loser's duplicate rows are dropped, not an error.
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(deliveries).from_select(columns, rows).on_conflict_do_nothing()
    # rowcount is -1 for INSERT … SELECT through psycopg: count the returned ids instead.
    return sum(1 for _ in conn.execute(stmt.returning(deliveries.c.subscriber_id)))


def issue_status(engine: Engine, number: int) -> IssueStatus | None:
    with engine.connect() as conn:
        status = conn.execute(select(issues.c.status).where(issues.c.number == number)).scalar()
    return IssueStatus(status) if status else None


def finish_if_done(engine: Engine, number: int, now: datetime) -> bool:
    """Mark a `sending` issue `sent` once no row is queued, sending or waiting to retry; True if it is sent."""
    if has_open_rows(engine, number):
        return False
    if issue_status(engine, number) == IssueStatus.SENDING:
        try:
            set_issue_status(engine, number, IssueStatus.SENT, now)
        except IssueStateError:  # another sender finished it first
            pass
    return issue_status(engine, number) == IssueStatus.SENT


def issues_being_sent(engine: Engine) -> list[int]:
    """Numbers of issues in `sending`, and sent issues with a late reader's row open, oldest first
    (what workers look for)."""
    return _numbers(engine, or_(issues.c.status == IssueStatus.SENDING, _sent_with_open_rows()))


def issues_with_late_readers(engine: Engine) -> list[int]:
    """Numbers of sent issues with rows still open: readers queued after the issue went out."""
    return _numbers(engine, _sent_with_open_rows())


def _sent_with_open_rows() -> ColumnElement[bool]:
    open_row = select(deliveries.c.issue_number).where(
        deliveries.c.issue_number == issues.c.number, deliveries.c.status.in_(OPEN_STATUSES))
    return and_(issues.c.status == IssueStatus.SENT, open_row.exists())


def _numbers(engine: Engine, where: ColumnElement[bool]) -> list[int]:
    with engine.connect() as conn:
        return list(conn.execute(select(issues.c.number).where(where).order_by(issues.c.number)).scalars())


def queue_late_reader(engine: Engine, subscriber_id: int, sent_since: datetime) -> int | None:
    """Queue the newest issue sent since `sent_since` for one subscriber; its number, or None.

    None when no issue went out since then, or the subscriber already has a row for it (a second
    confirmation never queues it twice: the ledger's (issue, subscriber) key keeps it to one row).
    """
    newest = (select(issues.c.number).where(issues.c.status == IssueStatus.SENT, issues.c.sent_at >= sent_since)
              .order_by(issues.c.sent_at.desc(), issues.c.number.desc()).limit(1))
    with engine.begin() as conn:
        number = conn.execute(newest).scalar()
        if number is None:
            return None
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = dialect.insert(deliveries).values(
            issue_number=number, subscriber_id=subscriber_id, status=DeliveryStatus.QUEUED.value, attempts=0,
            last_error="").on_conflict_do_nothing()
        added = conn.execute(stmt.returning(deliveries.c.subscriber_id)).first()
    return number if added is not None else None


# --- claiming --------------------------------------------------------------------------------------

def claim_batch(engine: Engine, number: int, holder: str, limit: int, now: datetime,
                claim_timeout: float) -> list[Claim]:
    """Claim up to `limit` rows that are due: queued, retries whose time has come, and `sending`
    rows whose claim is older than `claim_timeout` seconds (their sender died)."""
    return claimed_subscribers(engine, claim_rows(engine, number, holder, limit, now, claim_timeout))


def claim_rows(engine: Engine, number: int, holder: str, limit: int, now: datetime,
               claim_timeout: float) -> list[tuple[int, int, bool]]:
    """The writing half of `claim_batch`: commit the rows `sending`; returns (subscriber id, attempts,
    possibly delivered before) per row."""
    stale = now - timedelta(seconds=claim_timeout)
    due_retry = or_(
        and_(deliveries.c.status == DeliveryStatus.FAILED_TEMPORARY, deliveries.c.next_attempt_at <= now),
        and_(deliveries.c.status == DeliveryStatus.SENDING, deliveries.c.claimed_at < stale),
    )
    claimed = _claim(engine, number, holder, limit, now, deliveries.c.status == DeliveryStatus.QUEUED)
    if len(claimed) < limit:
        claimed += _claim(engine, number, holder, limit - len(claimed), now, due_retry)
    return claimed


def _claim(engine: Engine, number: int, holder: str, limit: int, now: datetime,
           due: ColumnElement[bool]) -> list[tuple[int, int, bool]]:
    candidates = select(deliveries.c.subscriber_id).where(deliveries.c.issue_number == number, due).limit(limit)
    if engine.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    # A CTE, not a plain IN (subquery): PostgreSQL may run a LIMITed subquery once per row, claiming
    # far more than `limit`; a locking CTE is evaluated exactly once.
    picked = candidates.cte("picked")
    stmt = (
        update(deliveries)
        .where(deliveries.c.issue_number == number, deliveries.c.subscriber_id.in_(select(picked.c.subscriber_id)))
        .values(status=DeliveryStatus.SENDING, claimed_by=holder, claimed_at=now)
        .returning(deliveries.c.subscriber_id, deliveries.c.attempts, deliveries.c.possibly_delivered_at)
    )
    with engine.begin() as conn:
        return [(row.subscriber_id, row.attempts, row.possibly_delivered_at is not None) for row in conn.execute(stmt)]


def claimed_subscribers(engine: Engine, claimed: list[tuple[int, int, bool]]) -> list[Claim]:
    """The reading half of `claim_batch`: the claimed rows' subscribers as stored now, by id."""
    if not claimed:
        return []
    rows = {sid: (attempts, possibly) for sid, attempts, possibly in claimed}
    with engine.connect() as conn:
        # Only the Subscriber's columns: each timestamp left out is a string parsed per row on SQLite.
        query = select(*_SUBSCRIBER_COLUMNS).where(subscribers.c.id.in_(list(rows))).order_by(subscribers.c.id)
        return [Claim(subscriber_from_row(row), *rows[row.id]) for row in conn.execute(query)]


_SUBSCRIBER_COLUMNS = [subscribers.c[name] for name in (
    "id", "email", "name", "language", "series", "want_events", "want_media", "status",
    "consent_at", "consent_method", "consent_ip",
)]


def subscriber_from_row(row: Row[Any]) -> Subscriber:
    """A Subscriber from a row of the subscribers table (at least its `_SUBSCRIBER_COLUMNS`)."""
    return Subscriber(
        id=row.id, email=row.email, name=row.name, language=row.language, series=tuple(row.series or ()),
        want_events=bool(row.want_events), want_media=bool(row.want_media), status=SubscriberStatus(row.status),
        consent_at=row.consent_at, consent_method=row.consent_method, consent_ip=row.consent_ip,
    )


def renew_claims(engine: Engine, number: int, holder: str, now: datetime) -> None:
    """Refresh claimed_at on rows `holder` still holds, so long waits never look like a dead sender."""
    with engine.begin() as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.issue_number == number, deliveries.c.status == DeliveryStatus.SENDING,
                   deliveries.c.claimed_by == holder)
            .values(claimed_at=now)
        )


def requeue_orphans(engine: Engine, number: int, is_orphan: Callable[[str], bool]) -> int:
    """Put back to `queued` the `sending` rows whose holder `is_orphan` says is gone; returns rows."""
    with engine.begin() as conn:
        holders = conn.execute(
            select(deliveries.c.claimed_by).distinct()
            .where(deliveries.c.issue_number == number, deliveries.c.status == DeliveryStatus.SENDING)
        ).scalars()
        gone = [h for h in holders if h is None or is_orphan(h)]
        if not gone:
            return 0
        held_by_gone = deliveries.c.claimed_by.in_([h for h in gone if h is not None])
        if None in gone:
            held_by_gone = or_(held_by_gone, deliveries.c.claimed_by.is_(None))
        result = conn.execute(
            update(deliveries)
            .where(deliveries.c.issue_number == number, deliveries.c.status == DeliveryStatus.SENDING, held_by_gone)
            .values(status=DeliveryStatus.QUEUED, claimed_by=None, claimed_at=None)
        )
        return result.rowcount


# --- outcomes ------------------------------------------------------------------------------------

def mark_sent(engine: Engine | Connection, number: int, subscriber_id: int, holder: str, message_id: str, now: datetime) -> bool:
    """Record that the server accepted the message; False if the claim had been taken over meanwhile."""
    params = {"n": number, "sid": subscriber_id, "holder": holder, "at": now, "mid": message_id[:300]}
    with _transaction(engine) as conn:
        return conn.execute(_MARK_SENT, params).rowcount == 1


class SentMarks:
    """`mark_sent` for the send loop's threads: on the thread's own connection, the statement compiled once.

    The UPDATE is the one statement per message sent; through SQLAlchemy's execution machinery, in
    a transaction of its own, it costs about three times what the database needs for it. Here it
    runs on a DB-API cursor of an AUTOCOMMIT connection: the single statement commits its row at
    once, as `mark_sent` does, in one call (one round trip on PostgreSQL instead of two).
    Use one per thread and `close()` it; DB-API errors come through unwrapped.

    It sets the thread's Connection to AUTOCOMMIT and shares it instead of taking a second one
    from the pool: the thread's other writes (`mark_failed`, `mark_skipped`) are single statements
    too, so they commit just the same.
    """

    def __init__(self, connection: Connection) -> None:
        dialect = connection.dialect
        compiled = _MARK_SENT.compile(dialect=dialect)
        self._sql = compiled.string
        self._order = compiled.positiontup  # None for a named paramstyle (psycopg)
        # The statement's own constants ('sent', 'sending', …), bound the way SQLAlchemy binds them.
        self._constants = compiled.construct_params(dict.fromkeys(_MARK_SENT_PARAMS))
        self._bind_time = deliveries.c.sent_at.type.dialect_impl(dialect).bind_processor(dialect) or _unchanged
        # SQLAlchemy sets AUTOCOMMIT on the DB-API connection and resets it when the connection
        # goes back to the pool.
        self._connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        self._cursor = self._connection.connection.dbapi_connection.cursor()

    def mark_sent(self, number: int, subscriber_id: int, holder: str, message_id: str, now: datetime) -> bool:
        """As `mark_sent`: commit the row `sent`; False if the claim had been taken over meanwhile."""
        params = {**self._constants, "n": number, "sid": subscriber_id, "holder": holder,
                  "at": self._bind_time(now), "mid": message_id[:300]}
        self._cursor.execute(self._sql, params if self._order is None else [params[k] for k in self._order])
        return self._cursor.rowcount == 1

    def close(self) -> None:
        """Close the cursor; the connection stays open for its owner."""
        self._cursor.close()


def _unchanged(value: object) -> object:
    return value


def mark_failed(engine: Engine | Connection, number: int, subscriber_id: int, holder: str, status: DeliveryStatus,
                error: str, retry_at: datetime | None = None, count_attempt: bool = True) -> bool:
    """Record a failed try (`failed_temporary` with `retry_at`, or `failed_permanent`); False if the
    claim had been taken over meanwhile."""
    params = {"n": number, "sid": subscriber_id, "holder": holder, "new_status": status.value,
              "error": error[:2000], "retry_at": retry_at, "tries": 1 if count_attempt else 0}
    with _transaction(engine) as conn:
        return conn.execute(_MARK_FAILED, params).rowcount == 1


def mark_possibly_delivered(engine: Engine | Connection, number: int, subscriber_id: int, holder: str, error: str,
                            now: datetime, retry_at: datetime | None) -> bool:
    """Record a message sent whose confirmation was lost: `failed_temporary` until `retry_at` (the one
    resend), or with no `retry_at` the final `possibly_delivered`. False if the claim was taken over."""
    params = {"n": number, "sid": subscriber_id, "holder": holder, "error": error[:2000], "at": now,
              "retry_at": retry_at,
              "new_status": (DeliveryStatus.FAILED_TEMPORARY if retry_at else DeliveryStatus.POSSIBLY_DELIVERED).value}
    with _transaction(engine) as conn:
        return conn.execute(_MARK_POSSIBLY_DELIVERED, params).rowcount == 1


@contextmanager
def _transaction(bind: Engine | Connection) -> Iterator[Connection]:
    """A transaction on an engine (pooled connection) or on a connection the caller keeps open (a
    sending thread keeps one, sparing a pool checkout per message)."""
    if isinstance(bind, Engine):
        with bind.begin() as conn:
            yield conn
    else:
        with bind.begin():
            yield bind


# Built once: one statement per message sent, so building and cache-keying it each time would cost
# more than the UPDATE itself.
_OWN_ROW = update(deliveries).where(
    deliveries.c.issue_number == bindparam("n"), deliveries.c.subscriber_id == bindparam("sid"),
    deliveries.c.status == DeliveryStatus.SENDING.value, deliveries.c.claimed_by == bindparam("holder"),
)
_MARK_SENT = _OWN_ROW.values(
    status=DeliveryStatus.SENT.value, sent_at=bindparam("at", type_=UTCDateTime()),
    message_id=bindparam("mid"), last_error="", attempts=deliveries.c.attempts + 1, next_attempt_at=None,
)
_MARK_SENT_PARAMS = ("n", "sid", "holder", "at", "mid")
_MARK_FAILED = _OWN_ROW.values(
    status=bindparam("new_status"), last_error=bindparam("error"),
    next_attempt_at=bindparam("retry_at", type_=UTCDateTime()),
    attempts=deliveries.c.attempts + bindparam("tries", type_=Integer()),
)
_MARK_POSSIBLY_DELIVERED = _OWN_ROW.values(
    status=bindparam("new_status"), last_error=bindparam("error"),
    next_attempt_at=bindparam("retry_at", type_=UTCDateTime()), attempts=deliveries.c.attempts + 1,
    possibly_delivered_at=func.coalesce(deliveries.c.possibly_delivered_at, bindparam("at", type_=UTCDateTime())),
)


def mark_skipped(engine: Engine | Connection, number: int, subscriber_ids: Iterable[int], holder: str,
                 reason: str) -> None:
    """Close rows not sent on purpose (unsubscribed meanwhile, or nothing in their edition)."""
    ids = list(subscriber_ids)
    if not ids:
        return
    with _transaction(engine) as conn:
        conn.execute(
            update(deliveries)
            .where(deliveries.c.issue_number == number, deliveries.c.subscriber_id.in_(ids),
                   deliveries.c.status == DeliveryStatus.SENDING, deliveries.c.claimed_by == holder)
            .values(status=DeliveryStatus.SKIPPED, last_error=reason)
        )


# --- reading -----------------------------------------------------------------------------------

def ledger_counts(engine: Engine, number: int) -> dict[str, int]:
    """Rows per status for an issue (every status present, zero when none)."""
    query = (
        select(deliveries.c.status, func.count())
        .where(deliveries.c.issue_number == number)
        .group_by(deliveries.c.status)
    )
    counts = {status.value: 0 for status in DeliveryStatus}
    with engine.connect() as conn:
        counts.update({status: n for status, n in conn.execute(query)})
    return counts


def has_open_rows(engine: Engine, number: int) -> bool:
    with engine.connect() as conn:
        return _count_open(conn, number) > 0


def next_retry_at(engine: Engine, number: int) -> datetime | None:
    """When the earliest waiting retry of the issue is due (None if nothing waits)."""
    query = select(func.min(deliveries.c.next_attempt_at)).where(
        deliveries.c.issue_number == number, deliveries.c.status == DeliveryStatus.FAILED_TEMPORARY
    )
    with engine.connect() as conn:
        value = conn.execute(query).scalar()
    # min() over a TypeDecorator column comes back raw on some backends: make it aware UTC.
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _count_open(conn: Connection, number: int) -> int:
    query = select(func.count()).select_from(deliveries).where(
        deliveries.c.issue_number == number, deliveries.c.status.in_([s.value for s in OPEN_STATUSES])
    )
    return conn.execute(query).scalar_one()
