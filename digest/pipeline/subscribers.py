"""Use case: subscribers as staff manage them: import, export, add, remove, erase, list, search, show.

What readers do themselves (sign up, confirm, preferences, unsubscribe) is digest.pipeline.signup.

Rules that live here and nowhere else:
- staff never bring back an address that unsubscribed, complained or was erased: only its owner's
  own confirmed sign-up does; a bounced one only when its owner asked (`reactivate_bounced`);
- an address that was erased is never added again by an import or `add` (its suppression hash
  is checked), even while a new sign-up of its owner waits for its confirmation;
- staff adding a pending address confirm it (they vouch for the consent, method `admin`);
- an import or add needs every erasure's suppression key before it stores anything;
- removing keeps the row (unsubscribed), so imports never re-add it; erasing keeps only a keyed hash.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from sqlalchemy import Engine

from ..config import Settings
from ..listfile import ImportReport, read_list_file, write_json_lines, write_list_file
from ..models import Account, Series, Subscriber, SubscriberStatus
from ..signing import adopt_legacy_keys, suppression_keys
from ..store import subscriber_search, suppressions
from ..store import subscribers as store
from ..store.suppressions import is_erased, is_suppressed
from ..subscriber_fields import SUPPRESSED_STATUSES, make_subscriber, normalise_email, parse_series
from ..suppression_keys import SuppressionKeys
from .audit import record
from .managed import uses_current_settings

EXPORT_FORMATS = ("csv", "json")


@dataclass(frozen=True)
class Addition:
    """What `add_subscriber` did: one of added, confirmed, reactivated, updated; or refused (`refused`)."""

    subscriber: Subscriber  # as staff asked for it, validated
    added: bool = False  # a new confirmed subscriber
    confirmed: bool = False  # their pending sign-up, now confirmed on staff's word
    reactivated: bool = False  # a bounced address confirmed anew, as its owner asked
    updated: bool = False  # a confirmed subscriber's choices, saved
    # Refused: the address's opt-out (unsubscribed, bounced, complained) or its erasure.
    opted_out: SubscriberStatus | None = None
    erased: bool = False
    # Refused while the owner's own sign-up waits for its confirmation link (only that may bring it back).
    signup_waiting: bool = False

    @property
    def refused(self) -> bool:
        """Nothing changed: only the owner's own sign-up (or, bounced, their request to staff) brings it back."""
        return self.opted_out is not None or self.erased


@dataclass(frozen=True)
class Removal:
    """What `remove_subscriber` did."""

    email: str  # the address, normalised
    found: bool  # False: no such subscriber, nothing changed
    unsubscribed: bool = False  # True: unsubscribed now; False (found): already opted out, as `status` says
    status: SubscriberStatus | None = None  # the status now


@dataclass(frozen=True)
class Erasure:
    """What `erase_subscriber` did: the hash is kept either way."""

    email: str  # the address, normalised
    existed: bool  # a stored subscriber was deleted


@dataclass(frozen=True)
class SubscriberRecord:
    """Everything stored about an address (GDPR access), or why nothing is."""

    email: str  # the address, normalised
    record: dict | None  # subscriber, events, deliveries, signup_requests; None: not stored
    erased: bool = False  # not stored, and only its keyed hash is kept (it was erased)


@uses_current_settings
def import_subscribers(settings: Settings, engine: Engine, path: Path, now: datetime | None = None,
                       actor: Account | None = None) -> ImportReport:
    """Sync a subscriber list file into the store; returns its ImportReport (never re-adds the suppressed).

    New addresses are added as confirmed with consent method "import" (staff vouch for consent).
    Raises ListFileError when the file cannot be read as a list, SuppressionKeyMissing (before
    anything is stored) when an erasure's key is missing; adopts pre-0002 erasures on the way.
    `now` (default: the current time) is the consent time of new rows.
    """
    now = now or datetime.now(UTC)
    keys = checked_suppression_keys(settings, engine)
    report, rows = read_list_file(path, settings, consent_at=now)
    store.import_rows(engine, rows, keys, report, now=now, source=f"import:{path.name}"[:200])
    record(engine, actor, "subscribers.import", target=path.name, detail=_counts(report), now=now)
    return report


def _counts(report: ImportReport) -> dict[str, int]:
    """An import report's counts, for the audit trail (no addresses: the trail outlives erasures)."""
    return {"added": report.added, "updated": report.updated, "unchanged": report.unchanged,
            "suppressed": len(report.suppressed), "rejected": len(report.rejected)}


@uses_current_settings
def add_subscriber(settings: Settings, engine: Engine, email: str, *, name: str = "", language: str = "",
                   series: Iterable[str] = (), want_events: bool = True, want_media: bool = True,
                   reactivate_bounced: bool = False, now: datetime) -> Addition:
    """Add (or update) one confirmed subscriber on staff's word; consent method "admin".

    Raises InvalidSubscriber for a field that is not acceptable, SuppressionKeyMissing when an
    erasure's key is missing. Refuses (`refused`) addresses that unsubscribed, complained or were
    erased, and bounced ones unless `reactivate_bounced`.
    """
    wanted = make_subscriber(settings, email, name, language, series, want_events=want_events,
                             want_media=want_media, status=SubscriberStatus.CONFIRMED, consent_at=now,
                             consent_method="admin")
    keys = checked_suppression_keys(settings, engine)
    existing = store.get_subscriber(engine, wanted.email)
    if existing is not None and existing.status == SubscriberStatus.BOUNCED and reactivate_bounced:
        store.confirm_subscriber(engine, replace(wanted, id=existing.id), "admin", "", now)
        return Addition(wanted, reactivated=True)
    if existing is not None and existing.status in SUPPRESSED_STATUSES:
        return Addition(wanted, opted_out=existing.status)
    if is_erased(engine, wanted.email, keys):
        waiting = existing is not None and existing.status == SubscriberStatus.PENDING
        return Addition(wanted, erased=True, signup_waiting=waiting)
    if existing is None:
        store.add_subscriber(engine, wanted, now, source="admin")
        return Addition(wanted, added=True)
    if existing.status == SubscriberStatus.PENDING:
        store.confirm_subscriber(engine, replace(wanted, id=existing.id), "admin", "", now)
        return Addition(wanted, confirmed=True)
    store.update_choices(engine, replace(wanted, id=existing.id), now, source="admin")
    return Addition(wanted, updated=True)


def remove_subscriber(settings: Settings, engine: Engine, email: str, now: datetime) -> Removal:
    """Unsubscribe an address on staff's word (event detail `staff`); it stays stored so imports never re-add it.

    Raises InvalidSubscriber when `email` is not an address.
    """
    address = normalise_email(email)
    found = store.get_subscriber(engine, address)
    if found is None:
        return Removal(address, found=False)
    if found.status in SUPPRESSED_STATUSES:
        return Removal(address, found=True, status=found.status)
    store.set_status(engine, found.id, SubscriberStatus.UNSUBSCRIBED, now, detail="staff")
    return Removal(address, found=True, unsubscribed=True, status=SubscriberStatus.UNSUBSCRIBED)


def erase_subscriber(settings: Settings, engine: Engine, email: str, now: datetime,
                     actor: Account | None = None) -> Erasure:
    """GDPR erasure: delete the subscriber, their deliveries and event details; keep a keyed hash only.

    The hash is kept even for an address that was never stored, so it is never added later.
    Raises InvalidSubscriber when `email` is not an address.
    """
    address = normalise_email(email)
    keys = checked_suppression_keys(settings, engine, require=False)
    erased = Erasure(address, existed=store.erase_subscriber(engine, address, keys, now))
    # The trail names no address: an erasure must leave none behind.
    record(engine, actor, "subscribers.erase", detail={"existed": erased.existed}, now=now)
    return erased


def show_subscriber(settings: Settings, engine: Engine, email: str) -> SubscriberRecord:
    """Everything stored about one address: the subscriber row, their events, deliveries and waiting sign-ups.

    Raises InvalidSubscriber when `email` is not an address.
    """
    address = normalise_email(email)
    keys = checked_suppression_keys(settings, engine, require=False)
    record = store.subscriber_record(engine, address)
    if record is not None:
        return SubscriberRecord(address, record)
    return SubscriberRecord(address, None, erased=is_suppressed(engine, address, keys))


@uses_current_settings
def series_in_force(settings: Settings, engine: Engine) -> list[Series]:
    """The series subscribers may choose now: digest.toml's, or the store's when the file leaves them to it."""
    return list(settings.series)


def subscriber_history(settings: Settings, engine: Engine, subscriber_id: int) -> SubscriberRecord | None:
    """`show_subscriber` for a stored subscriber's id (the admin's links carry ids, never addresses); None if none."""
    found = store.get_subscriber(engine, subscriber_id)
    return None if found is None else show_subscriber(settings, engine, found.email)


@uses_current_settings
def list_subscribers(settings: Settings, engine: Engine, status: SubscriberStatus | None = None,
                     series_id: str | None = None) -> Iterator[Subscriber]:
    """Subscribers by id, streamed; `series_id` keeps those who receive that series (including "all").

    Raises InvalidSubscriber, before anything is read, for a series id that is not configured.
    """
    if series_id is not None:
        parse_series([series_id], settings)
    return store.iter_subscribers(engine, status, series_id)


@dataclass(frozen=True)
class SubscriberPage:
    """One page of the subscribers matching a search, and how many match in all."""

    subscribers: list[Subscriber]
    total: int
    page: int  # 1-based, within 1..pages
    pages: int
    languages: list[str]  # the languages stored subscribers read (the filter's choices)


@uses_current_settings
def search_subscribers(settings: Settings, engine: Engine, text: str = "", status: SubscriberStatus | None = None,
                       series_id: str = "", language: str = "", page: int = 1, per_page: int = 50) -> SubscriberPage:
    """Subscribers whose address or name contains `text`, by status, series and language; newest first, paged.

    Counted and paged in the store. A series id that is not configured filters nothing.
    """
    series_id = series_id if series_id in settings.series_by_id() else ""
    wanted = subscriber_search.SubscriberFilter(text, status, series_id, language.strip().lower()[:10])
    total = subscriber_search.count_subscribers(engine, wanted)
    pages = max(1, -(-total // per_page))
    page = min(max(1, page), pages)
    found = subscriber_search.find_subscribers(engine, wanted, (page - 1) * per_page, per_page)
    return SubscriberPage(found, total, page, pages, subscriber_search.languages_in_use(engine))


@uses_current_settings
def export_subscribers(settings: Settings, engine: Engine, out: TextIO, fmt: str = "csv",
                       status: SubscriberStatus | None = None, series_id: str | None = None) -> int:
    """Write subscribers to `out` as a list file (CSV, formula-safe, re-importable) or JSON lines; returns how many.

    Raises InvalidSubscriber for an unknown series id and ValueError for an unknown format, before writing.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}: use one of {', '.join(EXPORT_FORMATS)}")
    rows = list_subscribers(settings, engine, status, series_id)
    return write_list_file(rows, out) if fmt == "csv" else write_json_lines(rows, out)


def checked_suppression_keys(settings: Settings, engine: Engine, require: bool = True) -> SuppressionKeys:
    """The suppression keys, checked against the store's erasures: what entry points call before using them.

    Erasures from before migration 0002 are adopted on the way (`adopt_legacy_keys`, then their
    rows get the set's id). Raises SuppressionKeyMissing when an erasure's key is missing
    (unless not `require`).
    """
    keys = suppression_keys(settings)
    counts = suppressions.erasures_by_key(engine)  # counted once: the check below uses the same figures
    if suppressions.UNLABELLED_KEY_ID in counts:
        adopted = adopt_legacy_keys(settings, keys)
        suppressions.label_legacy_erasures(engine, adopted.legacy_id, replaces=[keys.legacy_id])
        keys = adopted
        counts = suppressions.erasures_by_key(engine) if require else counts  # relabelled (once per store): count again
    return suppressions.usable_suppression_keys(engine, keys, require, counts)


@uses_current_settings
def change_choices(settings: Settings, engine: Engine, email: str, *, language: str | None = None,
                   series: Iterable[str] | None = None, want_events: bool | None = None,
                   want_media: bool | None = None, now: datetime | None = None) -> Subscriber | None:
    """Change a confirmed or pending subscriber's language, series or sections on staff's word (the API).

    What is None stays as it is. None when there is no such subscriber, or they opted out (their
    choices are theirs to make again). InvalidSubscriber for an unknown language or series.
    """
    found = store.get_subscriber(engine, normalise_email(email))
    if found is None or found.status not in (SubscriberStatus.CONFIRMED, SubscriberStatus.PENDING):
        return None
    wanted = make_subscriber(settings, found.email, found.name,
                             found.language if language is None else language,
                             found.series if series is None else tuple(series),
                             want_events=found.want_events if want_events is None else want_events,
                             want_media=found.want_media if want_media is None else want_media,
                             status=found.status)
    changed = replace(found, language=wanted.language, series=wanted.series, want_events=wanted.want_events,
                      want_media=wanted.want_media)
    store.update_choices(engine, changed, now or datetime.now(UTC), source="api")
    return changed
