"""Use case: subscribers. Imports, staff changes, sign-up, confirmation, preferences and unsubscribing.

Rules that live here and nowhere else:
- an address that was erased is never added again by an import (its suppression hash is checked);
- an import needs the suppression key before it stores anything.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine

from ..config import Settings
from ..store.subscribers import import_rows
from ..subscribers import ImportReport, read_list_file
from ..tokens import checked_suppression_keys


def import_subscribers(settings: Settings, engine: Engine, path: Path) -> ImportReport:
    """Sync a subscriber list file into the store; returns its ImportReport (never re-adds the suppressed).

    Raises ListFileError when the file cannot be read as a list, SuppressionKeyMissing (before
    anything is stored) when an erasure's key is missing; adopts pre-0002 erasures on the way.
    """
    keys = checked_suppression_keys(settings, engine)
    report, rows = read_list_file(path, settings, consent_at=datetime.now(UTC))
    import_rows(engine, rows, keys, report, source=f"import:{path.name}"[:200])
    return report
