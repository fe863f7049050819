"""Use case: the audit trail. Every state change, with who, when and what; read, filtered, exported.

Rules that live here and nowhere else:
- the use cases that change state call `record` (builds, edits, approvals, sends, cancellations,
  schedules; account and settings changes; subscriber imports and erasures; API tokens);
- who: the staff account ("Eda <eda@example.org>", kept as it was even after the account goes),
  or, without one, where the change came from: "scheduler", "command line (login)", the shared
  password's typed name;
- the trail is appended to, never changed; reading it is an editor's right ("read reports");
- exports are CSV (cells that a spreadsheet would run as a formula are quoted with ') or JSON.
"""

from __future__ import annotations

import csv
import getpass
import io
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine

from ..models import Account, Role
from ..store import audit as audit_store

PER_PAGE = 50
MAX_PER_PAGE = 500
SCHEDULER = Account(email="", role=Role.ADMIN, name="scheduler")
# What counts as editing an issue, for the four-eyes rule (review.require_second_person).
EDITS = ("issue.edit", "issue.rebuild")
EXPORT_FIELDS = ("at", "actor", "actor_email", "action", "issue", "target", "detail")


def command_line() -> Account:
    """The actor of a command run on the server without `--as`: the operating-system login."""
    try:
        login = getpass.getuser()
    except (OSError, KeyError):
        login = "unknown"
    return Account(email="", role=Role.ADMIN, name=f"command line ({login})")


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    actor: str
    actor_email: str
    action: str
    issue_number: int | None = None
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at.isoformat(), "actor": self.actor, "actor_email": self.actor_email,
                "action": self.action, "issue": self.issue_number, "target": self.target, "detail": self.detail}


@dataclass(frozen=True)
class AuditPage:
    entries: list[AuditEntry]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def record(engine: Engine, actor: Account | None, action: str, *, issue_number: int | None = None,
           target: str = "", detail: dict[str, Any] | None = None, now: datetime | None = None) -> None:
    """Append one change to the trail; `actor` None is the command line."""
    who = actor or command_line()
    audit_store.add_event(engine, now or datetime.now(UTC), who.label, who.email,
                          action, issue_number, target[:500], detail or {})


def audit_trail(engine: Engine, issue_number: int | None = None, person: str | None = None, page: int = 1,
                per_page: int = PER_PAGE) -> AuditPage:
    """One page of the trail, newest first, filtered by issue and/or a person's email address."""
    per_page = min(max(1, per_page), MAX_PER_PAGE)
    page = max(1, page)
    person = (person or "").strip().lower() or None
    rows = audit_store.list_events(engine, issue_number, person, per_page, (page - 1) * per_page)
    return AuditPage([_entry(r) for r in rows], audit_store.count_events(engine, issue_number, person), page, per_page)


def last_editor(engine: Engine, issue_number: int, actions: tuple[str, ...] = EDITS) -> str:
    """Who made the newest of `actions` to an issue: their email address, else their name; '' for nobody."""
    row = audit_store.latest(engine, issue_number, actions)
    return (row.actor_email or row.actor) if row is not None else ""


def people(engine: Engine) -> list[tuple[str, str]]:
    """(email, label) of every account that appears in the trail, for the filter."""
    return audit_store.actors(engine)


def export_audit(engine: Engine, fmt: str, issue_number: int | None = None, person: str | None = None) -> str:
    """The whole (filtered) trail as CSV or JSON text; ValueError for another format."""
    person = (person or "").strip().lower() or None
    entries = [_entry(r) for r in audit_store.list_events(engine, issue_number, person, limit=None)]
    if fmt == "json":
        return json.dumps([e.as_dict() for e in entries], ensure_ascii=False, indent=2) + "\n"
    if fmt != "csv":
        raise ValueError(f"{fmt!r} is not an export format: use csv or json")
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_FIELDS)
    for e in entries:
        row = e.as_dict()
        row["detail"] = json.dumps(row["detail"], ensure_ascii=False, sort_keys=True) if row["detail"] else ""
        writer.writerow([_cell(row[f]) for f in EXPORT_FIELDS])
    return out.getvalue()


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    # A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _entry(row: Any) -> AuditEntry:
    return AuditEntry(at=row.at, actor=row.actor, actor_email=row.actor_email, action=row.action,
                      issue_number=row.issue_number, target=row.target, detail=dict(row.detail or {}))
