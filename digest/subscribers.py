"""Subscribers as data: validating what people and staff type, reading and writing list files.

A subscriber's address is validated with email-validator (no DNS look-ups) and kept in one
canonical form (ASCII domain, lower case), so the same person is never two rows. List files are
CSV `email,name,language,series` (series `;`-separated ids, empty = all series); they are read
as a stream, so a 100,000-row file never sits in memory.
"""

from __future__ import annotations

import codecs
import csv
import functools
import hashlib
import hmac
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from .config import LANGUAGES, ConfigError, Settings
from .models import Subscriber, SubscriberStatus

MAX_NAME = 200
CSV_COLUMNS = ("email", "name", "language", "series")
# Optional columns (as `export` writes them): a reader's section choices survive export then import.
SECTION_COLUMNS = ("want_events", "want_media")
# Optional columns (as `export` writes them): a move to another store keeps opt-outs and consent records.
STATUS_COLUMNS = ("status", "consent_at", "consent_method", "consent_ip")
# When the row was first stored (as `export` writes it): a new row keeps it, an existing one its own.
CREATED_COLUMN = "created_at"
CONSENT_METHODS = ("import", "web", "admin")
YES, NO = ("true", "yes", "1", "y", "oui", "ja"), ("false", "no", "0", "n", "non", "nein")
EXPORT_COLUMNS = ("email", "name", "language", "series", "want_events", "want_media", "status",
                  "consent_at", "consent_method", "consent_ip", "created_at")
# A cell that starts like a formula to spreadsheet programs (CSV injection), possibly behind `'` guards of our own (so guarding is reversible).
_FORMULA_START = re.compile(r"'*[=+\-@\t\r]")
# A `;`- or tab-separated part of a cell that starts like a formula: a spreadsheet in a `;` locale
# splits an exported line there, making that part a cell of its own.
_FORMULA_PART = re.compile(r"(?<=[;\t])(?='*[=+\-@])")
_GUARDED_PART = re.compile(r"(?<=[;\t])'(?='*[=+\-@])")
# A subscriber in one of these states was removed by their own action or their mailbox:
# imports never bring them back; only their own confirmed sign-up does.
SUPPRESSED_STATUSES = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


class InvalidSubscriber(ValueError):
    """One field is not acceptable; the message is the reason shown to the person or in a report."""


class ListFileError(Exception):
    """A list file cannot be read at all (encoding, header); the message says how to fix it."""


class SuppressionKeyMissing(ConfigError):
    """Erasure hashes in the store were made with a suppression key this process does not have.

    Importing or adding then could re-add an erased address, so it is refused (exit 2).
    """


@dataclass(frozen=True)
class SignupRequest:
    """A web sign-up waiting for its confirmation link: what the form asked for, kept in the store."""

    subscriber_id: int
    nonce: str
    choices: Subscriber  # name, language, series, want_events, want_media as submitted
    ip: str
    created_at: datetime


@dataclass(frozen=True)
class ListRow:
    """A valid row of a list file; `line` is its spreadsheet row number (the header is row 1)."""

    line: int
    subscriber: Subscriber
    # Whether the file had want_events/want_media columns; without them the stored choices stand.
    sections_given: bool = False


@dataclass(frozen=True)
class RejectedRow:
    line: int
    reason: str


@dataclass
class ImportReport:
    """What an import did; lists hold spreadsheet row numbers (header = 1)."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    suppressed: list[int] = field(default_factory=list)
    rejected: list[RejectedRow] = field(default_factory=list)
    ignored_columns: tuple[str, ...] = ()
    delimiter: str = ","

    def as_dict(self) -> dict:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "suppressed": self.suppressed,
                "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected],
                "ignored_columns": list(self.ignored_columns)}


# --- fields ---------------------------------------------------------------------------------------

def normalise_email(raw: str) -> str:
    """The canonical form of an address (ASCII domain, lower case); InvalidSubscriber if it is not one.

    Plain ASCII addresses (the vast majority) take a fast path: the part before the @ is checked
    against RFC 5322's dot-atom here and the domain by email-validator once per domain (cached), which
    is what makes a 100,000-row import fast; a test checks both paths agree.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidSubscriber("invalid address: empty")
    local, at, domain = text.rpartition("@")
    if at and len(local) <= 64 and _DOT_ATOM.fullmatch(local) and domain.isascii():
        address = f"{local}@{_checked_domain(domain.lower())}".lower()
        if len(address) <= 254:
            return address
    return _validated(text)


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str:
    return _validated(f"a@{domain}").rpartition("@")[2]  # the shortest local part: only the domain can fail


def _validated(text: str) -> str:
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidSubscriber(f"invalid address: {exc}") from None
    if len(result.local_part) > 64:  # RFC 5321's limit; many servers refuse longer ones
        raise InvalidSubscriber("invalid address: the part before the @-sign is longer than 64 characters")
    return result.ascii_email.lower()


def clean_name(raw: str) -> str:
    """A display name without control characters (no header injection), whitespace collapsed, capped."""
    text = raw or ""
    if not text.isprintable():  # fast path: most names have nothing to remove
        text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    return " ".join(text.split())[:MAX_NAME]


def parse_language(raw: str, default: str) -> str:
    """One of en, fr, de (case-insensitive); empty gives `default`."""
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value not in LANGUAGES:
        raise InvalidSubscriber(f"unknown language {value[:20]!r}: use one of {', '.join(LANGUAGES)}")
    return value


def parse_series(raw: str | Iterable[str], settings: Settings) -> tuple[str, ...]:
    """Series ids in configuration order; `;`-separated text or a list; empty means all series."""
    values = raw.split(";") if isinstance(raw, str) else list(raw)
    wanted = {v.strip() for v in values if v and v.strip()}
    if not wanted:
        return ()
    known = [s.id for s in settings.series]
    unknown = sorted(wanted - set(known))
    if unknown:
        shown = ", ".join(repr(u[:60]) for u in unknown[:3])
        raise InvalidSubscriber(f"unknown series {shown}: use ids from [[series]] ({', '.join(known) or 'none configured'})")
    if wanted == set(known):
        return ()  # following every series is "all", which also covers series added later
    return tuple(s for s in known if s in wanted)


def make_subscriber(settings: Settings, email: str, name: str = "", language: str = "",
                    series: str | Iterable[str] = (), **fields: object) -> Subscriber:
    """A validated Subscriber from untrusted input; InvalidSubscriber names the first bad field."""
    return Subscriber(email=normalise_email(email), name=clean_name(name),
                      language=parse_language(language, settings.site.language),
                      series=parse_series(series, settings), **fields)


def suppression_key_id(key: bytes) -> str:
    """The fingerprint stored with each erasure hash: names the key without revealing it."""
    return hashlib.sha256(b"digest-suppression-key-id:" + key).hexdigest()[:16]


# Marks, in the key file or $web.suppression_key_env, the keys erasures made before migration 0002
# were hashed with; and starts the id their rows carry.
LEGACY_KEY_TAG = "pre-0002"


def legacy_key_set_id(keys: Iterable[bytes]) -> str:
    """The one id of the whole pre-0002 key set, as stored with erasures made before migration 0002.

    Which key of the set hashed which of those rows cannot be known, so the id stands for all of
    them together: it changes (and the check fails) when any one key of the set is missing.
    """
    joined = ",".join(sorted({k.hex() for k in keys}))
    return f"{LEGACY_KEY_TAG}:" + hashlib.sha256(b"digest-suppression-key-set:" + joined.encode()).hexdigest()[:16]


class SuppressionKeys(tuple):
    """The HMAC keys (bytes) of the suppression list, newest first: erasures use the first, lookups all.

    `legacy` is the pre-0002 set (last in the tuple): keys derived from the signing secrets once
    in use, which erasures from before migration 0002 were hashed with. `where` says where the
    keys come from, for messages. `checked_in` is the store whose erasures were all found hashed
    with these keys (digest.store.subscribers.usable_suppression_keys sets it), None before.
    """

    def __new__(cls, keys: Iterable[bytes], legacy: Iterable[bytes] = (), where: str = "") -> SuppressionKeys:
        legacy = tuple(dict.fromkeys(legacy))
        keyring = super().__new__(cls, dict.fromkeys([*keys, *legacy]))  # without repeats, order kept
        keyring.legacy, keyring.where, keyring.checked_in = legacy, where, None
        return keyring

    @property
    def current(self) -> tuple[bytes, ...]:
        """The keys that are not of the pre-0002 set."""
        return tuple(k for k in self if k not in self.legacy)

    @property
    def legacy_id(self) -> str:
        """The id of the pre-0002 set ('' without one)."""
        return legacy_key_set_id(self.legacy) if self.legacy else ""

    def key_ids(self) -> set[str]:
        """The ids of the erasures these keys recognise: each key's, and the pre-0002 set's as a whole."""
        return {suppression_key_id(k) for k in self} | ({self.legacy_id} if self.legacy else set())


def email_hash(key: bytes, email: str, normalised: bool = False) -> str:
    """The keyed hash kept in `suppressions` instead of an erased address.

    Pass normalised=True for an address that already went through normalise_email (imports hash
    every new row, and validating twice would double their cost).
    """
    address = email if normalised else normalise_email(email)
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()


def same_choices(a: Subscriber, b: Subscriber) -> bool:
    return (a.name, a.language, a.series, a.want_events, a.want_media) == (
        b.name, b.language, b.series, b.want_events, b.want_media)


# --- list files -----------------------------------------------------------------------------------

def read_list_file(path: Path, settings: Settings, status: SubscriberStatus = SubscriberStatus.CONFIRMED,
                   consent_at: datetime | None = None) -> tuple[ImportReport, Iterator[ListRow | RejectedRow]]:
    """Open a list file: checks encoding and header now, then streams rows (valid or rejected).

    Duplicates of an address earlier in the file are rejected. Raises ListFileError when the
    file cannot be used at all, before anything is read into the store.
    """
    _check_utf8(path)
    handle = path.open("r", encoding="utf-8-sig", newline="")
    first = handle.readline()
    delimiter = _sniff_delimiter(first)
    header = next(csv.reader([first], delimiter=delimiter), [])
    columns = [_unquote_cell(h).strip().lower() for h in header]
    try:
        _check_header(path, columns)
    except ListFileError:
        handle.close()
        raise
    known = (*CSV_COLUMNS, *SECTION_COLUMNS, *STATUS_COLUMNS, CREATED_COLUMN)
    ignored = tuple(c or f"(column {i}, no name)" for i, c in enumerate(columns, start=1) if c not in known)
    report = ImportReport(ignored_columns=ignored, delimiter=delimiter)
    base = Subscriber(email="", status=status, consent_at=consent_at, consent_method="import")
    return report, _rows(handle, columns, delimiter, settings, base)


def _check_header(path: Path, columns: list[str]) -> None:
    if "email" not in columns:
        looks_like_data = any("@" in c for c in columns)
        hint = "the first line looks like data" if looks_like_data else "no 'email' column in the first line"
        raise ListFileError(f"{path}: {hint}: start the file with the header line `email,name,language,series`")
    for number, column in enumerate(columns, start=1):
        if column and column in columns[:number - 1]:
            raise ListFileError(f"{path}: the header names the column {column!r} twice (columns "
                                f"{columns.index(column) + 1} and {number}): keep one of them and import again")


def _rows(handle: io.TextIOBase, columns: list[str], delimiter: str, settings: Settings,
          base: Subscriber) -> Iterator[ListRow | RejectedRow]:
    seen: dict[str, int] = {}
    sections_given = any(c in columns for c in SECTION_COLUMNS)
    with handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        # Records, not physical lines: a quoted cell with line breaks is still one spreadsheet row.
        for line, cells in enumerate(_checked(reader), start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > len(columns):  # e.g. an unquoted delimiter: every later cell is shifted
                yield RejectedRow(line, "more cells than columns: quote the series cell (or any cell holding "
                                        f"the delimiter {delimiter!r})")
                continue
            row = dict(zip(columns, (_unquote_cell(c) for c in cells), strict=False))
            try:
                subscriber = _row_subscriber(row, settings, base)
            except InvalidSubscriber as exc:
                yield RejectedRow(line, str(exc))
                continue
            if subscriber.email in seen:
                yield RejectedRow(line, f"duplicate: the address is already on line {seen[subscriber.email]}")
                continue
            seen[subscriber.email] = line
            yield ListRow(line, subscriber, sections_given=sections_given)


def _row_subscriber(row: dict[str, str], settings: Settings, base: Subscriber) -> Subscriber:
    """The Subscriber one row describes; InvalidSubscriber names the first bad cell."""
    subscriber = replace(
        base, email=normalise_email(row.get("email", "")), name=clean_name(row.get("name", "")),
        language=parse_language(row.get("language", ""), settings.site.language),
        series=parse_series(row.get("series", ""), settings),
        want_events=parse_flag(row.get("want_events", ""), "want_events"),
        want_media=parse_flag(row.get("want_media", ""), "want_media"),
        created_at=parse_time(row.get(CREATED_COLUMN, ""), CREATED_COLUMN))
    if any(row.get(c) for c in STATUS_COLUMNS):
        subscriber = _with_status_and_consent(subscriber, row)
    return subscriber


def _with_status_and_consent(subscriber: Subscriber, row: dict[str, str]) -> Subscriber:
    """The status and consent record an export wrote; empty cells keep the import's own."""
    status = subscriber.status
    raw_status = row.get("status", "").strip().lower()
    if raw_status:
        try:
            status = SubscriberStatus(raw_status)
        except ValueError:
            raise InvalidSubscriber(f"status is {raw_status[:20]!r}: use one of "
                                    f"{', '.join(s.value for s in SubscriberStatus)} (or leave it empty)") from None
    method = row.get("consent_method", "").strip().lower() or subscriber.consent_method
    if method not in CONSENT_METHODS:
        raise InvalidSubscriber(f"consent_method is {method[:20]!r}: use one of {', '.join(CONSENT_METHODS)}")
    consent_at = parse_time(row.get("consent_at", ""), "consent_at")
    if consent_at is None and status != SubscriberStatus.PENDING:
        consent_at = subscriber.consent_at  # a pending sign-up has not consented yet
    return replace(subscriber, status=status, consent_at=consent_at, consent_method=method,
                   consent_ip=row.get("consent_ip", "").strip()[:64] or subscriber.consent_ip)


def parse_time(raw: str, column: str) -> datetime | None:
    """An ISO 8601 date and time (UTC when it has no offset); empty gives None."""
    text = raw.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSubscriber(f"{column} is {text[:40]!r}: use an ISO date and time such as "
                                "2026-11-23T09:00:00+00:00") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_flag(raw: str, column: str) -> bool:
    """A yes/no cell; empty means yes (every section is wanted unless the reader said otherwise)."""
    text = raw.strip().lower()
    if text in YES or not text:
        return True
    if text in NO:
        return False
    raise InvalidSubscriber(f"{column} is {raw.strip()!r}: use true or false")


def _checked(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    try:
        yield from reader
    except csv.Error as exc:
        raise ListFileError(f"line {reader.line_num + 1}: not readable as CSV ({exc}); fix that line and import again") from None


def _check_utf8(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with path.open("rb") as raw:
            for chunk in iter(lambda: raw.read(1 << 16), b""):
                try:
                    text = decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    line += chunk[: exc.start].count(b"\n")
                    raise ListFileError(
                        f"{path}: not UTF-8 text (line {line}): save it as UTF-8, e.g. 'CSV UTF-8' in Excel "
                        "or `iconv -f latin1 -t utf-8`") from None
                line += text.count("\n")
            decoder.decode(b"", final=True)
    except FileNotFoundError:
        raise ListFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ListFileError(f"{path}: is a folder, not a CSV file") from None
    except UnicodeDecodeError:
        raise ListFileError(f"{path}: ends in the middle of a UTF-8 character: save it as UTF-8") from None


def _sniff_delimiter(header_line: str) -> str:
    # Spreadsheets in French or German locales save CSV with ';'; a header never has quoted commas.
    counts = {d: header_line.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _unquote_cell(cell: str) -> str:
    """Undo export's formula guards ('=..., a;'=...) so an exported file imports unchanged."""
    if cell.startswith("'") and _FORMULA_START.match(cell, 1):
        cell = cell[1:]
    if "'" in cell and (";" in cell or "\t" in cell):
        cell = _GUARDED_PART.sub("", cell)
    return cell


def safe_cell(value: object) -> str:
    """A CSV cell spreadsheet programs will not run as a formula (CSV injection).

    A `'` goes before the cell when it starts like a formula, and after each `;` or tab that a
    formula-like part follows: a spreadsheet in a `;` locale (or reading tabs) splits the line
    there, and the `'` makes that part text too.
    """
    text = "" if value is None else str(value)
    if ";" in text or "\t" in text:
        text = _FORMULA_PART.sub("'", text)
    return "'" + text if _FORMULA_START.match(text) else text


def _iso(value: datetime | None) -> str:
    return value.isoformat() if value else ""


def export_row(subscriber: Subscriber) -> list[str]:
    """The EXPORT_COLUMNS cells of a subscriber, formula-safe."""
    s = subscriber
    values = (s.email, s.name, s.language, ";".join(s.series), str(s.want_events).lower(), str(s.want_media).lower(),
              s.status.value, _iso(s.consent_at), s.consent_method, s.consent_ip, _iso(s.created_at))
    return [safe_cell(v) for v in values]


def subscriber_json(subscriber: Subscriber) -> dict:
    s = subscriber
    return {"id": s.id, "email": s.email, "name": s.name, "language": s.language, "series": list(s.series),
            "want_events": s.want_events, "want_media": s.want_media, "status": s.status.value,
            "consent_at": _iso(s.consent_at) or None, "consent_method": s.consent_method,
            "consent_ip": s.consent_ip, "created_at": _iso(s.created_at) or None}
