"""Use case: the settings in force now — digest.toml's, with what the store manages in place.

Feeds, series, schedule and branding each have one source of truth (README, "Where settings
live"): a section digest.toml defines is provisioned (read-only in the admin and
CLI); a section it leaves out lives in the store and is edited in the admin and with the CLI.
Feeds are read by digest.pipeline.ingest at each fetch; series, schedule and branding come from
`current_settings`, which the use cases reading them call on entry (`uses_current_settings`). Each
call reads the store afresh (two small queries), so an edit reaches every running process — serve,
run, workers — at its next use, without a restart.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import fields, replace
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine

from ..config import MANAGEABLE, Settings
from ..store.managed_settings import managed_sections
from ..store.series_sources import stored_series

P = ParamSpec("P")
R = TypeVar("R")


def provisioned(settings: Settings, section: str) -> bool:
    """True when digest.toml defines `section` (feeds, series, schedule, branding): then only the file changes it.

    A list given to Settings directly (as tests and scripts do) counts as provisioned too, unless
    current_settings put it there from the store.
    """
    given = section in ("feeds", "series") and bool(getattr(settings, section)) and not settings.store_applied
    return section in settings.provisioned or given


def current_settings(settings: Settings, engine: Engine) -> Settings:
    """`settings` with the store's series, schedule and branding wherever digest.toml leaves them to the store.

    Idempotent. A store-managed section the store holds nothing for keeps its defaults (no series,
    the default schedule and branding): a site configured only by digest.toml behaves exactly as before.
    """
    if settings.store_applied:
        return settings
    # Lists given to Settings directly count as provisioned: say so for good, before the store's fill them.
    given = frozenset(section for section in MANAGEABLE if provisioned(settings, section))
    changes: dict[str, Any] = {"store_applied": True, "provisioned": settings.provisioned | given}
    if not provisioned(settings, "series"):
        series = stored_series(engine)
        if series:
            changes["series"] = series
    sections = managed_sections(engine)
    for section in ("schedule", "branding"):
        if section in sections and not provisioned(settings, section):
            changes[section] = _with_values(getattr(settings, section), sections[section])
    return replace(settings, **changes)


def _with_values(current: Any, values: dict[str, Any]) -> Any:
    """`current` (a settings dataclass) with the stored values of its own fields; others are ignored (an older version's)."""
    known = {f.name for f in fields(current)}
    return replace(current, **{key: value for key, value in values.items() if key in known})


def uses_current_settings(use_case: Callable[P, R]) -> Callable[P, R]:
    """Decorate a use case whose first two arguments are (settings, engine): it gets current_settings(settings, engine)."""
    @functools.wraps(use_case)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        settings, engine, *rest = args
        return use_case(current_settings(settings, engine), engine, *rest, **kwargs)  # type: ignore[arg-type]
    return wrapper
