"""Use case: a subscriber list imported in two steps, a dry run then "import these": the admin's CSV import
and `digest subscribers import --dry-run`.

Rules that live here:
- nothing is written before staff saw the dry run: what would be added, updated, left unchanged,
  rejected or suppressed, with a reason for every line;
- applying re-runs the dry run and refuses (PlanChanged) when its outcome differs from the one
  staff saw (its `digest`): the store changed in between, so they look again;
- the file is read as UTF-8 (with or without BOM) or, when a byte-order mark says so, UTF-16 (what
  Excel's "Unicode text" writes); anything else is refused with the encoding it most likely is
  (charset-normalizer's guess, shown, never used: a wrong guess would store mangled names);
- an imported subscriber's history says who imported which file, and when (event detail and
  `source`); their consent record is the import's (method "import"), or the opt-in time and IP
  the other tool's export recorded.

Between the two steps the upload is held, decoded to UTF-8, in a private folder (0700, files 0600)
under the system's temporary folder for at most HOLD_HOURS; it is deleted once applied.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import secrets
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from ..config import Settings
from ..listfile import ImportReport, ListFileError, read_list_file
from ..models import Account
from ..private_files import create_private_file, private_folder
from ..store import subscriber_plans
from ..store import subscribers as store
from .audit import record
from .managed import uses_current_settings
from .subscribers import checked_suppression_keys

MAX_BYTES = 20 * 1024 * 1024  # 100,000 rows of a wide export
HOLD_HOURS = 2
OUTCOMES = ("added", "updated", "unchanged", "suppressed", "rejected")
_TOKEN_CHARS = set("0123456789abcdef")


class ImportFileError(ValueError):
    """The upload cannot be read as a list at all; the message says how to fix it. Nothing was stored."""


class PlanChanged(RuntimeError):
    """The dry run's outcome changed since staff saw it; nothing was imported."""


class UploadGone(LookupError):
    """The held upload is no longer waiting: imported (perhaps by a second click), cancelled or expired."""


@dataclass(frozen=True)
class HeldUpload:
    """An uploaded list waiting for "import these": its token, file name, owner and text file."""

    token: str
    filename: str
    owner: str
    path: Path


@dataclass(frozen=True)
class ImportPlan:
    """A dry run: every line's outcome and reason, the counts, and a digest of it all."""

    rows: list[subscriber_plans.PlannedRow]
    counts: dict[str, int]
    source: str  # the tool the export came from ("" for digest's own format)
    ignored_columns: tuple[str, ...]
    digest: str

    @property
    def to_import(self) -> int:
        """Lines the import would write (added, updated, and opt-outs recorded)."""
        return self.counts["added"] + self.counts["updated"] + self.counts["suppressed"]


# --- reading the upload ----------------------------------------------------------------------------

def decode_upload(data: bytes) -> str:
    """The upload's text: UTF-8 (BOM or not) or UTF-16 with a BOM; ImportFileError naming the likely encoding otherwise."""
    if not data.strip():
        raise ImportFileError("The file is empty. Nothing was imported: choose the CSV file exported from your list.")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            raise ImportFileError("The file starts like UTF-16 text but is not: save it again as "
                                  "\"CSV UTF-8\" and import that.") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportFileError(f"The file is not UTF-8 text (line {line}){_guess(data)}. Nothing was imported. "
                              "Save it as \"CSV UTF-8\" (in Excel: Save As, then CSV UTF-8) and import that.") from None


def _guess(data: bytes) -> str:
    from charset_normalizer import from_bytes

    best = from_bytes(data[:200_000]).best()
    if best is None:
        return ""
    name = best.encoding  # Python's codec name: cp1252, latin_1, mac_roman…
    # The exact code page is often a guess among close relatives (1250 or 1252): name the family.
    if name.startswith("cp125"):
        return f": it is probably in a Windows encoding (perhaps Windows-{name[2:]}), as Excel's plain \"CSV\" writes"
    if name.startswith(("latin", "iso8859")):
        return ": it is probably in a Latin (ISO-8859) encoding"
    return f": it may be in {name.replace('_', '-')}"


def _hold_root() -> Path:
    return Path(tempfile.gettempdir()) / f"digest-imports-{getattr(os, 'getuid', lambda: 0)()}"


def hold_upload(data: bytes, filename: str, owner: str) -> HeldUpload:
    """Keep an upload (decoded, as UTF-8) until it is applied; ImportFileError, keeping nothing, if unreadable."""
    if len(data) > MAX_BYTES:
        raise ImportFileError(f"The file is larger than {MAX_BYTES // 1024 // 1024} MiB. Nothing was imported: "
                              "split it and import the parts.")
    text = decode_upload(data)
    root = _hold_root()
    private_folder(root)
    _forget_old(root)
    token = secrets.token_hex(16)
    name = Path(filename.replace("\\", "/")).name[:120] or "upload.csv"
    for suffix, content in ((".csv", text.encode("utf-8")),
                            (".json", json.dumps({"filename": name, "owner": owner}).encode())):
        fd = create_private_file(root / f"{token}{suffix}")
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
    return HeldUpload(token, name, owner, root / f"{token}.csv")


def held_upload(token: str, owner: str) -> HeldUpload | None:
    """The held upload with this token, if it is still held and `owner`'s; None otherwise."""
    if len(token) != 32 or not set(token) <= _TOKEN_CHARS:
        return None
    root = _hold_root()
    try:
        meta = json.loads((root / f"{token}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    path = root / f"{token}.csv"
    if meta.get("owner") != owner or not path.exists():
        return None
    return HeldUpload(token, str(meta.get("filename", "upload.csv")), owner, path)


def drop_upload(held: HeldUpload) -> None:
    """Forget a held upload (applied, or abandoned by staff)."""
    for suffix in (".csv", ".json"):
        (held.path.parent / f"{held.token}{suffix}").unlink(missing_ok=True)


def _forget_old(root: Path) -> None:
    limit = time.time() - HOLD_HOURS * 3600
    for path in root.iterdir():
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
        except OSError:
            continue


# --- the dry run and the import ----------------------------------------------------------------

@uses_current_settings
def plan_import(settings: Settings, engine: Engine, path: Path) -> ImportPlan:
    """The dry run of importing the list file at `path`: what each line would do, changing nothing.

    Raises ImportFileError when the file cannot be used at all (header, CSV), SuppressionKeyMissing
    when an erasure's key is missing.
    """
    keys = checked_suppression_keys(settings, engine)
    try:
        report, rows = read_list_file(path, settings, consent_at=datetime.now(UTC))
    except ListFileError as exc:
        raise ImportFileError(_without_path(str(exc), path)) from None
    try:
        planned = sorted(subscriber_plans.plan_import(engine, rows, keys), key=lambda r: r.line)
    except ListFileError as exc:
        raise ImportFileError(_without_path(str(exc), path)) from None
    counts = Counter(r.outcome for r in planned)
    digest = hashlib.sha256()
    digest.update(path.read_bytes())
    for row in planned:
        digest.update(f"{row.line}\t{row.outcome}\t{row.email}\t{row.reason}\n".encode())
    return ImportPlan(planned, {o: counts.get(o, 0) for o in OUTCOMES}, report.source, report.ignored_columns,
                      digest.hexdigest())


@uses_current_settings
def apply_import(settings: Settings, engine: Engine, held: HeldUpload, expected: str, now: datetime,
                 actor: Account | None = None) -> ImportReport:
    """Import a held upload exactly as its dry run (digest `expected`) showed; PlanChanged when it would differ now.

    The upload is claimed first (renamed), so a second click that arrives meanwhile finds it gone
    (UploadGone) instead of importing it twice. New subscribers' history says who imported which
    file; the upload is deleted once imported, and given back when nothing was imported.
    """
    claimed = held.path.with_name(f"{held.token}.{secrets.token_hex(4)}.claimed")
    try:
        os.rename(held.path, claimed)
    except FileNotFoundError:
        raise UploadGone("This upload is no longer waiting: it was imported or cancelled already.") from None
    try:
        report = _apply(settings, engine, held, claimed, expected, now, actor)
    except BaseException:
        os.rename(claimed, held.path)  # not (fully) imported: a fresh dry run shows what is left
        raise
    claimed.unlink(missing_ok=True)
    drop_upload(held)
    return report


def _apply(settings: Settings, engine: Engine, held: HeldUpload, path: Path, expected: str, now: datetime,
           actor: Account | None) -> ImportReport:
    plan = plan_import(settings, engine, path)
    if plan.digest != expected:
        raise PlanChanged("The list changed since the dry run you saw (someone else changed these subscribers), "
                          "so nothing was imported. Check the new dry run below, then import again.")
    keys = checked_suppression_keys(settings, engine)
    report, rows = read_list_file(path, settings, consent_at=now)
    who = (actor.label if actor is not None else "") or "the command line"
    detail = f"import of {held.filename} by {who}"[:500]
    store.import_rows(engine, rows, keys, report, now=now, source=f"import:{held.filename} by {who}"[:200],
                      detail=detail)
    record(engine, actor, "subscribers.import", target=held.filename,
           detail={"added": report.added, "updated": report.updated, "unchanged": report.unchanged,
                   "suppressed": len(report.suppressed), "rejected": len(report.rejected)}, now=now)
    return report


def _without_path(text: str, path: Path) -> str:
    """A list-file message without the held copy's temporary path (staff know their file by its name)."""
    return text.replace(f"{path}: ", "").replace(str(path), "the file")
