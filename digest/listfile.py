"""List files: subscriber lists as CSV, read as a stream and written formula-safe.

A list file is CSV `email,name,language,series` (series `;`-separated ids, empty = all series),
optionally with the columns `export` writes (sections, status and consent, created_at). It is read
as a stream, so a 100,000-row file never sits in memory; every field goes through
digest.subscriber_fields, as the subscribe form and `digest subscribers add` do. Exports of other
tools (Mailchimp, listmonk, Substack, Buttondown) are recognised by their header and read through
digest.list_columns' mapping.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TextIO

from .config import Settings
from .list_columns import ColumnMap, map_columns
from .models import Subscriber, SubscriberStatus
from .subscriber_fields import InvalidSubscriber, make_subscriber, parse_flag, parse_time

CSV_COLUMNS = ("email", "name", "language", "series")
# Optional columns (as `export` writes them): a reader's section choices survive export then import.
SECTION_COLUMNS = ("want_events", "want_media")
# Optional columns (as `export` writes them): a move to another store keeps opt-outs and consent records.
STATUS_COLUMNS = ("status", "consent_at", "consent_method", "consent_ip")
# When the row was first stored (as `export` writes it): a new row keeps it, an existing one its own.
CREATED_COLUMN = "created_at"
CONSENT_METHODS = ("import", "web", "admin")
EXPORT_COLUMNS = ("email", "name", "language", "series", "want_events", "want_media", "status",
                  "consent_at", "consent_method", "consent_ip", "created_at")
# A cell that starts like a formula to spreadsheet programs (CSV injection), possibly behind `'`
# guards of our own (so guarding is reversible).
_FORMULA_START = re.compile(r"'*[=+\-@\t\r]")
# A `;`- or tab-separated part of a cell that starts like a formula: a spreadsheet in a `;` locale
# splits an exported line there, making that part a cell of its own.
_FORMULA_PART = re.compile(r"(?<=[;\t])(?='*[=+\-@])")
_GUARDED_PART = re.compile(r"(?<=[;\t])'(?='*[=+\-@])")


class ListFileError(Exception):
    """A list file cannot be read at all (encoding, header); the message says how to fix it."""


@dataclass(frozen=True)
class ListRow:
    """A valid row of a list file; `line` is its spreadsheet row number (the header is row 1)."""

    line: int
    subscriber: Subscriber
    # Whether the file had want_events/want_media columns; without them the stored choices stand.
    sections_given: bool = False


@dataclass(frozen=True)
class RejectedRow:
    """A row that was not imported, and why (the reason names the first bad cell)."""

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
    source: str = ""  # the tool whose export the file is (digest.list_columns), "" for digest's own format

    def as_dict(self) -> dict:
        """The report as `--json` prints it."""
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged,
                "suppressed": self.suppressed,
                "rejected": [{"line": r.line, "reason": r.reason} for r in self.rejected],
                "ignored_columns": list(self.ignored_columns), **({"source": self.source} if self.source else {})}


# --- reading --------------------------------------------------------------------------------------

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
    header = [_unquote_cell(h) for h in next(csv.reader([first], delimiter=delimiter), [])]
    columns = [h.strip().lower() for h in header]
    mapping = map_columns(header)
    try:
        if not mapping.source:  # another tool's export is recognised by its own header
            _check_header(path, columns)
        elif "email" not in mapping.positions:
            raise ListFileError(f"{path}: looks like a {mapping.source} export, but has no email column")
        # The whole file is read as CSV before the first row is stored: a broken quote on line
        # 2,502 must not leave the 2,000 rows of the first batch stored behind an error that
        # says "fix that line and import again". Streamed: nothing is kept but a line count.
        _check_csv(path, delimiter)
    except ListFileError:
        handle.close()
        raise
    report = ImportReport(ignored_columns=mapping.ignored, delimiter=delimiter, source=mapping.source)
    base = Subscriber(email="", status=status, consent_at=consent_at, consent_method="import")
    return report, _rows(handle, len(columns), mapping, delimiter, settings, base)


def _check_header(path: Path, columns: list[str]) -> None:
    if "email" not in columns:
        looks_like_data = any("@" in c for c in columns)
        hint = "the first line looks like data" if looks_like_data else "no 'email' column in the first line"
        raise ListFileError(f"{path}: {hint}: start the file with the header line `email,name,language,series`")
    for number, column in enumerate(columns, start=1):
        if column and column in columns[:number - 1]:
            raise ListFileError(f"{path}: the header names the column {column!r} twice (columns "
                                f"{columns.index(column) + 1} and {number}): keep one of them and import again")


def _rows(handle: io.TextIOBase, width: int, mapping: ColumnMap, delimiter: str, settings: Settings,
          base: Subscriber) -> Iterator[ListRow | RejectedRow]:
    seen: dict[str, int] = {}
    sections_given = any(c in mapping.positions for c in SECTION_COLUMNS)
    with handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        # Records, not physical lines: a quoted cell with line breaks is still one spreadsheet row.
        for line, cells in enumerate(_checked(reader), start=2):
            if not any(c.strip() for c in cells):
                continue
            if len(cells) > width:  # e.g. an unquoted delimiter: every later cell is shifted
                yield RejectedRow(line, "more cells than columns: quote the series cell (or any cell holding "
                                        f"the delimiter {delimiter!r})")
                continue
            try:
                row = mapping.row([_unquote_cell(c) for c in cells])
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
    subscriber = make_subscriber(settings, row.get("email", ""), row.get("name", ""), row.get("language", ""),
                                 row.get("series", ""), status=base.status, consent_at=base.consent_at,
                                 consent_method=base.consent_method)
    subscriber = replace(subscriber, want_events=parse_flag(row.get("want_events", ""), "want_events"),
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


def _checked(reader: Iterator[list[str]]) -> Iterator[list[str]]:
    # _check_csv read the same file already; this only fires if the file changed in between.
    try:
        yield from reader
    except csv.Error as exc:
        raise ListFileError(f"line {reader.line_num + 1}: not readable as CSV ({exc}); fix that line and import again") from None


def _check_csv(path: Path, delimiter: str) -> None:
    """Read the whole file as CSV, keeping nothing; ListFileError names the line to fix (a text editor's line)."""
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter, strict=True)
        record_start = 1
        try:
            while True:
                record_start = reader.line_num + 1
                if next(reader, None) is None:
                    return
        except csv.Error as exc:
            problem, line = str(exc), reader.line_num
    if problem == "unexpected end of data":  # a quote that never closes swallowed the rest of the file
        line = _unclosed_quote_line(path, delimiter, record_start)
        raise ListFileError(f"{path}: line {line}: not readable as CSV: a quoted cell opens on this line and is "
                            'never closed; close it with " (write a quote inside a cell as "") and import again')
    raise ListFileError(f"{path}: line {line}: not readable as CSV ({problem}); fix that line and import again")


def _unclosed_quote_line(path: Path, delimiter: str, record_start: int) -> int:
    """The line where the quoted cell that never closes opens, scanning from the start of its record."""
    opened_on, quoted, quote_pending, field_start = record_start, False, False, True
    with path.open("r", encoding="utf-8-sig", newline="") as handle:
        for number, text in enumerate(handle, start=1):
            if number < record_start:
                continue
            for char in text:
                if quoted and quote_pending:  # a quote inside a quoted cell: `""` or the cell's end
                    quote_pending = False
                    if char == '"':
                        continue
                    quoted = False
                elif quoted:
                    quote_pending = char == '"'
                    continue
                if char == '"' and field_start:
                    quoted, opened_on = True, number
                field_start = char in (delimiter, "\r", "\n")
    return opened_on


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
    """A subscriber as one JSON object (`export --format json`, `list --json`)."""
    s = subscriber
    return {"id": s.id, "email": s.email, "name": s.name, "language": s.language, "series": list(s.series),
            "want_events": s.want_events, "want_media": s.want_media, "status": s.status.value,
            "consent_at": _iso(s.consent_at) or None, "consent_method": s.consent_method,
            "consent_ip": s.consent_ip, "created_at": _iso(s.created_at) or None}


def write_list_file(subscribers: Iterable[Subscriber], out: TextIO) -> int:
    """Write a header and one formula-safe EXPORT_COLUMNS row per subscriber (re-importable); returns how many."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    count = 0
    for subscriber in subscribers:
        writer.writerow(export_row(subscriber))
        count += 1
    return count


def write_json_lines(subscribers: Iterable[Subscriber], out: TextIO) -> int:
    """Write one `subscriber_json` object per line; returns how many."""
    count = 0
    for subscriber in subscribers:
        out.write(json.dumps(subscriber_json(subscriber), ensure_ascii=False) + "\n")
        count += 1
    return count
