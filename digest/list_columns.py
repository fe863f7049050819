"""Which columns of a subscriber list mean what: digest's own, and exports from Mailchimp, listmonk, Substack
and Buttondown, recognised by their header line (pure).

`map_columns(header)` names the tool an export came from and maps its columns onto digest's list
columns (email, name, status, consent_at, consent_ip, created_at); `ColumnMap.row(cells)` turns one
row of the file into those columns. What another tool says about a person's status is translated
conservatively: anything that is not plainly "subscribed" (unsubscribed, cleaned, blocklisted,
disabled, email disabled, undeliverable) becomes an opt-out, so an import never mails someone the
old tool had stopped mailing. Dates another tool writes in its own way are kept when they read as
ISO 8601 (with or without an offset: UTC then), and dropped otherwise (the import's time stands).
Columns no rule knows are ignored and listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .subscriber_fields import InvalidSubscriber

# digest's own columns (what `digest subscribers export` writes; the list file format).
OWN_COLUMNS = ("email", "name", "language", "series", "want_events", "want_media", "status",
               "consent_at", "consent_method", "consent_ip", "created_at")
TIME_COLUMNS = ("consent_at", "created_at")


@dataclass(frozen=True)
class Source:
    """One tool's export: the headers that identify it, what its columns mean, how its statuses read."""

    name: str
    # Lower-case header names that, all present, identify the export.
    signature: tuple[str, ...]
    # Lower-case header name -> digest column; the first header present wins for a column.
    columns: tuple[tuple[str, str], ...]
    # Header names whose cells are joined with a space into `name` (first, last) when no name column maps.
    name_parts: tuple[str, ...] = ()
    # The tool's status words (lower case) -> digest's status; "" keeps the import's own (confirmed).
    status_words: tuple[tuple[str, str], ...] = ()
    # A header whose mere presence says what every row's status is (Mailchimp's per-status exports).
    status_by_column: tuple[tuple[str, str], ...] = ()


MAILCHIMP = Source(
    "Mailchimp", ("email address",),
    (("email address", "email"), ("confirm_time", "consent_at"), ("optin_time", "consent_at"),
     ("confirm_ip", "consent_ip"), ("optin_ip", "consent_ip")),
    name_parts=("first name", "last name"),
    # Mailchimp exports each audience status as its own file; the unsubscribed and cleaned (bounced)
    # ones carry UNSUB_TIME or CLEAN_TIME.
    status_by_column=(("unsub_time", "unsubscribed"), ("clean_time", "bounced")),
)
LISTMONK = Source(
    "listmonk", ("uuid", "email", "name", "attributes", "status"),
    (("email", "email"), ("name", "name"), ("status", "status"), ("created_at", "created_at")),
    status_words=(("enabled", ""), ("disabled", "unsubscribed"), ("blocklisted", "unsubscribed")),
)
SUBSTACK = Source(
    "Substack", ("email", "active_subscription", "email_disabled"),
    (("email", "email"), ("name", "name"), ("email_disabled", "status"), ("created_at", "created_at"),
     ("subscription_created_at", "created_at")),
    status_words=(("false", ""), ("", ""), ("true", "unsubscribed")),
)
BUTTONDOWN = Source(
    "Buttondown", ("subscriber_type",),
    (("email", "email"), ("email_address", "email"), ("subscriber_type", "status"),
     ("creation_date", "created_at"), ("ip_address", "consent_ip")),
    status_words=(("regular", ""), ("premium", ""), ("trialed", ""), ("gifted", ""), ("churning", ""),
                  ("unpaid", ""), ("past_due", ""), ("churned", ""), ("unactivated", "pending"),
                  ("unsubscribed", "unsubscribed"), ("removed", "unsubscribed"), ("blocked", "unsubscribed"),
                  ("spammy", "unsubscribed"), ("undeliverable", "bounced"), ("complained", "complained")),
)
BUTTONDOWN_NEW = Source(  # newer exports name the columns as the current API does
    "Buttondown", ("email_address", "type"),
    (("email_address", "email"), ("type", "status"), ("creation_date", "created_at"), ("ip_address", "consent_ip")),
    status_words=BUTTONDOWN.status_words,
)
SOURCES = (MAILCHIMP, LISTMONK, SUBSTACK, BUTTONDOWN, BUTTONDOWN_NEW)


@dataclass(frozen=True)
class ColumnMap:
    """How to read a file's rows as digest's list columns; `source` is "" for digest's own format."""

    source: str
    # digest column -> position in the file.
    positions: dict[str, int]
    name_parts: tuple[int, ...] = ()
    status_words: dict[str, str] = field(default_factory=dict)
    fixed_status: str = ""
    ignored: tuple[str, ...] = ()

    def row(self, cells: list[str]) -> dict[str, str]:
        """One row's cells as digest columns; InvalidSubscriber for a status word the tool's rules do not know."""
        def cell(i: int) -> str:
            return cells[i] if i < len(cells) else ""

        row = {column: cell(i) for column, i in self.positions.items()}
        if self.name_parts and not row.get("name", "").strip():
            row["name"] = " ".join(p for p in (cell(i).strip() for i in self.name_parts) if p)
        if not self.source:
            return row
        for column in TIME_COLUMNS:
            if column in row:
                row[column] = _iso_or_empty(row[column])
        if self.fixed_status:
            row["status"] = self.fixed_status
        elif "status" in row:
            word = row["status"].strip().lower()
            if word not in self.status_words:
                known = ", ".join(sorted(w for w in self.status_words if w))
                raise InvalidSubscriber(f"status {word[:30]!r} is not a {self.source} status digest knows "
                                        f"({known})", ("status",))
            row["status"] = self.status_words[word]
        return row


def map_columns(header: list[str]) -> ColumnMap:
    """The ColumnMap for a header line (cells as written); the first source whose signature fits, else digest's own."""
    names = [h.strip().lower() for h in header]
    for source in SOURCES:
        if all(s in names for s in source.signature):
            return _source_map(source, names)
    positions = {c: names.index(c) for c in OWN_COLUMNS if c in names}
    ignored = tuple(c or f"(column {i}, no name)" for i, c in enumerate(names, start=1) if c not in OWN_COLUMNS)
    return ColumnMap("", positions, ignored=ignored)


def _source_map(source: Source, names: list[str]) -> ColumnMap:
    positions: dict[str, int] = {}
    used: set[int] = set()
    for header, column in source.columns:
        if header in names and column not in positions:
            positions[column] = names.index(header)
            used.add(positions[column])
    parts = tuple(names.index(p) for p in source.name_parts if p in names)
    used.update(parts)
    fixed = next((status for header, status in source.status_by_column if header in names), "")
    ignored = tuple(n or f"(column {i}, no name)" for i, n in enumerate(names, start=1) if i - 1 not in used)
    return ColumnMap(source.name, positions, parts, dict(source.status_words), fixed, ignored)


def _iso_or_empty(text: str) -> str:
    value = text.strip()
    if not value:
        return ""
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return ""
    return value
