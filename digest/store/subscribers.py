"""Subscribers and their history (subscriber_events), on either backend: reading, changes, imports, GDPR.

Status changes always write a subscriber_event in the same transaction, so the admin charts and
GDPR access (`subscriber_record`) see every step. Erasure deletes the row (deliveries cascade),
blanks the details of its events and keeps only a keyed hash of the address on the suppression
list (digest.store.suppressions, which also checks that no erasure's key is missing).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine, Row, RowMapping, Text, bindparam, cast, func, literal, select

from ..listfile import ImportReport, ListRow, RejectedRow
from ..models import Subscriber, SubscriberStatus
from ..subscriber_fields import SUPPRESSED_STATUSES, InvalidSubscriber, normalise_email
from ..suppression_keys import email_hash
from .schema import UTCDateTime, deliveries, signup_requests, subscriber_events, subscribers
from .signups import forget_signup_requests
from .suppressions import suppress, suppressed_hashes, unsuppress, usable_suppression_keys

IMPORT_BATCH = 2000


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _subscriber(row: Row) -> Subscriber:
    m = row._mapping
    return Subscriber(id=m["id"], email=m["email"], name=m["name"], language=m["language"],
                      series=tuple(m["series"] or ()), want_events=bool(m["want_events"]),
                      want_media=bool(m["want_media"]), status=SubscriberStatus(m["status"]),
                      consent_at=m["consent_at"], consent_method=m["consent_method"], consent_ip=m["consent_ip"],
                      created_at=m["created_at"])


def _values(s: Subscriber) -> dict:
    return {"email": s.email, "name": s.name, "language": s.language, "series": list(s.series),
            "want_events": s.want_events, "want_media": s.want_media, "status": s.status.value,
            "consent_at": s.consent_at, "consent_method": s.consent_method, "consent_ip": s.consent_ip}


# --- reading --------------------------------------------------------------------------------------

def get_subscriber(engine: Engine, key: str | int) -> Subscriber | None:
    """One subscriber by id or by address (any case); None if there is none."""
    if isinstance(key, int):
        where = subscribers.c.id == key
    else:
        try:
            where = subscribers.c.email == normalise_email(key)
        except InvalidSubscriber:
            return None
    with engine.connect() as conn:
        row = conn.execute(select(subscribers).where(where)).first()
    return _subscriber(row) if row else None


def iter_subscribers(engine: Engine, status: SubscriberStatus | None = None, series: str | None = None,
                     batch: int = 1000) -> Iterator[Subscriber]:
    """Subscribers by id, streamed in batches; `series` keeps those who receive that series (incl. "all")."""
    last = 0
    while True:
        query = select(subscribers).where(subscribers.c.id > last).order_by(subscribers.c.id).limit(batch)
        if status is not None:
            query = query.where(subscribers.c.status == status.value)
        with engine.connect() as conn:
            rows = [_subscriber(r) for r in conn.execute(query)]
        if not rows:
            return
        last = rows[-1].id
        yield from (s for s in rows if series is None or not s.series or series in s.series)


def iter_confirmed(engine: Engine, batch: int = 1000) -> Iterator[Subscriber]:
    """Every confirmed subscriber (the only ones who receive digests), streamed in batches by id."""
    return iter_subscribers(engine, SubscriberStatus.CONFIRMED, batch=batch)


def distinct_preferences(engine: Engine) -> Iterator[tuple[tuple[str, ...], bool, bool, str]]:
    """Each distinct (series, want_events, want_media, language) among confirmed subscribers; () = all series."""
    seen: set[tuple] = set()
    query = select(subscribers.c.series, subscribers.c.want_events, subscribers.c.want_media,
                   subscribers.c.language).where(subscribers.c.status == SubscriberStatus.CONFIRMED.value)
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=2000).execute(query):
            key = (tuple(row.series or ()), bool(row.want_events), bool(row.want_media), row.language)
            if key not in seen:
                seen.add(key)
                yield key


def count_by_status(engine: Engine) -> dict[str, int]:
    """Subscribers per status (every status present, zero included)."""
    counts = {s.value: 0 for s in SubscriberStatus}
    with engine.connect() as conn:
        for status, n in conn.execute(select(subscribers.c.status, func.count()).group_by(subscribers.c.status)):
            counts[status] = n
    return counts


def last_issue_sent(engine: Engine, subscriber_id: int) -> int | None:
    """The newest issue delivered to a subscriber: the one an unsubscribe click most likely came from."""
    query = select(func.max(deliveries.c.issue_number)).where(deliveries.c.subscriber_id == subscriber_id,
                                                              deliveries.c.status == "sent")
    with engine.connect() as conn:
        return conn.execute(query).scalar()


# --- writing one subscriber -----------------------------------------------------------------------

def record_event(conn: Connection, subscriber_id: int | None, event: str, now: datetime,
                 detail: str = "", issue_number: int | None = None) -> None:
    """Append to a subscriber's history (inside the caller's transaction)."""
    conn.execute(subscriber_events.insert().values(subscriber_id=subscriber_id, event=event, at=now,
                                                   detail=detail[:500], issue_number=issue_number))


def add_subscriber(engine: Engine, subscriber: Subscriber, now: datetime | None = None,
                   source: str = "", event: str = "subscribed") -> Subscriber | None:
    """Insert a new subscriber, recording `event`; None if the address is already stored.

    Raises IntegrityError if another process inserts the same address at the same moment.
    """
    now = _now(now)
    subscriber = replace(subscriber, email=normalise_email(subscriber.email))
    with engine.begin() as conn:
        if conn.execute(select(subscribers.c.id).where(subscribers.c.email == subscriber.email)).first():
            return None
        new_id = conn.execute(subscribers.insert().values(
            **_values(subscriber), created_at=now, updated_at=now, source=source,
            confirmed_at=now if subscriber.status == SubscriberStatus.CONFIRMED else None)).inserted_primary_key[0]
        record_event(conn, new_id, event, now, f"{subscriber.consent_method} {subscriber.consent_ip}".strip())
    return replace(subscriber, id=new_id, created_at=now)


def update_choices(engine: Engine, subscriber: Subscriber, now: datetime | None = None,
                   source: str | None = None) -> bool:
    """Save name, language, series and sections of a stored subscriber; False if it is gone."""
    now = _now(now)
    values = {"name": subscriber.name, "language": subscriber.language, "series": list(subscriber.series),
              "want_events": subscriber.want_events, "want_media": subscriber.want_media, "updated_at": now}
    if source is not None:
        values["source"] = source
    with engine.begin() as conn:
        done = conn.execute(subscribers.update().where(subscribers.c.id == subscriber.id).values(**values)).rowcount
        if done:
            record_event(conn, subscriber.id, "preferences", now, source or "")
    return bool(done)


def set_status(engine: Engine, subscriber_id: int, status: SubscriberStatus, now: datetime | None = None,
               detail: str = "", issue_number: int | None = None) -> bool:
    """Move a subscriber to `status`, recording an event named after it; False if gone or already there.

    An opt-out (unsubscribed, bounced, complained) also withdraws pending sign-up requests, so an
    older confirmation link can never undo it.
    """
    with engine.begin() as conn:
        return change_status(conn, subscriber_id, status, _now(now), detail, issue_number)


def change_status(conn: Connection, subscriber_id: int, status: SubscriberStatus, now: datetime,
                  detail: str = "", issue_number: int | None = None) -> bool:
    """`set_status` inside the caller's transaction (an import applies its opt-outs with its batch)."""
    values: dict = {"status": status.value, "updated_at": now}
    if status == SubscriberStatus.CONFIRMED:
        values["confirmed_at"] = now
    if status in SUPPRESSED_STATUSES:
        values["unsubscribed_at"] = now
    done = conn.execute(subscribers.update().where(subscribers.c.id == subscriber_id,
                                                   subscribers.c.status != status.value).values(**values)).rowcount
    if done:
        record_event(conn, subscriber_id, status.value, now, detail, issue_number)
    if status in SUPPRESSED_STATUSES:
        forget_signup_requests(conn, subscriber_id)
    return bool(done)


def confirm_subscriber(engine: Engine, subscriber: Subscriber, method: str, ip: str, now: datetime | None = None,
                       forget_hashes: Iterable[str] = ()) -> bool:
    """Confirm with a fresh consent record and the given choices; drops suppression hashes of the address.

    Used when the person confirms (double opt-in) or staff add them; False if the row is gone. Any
    sign-up requests are used up: a repeated click on the link finds the subscriber confirmed.
    """
    now = _now(now)
    with engine.begin() as conn:
        done = conn.execute(subscribers.update().where(subscribers.c.id == subscriber.id).values(
            name=subscriber.name, language=subscriber.language, series=list(subscriber.series),
            want_events=subscriber.want_events, want_media=subscriber.want_media,
            status=SubscriberStatus.CONFIRMED.value, consent_at=now, consent_method=method, consent_ip=ip[:64],
            confirmed_at=now, unsubscribed_at=None, bounce_count=0, updated_at=now)).rowcount
        if done:
            record_event(conn, subscriber.id, "confirmed", now, f"{method} {ip}".strip())
            forget_signup_requests(conn, subscriber.id)
            unsuppress(conn, forget_hashes)
    return bool(done)


def record_bounce(engine: Engine, subscriber_id: int, threshold: int = 2, now: datetime | None = None,
                  detail: str = "", issue_number: int | None = None) -> bool:
    """Count a permanent failure; at `threshold` the subscriber becomes bounced. True if it just did."""
    now = _now(now)
    with engine.begin() as conn:
        count = count_bounce(conn, subscriber_id, now, detail, issue_number)
        if count is not None and count >= threshold:
            return change_status(conn, subscriber_id, SubscriberStatus.BOUNCED, now, detail, issue_number)
    return False


def count_bounce(conn: Connection, subscriber_id: int, now: datetime, detail: str = "",
                 issue_number: int | None = None) -> int | None:
    """One bounce: `bounce_count` + 1 and a `bounce` event (inside the caller's transaction); the new count.

    Send-time refusals (record_bounce) and reports arriving later (digest.store.bounces) both count here.
    """
    conn.execute(subscribers.update().where(subscribers.c.id == subscriber_id)
                 .values(bounce_count=subscribers.c.bounce_count + 1, updated_at=now))
    record_event(conn, subscriber_id, "bounce", now, detail, issue_number)
    return conn.execute(select(subscribers.c.bounce_count).where(subscribers.c.id == subscriber_id)).scalar()


# --- imports --------------------------------------------------------------------------------------

def import_rows(engine: Engine, rows: Iterable[ListRow | RejectedRow], keys: Sequence[bytes],
                report: ImportReport, now: datetime | None = None, source: str = "import",
                detail: str = "import") -> ImportReport:
    """Sync list-file rows into the store in batches, counting into `report`.

    New addresses are added; confirmed and pending ones are updated (a subscriber who saved their
    own preferences keeps their language and series); unsubscribed, bounced, complained and erased
    addresses are counted as suppressed and never touched. A row whose `status` cell records an
    opt-out is stored with it (new address) or applies it (confirmed or pending one), and counts
    as suppressed. Raises SuppressionKeyMissing, before anything is stored, when an erasure's key
    is missing from `keys` (checked here unless `keys` were checked in this store already, as
    digest.pipeline.subscribers.checked_suppression_keys returns them). `detail` goes into the
    history events it writes (who imported which file).
    """
    now = _now(now)
    keys = checked_keys(engine, keys)
    for batch in valid_batches(rows, report):
        _import_batch(engine, batch, keys, report, now, source, detail)
    return report


def checked_keys(engine: Engine, keys: Sequence[bytes]) -> Sequence[bytes]:
    return keys if getattr(keys, "checked_in", None) is engine else usable_suppression_keys(engine, keys)


def valid_batches(rows: Iterable[ListRow | RejectedRow], report: ImportReport | None,
             rejected: list[RejectedRow] | None = None) -> Iterator[list[ListRow]]:
    """Valid rows in batches of IMPORT_BATCH; rejected ones go to `report` (or the `rejected` list)."""
    batch: list[ListRow] = []
    for row in rows:
        if isinstance(row, RejectedRow):
            (report.rejected if report is not None else rejected).append(row)
            continue
        batch.append(row)
        if len(batch) >= IMPORT_BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def decide_rows(conn: Connection, batch: list[ListRow], keys: Sequence[bytes]) -> list[tuple[ListRow, str, Row | None]]:
    """What to do with each row: insert, insert_opted_out, erased, opted_out, erased_pending, opt_out or update.

    "update" may still turn out unchanged (`import_change` returns None). The dry run
    (digest.store.subscriber_plans) decides with this too.
    """
    emails = [r.subscriber.email for r in batch]
    existing = {r.email: r for r in conn.execute(select(
        subscribers.c.id, subscribers.c.email, subscribers.c.name, subscribers.c.language, subscribers.c.series,
        subscribers.c.want_events, subscribers.c.want_media, subscribers.c.status, subscribers.c.source).where(subscribers.c.email.in_(emails)))}
    # New addresses and pending ones (an import would confirm them) are checked against the
    # erasures: an erased address that signed up again on the web is pending, its hash kept.
    unchecked = [r for r in batch if r.subscriber.email not in existing
                 or existing[r.subscriber.email].status == SubscriberStatus.PENDING.value]
    hashes = {r.subscriber.email: [email_hash(k, r.subscriber.email, normalised=True) for k in keys] for r in unchecked}
    erased = suppressed_hashes(conn, [h for hs in hashes.values() for h in hs])
    decisions = []
    for row in batch:
        new, old = row.subscriber, existing.get(row.subscriber.email)
        if old is None:
            kind = ("erased" if erased.intersection(hashes[new.email])
                    else "insert_opted_out" if new.status in SUPPRESSED_STATUSES else "insert")
        elif SubscriberStatus(old.status) in SUPPRESSED_STATUSES:
            kind = "opted_out"
        elif erased.intersection(hashes.get(new.email, ())):
            kind = "erased_pending"  # an erased address stays pending until its own confirmation
        elif new.status in SUPPRESSED_STATUSES:  # the file records an opt-out made elsewhere: it wins
            kind = "opt_out"
        else:
            kind = "update"
        decisions.append((row, kind, old))
    return decisions


def _import_batch(engine: Engine, batch: list[ListRow], keys: Sequence[bytes], report: ImportReport,
                  now: datetime, source: str, detail: str = "import") -> None:
    with engine.begin() as conn:
        inserts, updates, confirms, opt_outs = [], [], [], []
        for row, kind, old in decide_rows(conn, batch, keys):
            if kind in ("insert", "insert_opted_out"):
                inserts.append(_insert_values(row.subscriber, now, source))
            elif kind == "opt_out":
                opt_outs.append((old.id, row.subscriber.status))
            elif kind == "update":
                change = import_change(old, row, now)
                if change is None:
                    report.unchanged += 1
                    continue
                updates.append(change)
                if change.pop("confirming"):
                    confirms.append(old.id)
            if kind not in ("insert", "update"):
                report.suppressed.append(row.line)
        _insert_imported(conn, inserts, now, detail)
        if updates:
            conn.execute(subscribers.update().where(subscribers.c.id == bindparam("row_id")).values(
                name=bindparam("name"), language=bindparam("language"), series=bindparam("series"),
                want_events=bindparam("want_events"), want_media=bindparam("want_media"),
                updated_at=bindparam("updated_at")), updates)
        if confirms:
            # A pending web sign-up staff now import: the consent is the import's (staff vouch for it).
            conn.execute(subscribers.update().where(subscribers.c.id.in_(confirms)).values(
                status=SubscriberStatus.CONFIRMED.value, consent_at=now, consent_method="import", consent_ip="",
                confirmed_at=now, updated_at=now))
            _events(conn, confirms, "confirmed", now, detail)
        # In the batch's transaction: the report's "suppressed" and the store never disagree.
        for subscriber_id, status in opt_outs:
            change_status(conn, subscriber_id, status, now, detail)
    report.added += sum(1 for i in inserts if SubscriberStatus(i["status"]) not in SUPPRESSED_STATUSES)
    report.updated += len(updates)


def _insert_values(new: Subscriber, now: datetime, source: str) -> dict:
    confirmed = new.status == SubscriberStatus.CONFIRMED
    return {**_values(new), "created_at": new.created_at or now, "updated_at": now, "source": source,
            "confirmed_at": now if confirmed else None,
            "unsubscribed_at": now if new.status in SUPPRESSED_STATUSES else None}


def _insert_imported(conn: Connection, inserts: list[dict], now: datetime, import_detail: str = "import") -> None:
    """Insert new rows with their history: "subscribed" for confirmed ones, "imported" (with the status) for others."""
    if not inserts:
        return
    conn.execute(subscribers.insert(), inserts)
    by_status: dict[str, list[str]] = {}
    for values in inserts:
        by_status.setdefault(values["status"], []).append(values["email"])
    for status, emails in by_status.items():
        confirmed = status == SubscriberStatus.CONFIRMED.value
        event, detail = ("subscribed", import_detail) if confirmed else ("imported", f"{import_detail} {status}")
        # One INSERT ... SELECT for the history rows: far cheaper than a parameter set per row.
        added = select(subscribers.c.id, literal(event), literal(now, UTCDateTime()), literal(detail))
        conn.execute(subscriber_events.insert().from_select(
            ["subscriber_id", "event", "at", "detail"], added.where(subscribers.c.email.in_(emails))))


def import_change(old: Row, row: ListRow, now: datetime) -> dict | None:
    """The update for an existing row, or None when the file says nothing new."""
    new = row.subscriber
    own_choice = old.source == "reader"
    language = old.language if own_choice else new.language
    series = list(old.series or ()) if own_choice else list(new.series)
    keep_sections = own_choice or not row.sections_given
    sections = (old.want_events, old.want_media) if keep_sections else (new.want_events, new.want_media)
    confirming = old.status == SubscriberStatus.PENDING.value and new.status == SubscriberStatus.CONFIRMED
    before = (old.name, old.language, list(old.series or ()), (old.want_events, old.want_media))
    if before == (new.name, language, series, sections) and not confirming:
        return None
    return {"row_id": old.id, "name": new.name, "language": language, "series": series,
            "want_events": sections[0], "want_media": sections[1], "updated_at": now, "confirming": confirming}


def _events(conn: Connection, ids: list[int], event: str, now: datetime, detail: str) -> None:
    if ids:
        conn.execute(subscriber_events.insert(), [
            {"subscriber_id": i, "event": event, "at": now, "detail": detail, "issue_number": None} for i in ids])


# --- GDPR -----------------------------------------------------------------------------------------

def erase_subscriber(engine: Engine, email: str, keys: Sequence[bytes], now: datetime | None = None) -> bool:
    """Delete everything personal about an address; keep only its keyed hash so it is never mailed again.

    The row goes (its deliveries and sign-up requests too), its events stay for statistics with
    subscriber and details blanked, and the hash under the newest key joins `suppressions` with that
    key's id. Returns whether a row existed (the hash is added either way).
    """
    now = _now(now)
    address = normalise_email(email)
    with engine.begin() as conn:
        sid = conn.execute(select(subscribers.c.id).where(subscribers.c.email == address)).scalar()
        if sid is not None:
            conn.execute(subscriber_events.update().where(subscriber_events.c.subscriber_id == sid)
                         .values(subscriber_id=None, detail=""))
            conn.execute(deliveries.delete().where(deliveries.c.subscriber_id == sid))
            forget_signup_requests(conn, sid)
            conn.execute(subscribers.delete().where(subscribers.c.id == sid))
            record_event(conn, None, "erased", now)
        suppress(conn, address, keys[0], now)
    return sid is not None


def purge_unconfirmed(engine: Engine, before: datetime) -> int:
    """Delete sign-ups still pending whose every confirmation link has expired (made before `before`); returns how many.

    Data minimisation: an address someone typed but never confirmed (maybe not theirs) is not
    kept. Their events lose subscriber and details, as in an erasure; no hash is kept. A pending
    row older than `before` stays while it has a sign-up request made since: that link still works.
    """
    fresh_request = select(signup_requests.c.id).where(signup_requests.c.subscriber_id == subscribers.c.id,
                                                       signup_requests.c.created_at >= before)
    stale = select(subscribers.c.id).where(subscribers.c.status == SubscriberStatus.PENDING.value,
                                           subscribers.c.created_at < before, ~fresh_request.exists())
    with engine.begin() as conn:
        ids = list(conn.execute(stale).scalars())
        for start in range(0, len(ids), IMPORT_BATCH):
            chunk = ids[start:start + IMPORT_BATCH]
            conn.execute(subscriber_events.update().where(subscriber_events.c.subscriber_id.in_(chunk))
                         .values(subscriber_id=None, detail=""))
            conn.execute(subscribers.delete().where(subscribers.c.id.in_(chunk)))
    return len(ids)


def subscriber_record(engine: Engine, email: str) -> dict | None:
    """Everything stored about an address (GDPR access): the row, its events, deliveries and pending sign-up requests."""
    address = normalise_email(email)
    with engine.connect() as conn:
        row = conn.execute(select(subscribers).where(subscribers.c.email == address)).first()
        if row is None:
            return None
        sid = row.id
        events = conn.execute(select(subscriber_events).where(subscriber_events.c.subscriber_id == sid)
                              .order_by(subscriber_events.c.id)).all()
        sent = conn.execute(select(deliveries).where(deliveries.c.subscriber_id == sid)
                            .order_by(deliveries.c.issue_number)).all()
        requests = conn.execute(select(signup_requests).where(signup_requests.c.subscriber_id == sid)
                                .order_by(signup_requests.c.id)).all()
    return {"subscriber": _plain(row._mapping),
            "events": [_plain(e._mapping) for e in events],
            "deliveries": [_plain(d._mapping) for d in sent],
            "signup_requests": [_plain(r._mapping) for r in requests]}


def _plain(mapping: RowMapping) -> dict:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in mapping.items()}


def confirmed_choice_groups(engine: Engine) -> list[tuple[str, tuple[str, ...], bool, bool, int]]:
    """(language, series, want_events, want_media, count) of confirmed subscribers, one row per choice.

    Grouped in the database, so counting an audience of a million reads a few hundred rows.
    """
    series_text = cast(subscribers.c.series, Text)  # JSON cannot be grouped on PostgreSQL; its text can
    query = (select(subscribers.c.language, series_text, subscribers.c.want_events, subscribers.c.want_media,
                    func.count())
             .where(subscribers.c.status == SubscriberStatus.CONFIRMED.value)
             .group_by(subscribers.c.language, series_text, subscribers.c.want_events, subscribers.c.want_media))
    with engine.connect() as conn:
        return [(language, tuple(json.loads(series or "[]")), bool(events), bool(media), count)
                for language, series, events, media, count in conn.execute(query)]
