"""Use case: the series, from one source of truth. List, add, edit (name, names per language, aliases,
URL), move up or down, remove; the categories that matched no series lately; the store's series as TOML.

The rule: when digest.toml lists [[series]], they are provisioned — listed here, and every change is
refused with SeriesProvisioned. When it lists none, the series live in the store (table
series_sources) and these use cases change them; every use case that reads series gets the store's
through digest.pipeline.managed.current_settings, so the next fetch, build or send of every running
process matches and shows them without a restart.

Conflicts: each series has a version. An edit, a move and a removal name the version the page (or
command) saw, and are refused with StaleSeries when someone changed the series since — nothing is
overwritten. Adding one alias is the exception: it adds to whatever aliases the series has then, so
it cannot undo anyone's change and carries no version. A name or alias that would also match another
series (digest.series_fields.clash: the matching stage's own comparison) is refused naming that series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from ..config import Settings
from ..models import Account, Series
from ..series import NEAR_MISS_SCORE, match_series, series_key
from ..series_fields import AliasTaken, InvalidSeries, clash, make_series, text_field
from ..store import series_sources as store
from ..store.series_sources import DuplicateSeries, NoSuchSeries, StaleSeries
from ..toml_text import toml_string
from .audit import command_line, record

SOURCE_TOML, SOURCE_STORE = "digest.toml", "store"
UNMATCHED_WEEKS = 8
MAX_UNMATCHED_SHOWN = 100
PROVISIONED = ("series are managed in digest.toml ([[series]] tables): change them there, or remove every "
               "[[series]] table from it to manage series with `digest series …` and the admin")

__all__ = ["AliasTaken", "DuplicateSeries", "InvalidSeries", "NoSuchSeries", "SeriesProvisioned", "StaleSeries"]


class SeriesProvisioned(Exception):
    """digest.toml lists the series, so they cannot be changed here."""

    def __init__(self) -> None:
        super().__init__(PROVISIONED)


@dataclass(frozen=True)
class SeriesEntry:
    series: Series
    version: int  # 0 for digest.toml's
    source: str  # SOURCE_TOML or SOURCE_STORE
    updated_at: datetime | None = None
    updated_by: str = ""


@dataclass(frozen=True)
class UnmatchedCategory:
    category: str  # its most frequent spelling
    items: int  # items first seen in the window that carry it
    suggestion: str = ""  # the id of the series it nearly spells, else ""
    suggestion_name: str = ""


@dataclass(frozen=True)
class Unmatched:
    categories: list[UnmatchedCategory]  # near misses first, then the most frequent
    more: int  # how many more were left out
    since: datetime


def provisioned(settings: Settings) -> bool:
    """True when digest.toml lists the series (then nothing here may change them).

    Series put in place from the store by current_settings (store_applied) do not count.
    """
    return "series" in settings.provisioned or (bool(settings.series) and not settings.store_applied)


def _refuse_if_provisioned(settings: Settings) -> None:
    if provisioned(settings):
        raise SeriesProvisioned


def _by(actor: Account | None) -> str:
    return (actor or command_line()).label[:500]


def list_series(settings: Settings, engine: Engine) -> list[SeriesEntry]:
    """Every series, in display order, with where it is managed (and, from the store, its version)."""
    if provisioned(settings):
        return [SeriesEntry(s, 0, SOURCE_TOML) for s in settings.series]
    return [SeriesEntry(row.series, row.version, SOURCE_STORE, row.updated_at, row.updated_by)
            for row in store.stored_series_rows(engine)]


def add_series(settings: Settings, engine: Engine, series_id: str, name: str, *,
               names: Mapping[str, str] | None = None, aliases: Sequence[str] = (), url: str = "",
               now: datetime | None = None, actor: Account | None = None) -> SeriesEntry:
    """Store a new series after the others; a taken id, or a name or alias of another series, is refused.

    `actor` (here and below): who asks, for the audit trail; None is the command line.
    """
    _refuse_if_provisioned(settings)
    now = now or datetime.now(UTC)
    series = make_series(series_id, name, names, aliases, url)
    existing = store.stored_series(engine)
    if any(s.id == series.id for s in existing):
        raise DuplicateSeries(f"there is already a series with the id {series.id!r}; choose another id")
    clash(series, existing)
    row = store.insert_series(engine, series, now, _by(actor))
    record(engine, actor, "series.add", target=series.id, detail={"name": series.name}, now=now)
    return SeriesEntry(series, row.version, SOURCE_STORE, now, row.updated_by)


def edit_series(settings: Settings, engine: Engine, series_id: str, version: int | None, *,
                name: str | None = None, names: Mapping[str, str] | None = None,
                aliases: Sequence[str] | None = None, url: str | None = None,
                now: datetime | None = None, actor: Account | None = None) -> SeriesEntry:
    """Change a series' name, names per language, aliases or URL (None leaves a field as it is).

    `version`: the one the page showed (StaleSeries if it changed since); None, from the command
    line, means the current one. `names` replaces the languages it holds; an empty name removes one.
    """
    _refuse_if_provisioned(settings)
    now = now or datetime.now(UTC)
    rows = store.stored_series_rows(engine)
    current = _find(rows, series_id)
    seen = current.version if version is None else version
    old = current.series
    new_names = dict(old.names)
    if names is not None:
        new_names.update(names)
    series = make_series(old.id, old.name if name is None else name, new_names,
                         old.aliases if aliases is None else aliases, old.url if url is None else url)
    clash(series, [r.series for r in rows])
    changed = sorted(field for field in ("name", "names", "aliases", "url")
                     if getattr(series, field) != getattr(old, field))
    if not changed:
        if seen != current.version:
            raise StaleSeries(store.STALE.format(id=series_id))
        return SeriesEntry(old, current.version, SOURCE_STORE, current.updated_at, current.updated_by)
    new_version = store.update_series(engine, series, seen, now, _by(actor))
    record(engine, actor, "series.edit", target=series.id,
           detail={"changed": changed, **({"from_name": old.name} if "name" in changed else {})}, now=now)
    return SeriesEntry(series, new_version, SOURCE_STORE, now, _by(actor))


def _find(rows: Sequence[store.StoredSeries], series_id: str) -> store.StoredSeries:
    for row in rows:
        if row.series.id == series_id:
            return row
    raise NoSuchSeries(f"there is no series with the id {series_id!r}; `digest series list` shows the ids")


def add_alias(settings: Settings, engine: Engine, series_id: str, alias: str, now: datetime | None = None,
              actor: Account | None = None) -> bool:
    """Add one alias to a series (the next fetch matches it); False when the series already matches it.

    Refused (AliasTaken) when the alias already matches another series, naming it.
    """
    _refuse_if_provisioned(settings)
    now = now or datetime.now(UTC)
    cleaned = text_field(alias, "the alias")
    for _ in range(3):  # another change landing between our read and write: read again, add again
        rows = store.stored_series_rows(engine)
        current = _find(rows, series_id)
        if match_series([cleaned], [current.series]):
            return False
        series = replace(current.series, aliases=(*current.series.aliases, cleaned))
        make_series(series.id, series.name, dict(series.names), series.aliases, series.url)  # the alias cap
        clash(series, [r.series for r in rows])
        try:
            store.update_series(engine, series, current.version, now, _by(actor))
        except StaleSeries:
            continue
        record(engine, actor, "series.alias", target=series_id, detail={"alias": cleaned}, now=now)
        return True
    raise StaleSeries(store.STALE.format(id=series_id))


def remove_alias(settings: Settings, engine: Engine, series_id: str, alias: str, version: int | None = None,
                 now: datetime | None = None, actor: Account | None = None) -> bool:
    """Remove an alias (compared as the matching stage compares); False when the series has no such alias."""
    _refuse_if_provisioned(settings)
    current = _find(store.stored_series_rows(engine), series_id)
    key = series_key(alias)
    kept = [a for a in current.series.aliases if series_key(a) != key]
    if len(kept) == len(current.series.aliases):
        return False
    edit_series(settings, engine, series_id, current.version if version is None else version, aliases=kept,
                now=now, actor=actor)
    return True


def move_series(settings: Settings, engine: Engine, series_id: str, version: int | None, direction: str,
                now: datetime | None = None, actor: Account | None = None) -> bool:
    """Move a series one place "up" or "down" in display order; False when it is already first or last."""
    _refuse_if_provisioned(settings)
    if direction not in ("up", "down"):
        raise InvalidSeries(f"move a series \"up\" or \"down\", not {direction[:20]!r}")
    now = now or datetime.now(UTC)
    seen = store.current_version(engine, series_id) if version is None else version
    moved = store.move_series(engine, series_id, seen, -1 if direction == "up" else 1, now, _by(actor))
    if moved:
        record(engine, actor, "series.move", target=series_id, detail={"direction": direction}, now=now)
    return moved


def remove_series(settings: Settings, engine: Engine, series_id: str, version: int | None = None,
                  actor: Account | None = None) -> None:
    """Remove a series: its categories match nothing from the next fetch on. Stored items, past issues
    and subscribers' choices keep its id; no new items come under it."""
    _refuse_if_provisioned(settings)
    seen = store.current_version(engine, series_id) if version is None else version
    store.delete_series(engine, series_id, seen)
    record(engine, actor, "series.remove", target=series_id)


def unmatched_categories(settings: Settings, engine: Engine, now: datetime, weeks: int = UNMATCHED_WEEKS,
                         limit: int = MAX_UNMATCHED_SHOWN) -> Unmatched:
    """The categories of items first seen in the last `weeks` that match none of today's series, with
    how many items carry each, and the series each nearly spells (the fetch's near-miss scorer).

    Compared with today's series, not the ones in force at the fetch: a category gets off this list
    as soon as it is added as an alias.
    """
    since = now - timedelta(weeks=weeks)
    series = [entry.series for entry in list_series(settings, engine)]
    counts: Counter[str] = Counter()
    spellings: dict[str, Counter[str]] = {}
    matched: dict[str, bool] = {}
    for categories in store.categories_since(engine, since):
        for k, text in {series_key(c): c for c in categories if c.strip()}.items():
            if k not in matched:
                matched[k] = bool(match_series([text], series))
            if matched[k]:
                continue
            counts[k] += 1
            spellings.setdefault(k, Counter())[" ".join(text.split())] += 1
    suggest = _suggester(series)
    found = [UnmatchedCategory(spellings[k].most_common(1)[0][0], n, *suggest(k)) for k, n in counts.items()]
    found.sort(key=lambda c: (not c.suggestion, -c.items, c.category.casefold()))
    return Unmatched(found[:limit], max(0, len(found) - limit), since)


def _suggester(series: Sequence[Series]) -> Callable[[str], tuple[str, str]]:
    """key -> (id, name) of the series whose name or alias it nearly spells, else ("", ""): the fetch's
    near-miss rule (digest.series.near_misses: rapidfuzz's ratio on comparison forms, NEAR_MISS_SCORE)."""
    names = {series_key(name): s for s in series for name in (s.name, *s.aliases)}
    names.pop("", None)
    choices = list(names)
    from rapidfuzz import fuzz, process  # as digest.series: few pages need it

    def suggest(key: str) -> tuple[str, str]:
        best = process.extractOne(key, choices, scorer=fuzz.ratio, score_cutoff=NEAR_MISS_SCORE) if choices else None
        return (names[best[0]].id, names[best[0]].name) if best else ("", "")

    return suggest


def rematch_items(settings: Settings, engine: Engine, now: datetime, weeks: int = UNMATCHED_WEEKS,
                  actor: Account | None = None) -> int:
    """Match the items first seen in the last `weeks` against today's series again; how many changed.

    A fetch matches the items it stores; this is for items stored before an alias was added. Issues
    already built keep their sections until they are rebuilt.
    """
    series = [entry.series for entry in list_series(settings, engine)]
    changes = {}
    for item_id, categories, old in store.items_for_matching(engine, now - timedelta(weeks=weeks)):
        new = list(match_series(categories, series))
        if new != old:
            changes[item_id] = new
    if changes:
        store.set_item_series(engine, changes)
        record(engine, actor, "series.rematch", detail={"items": len(changes), "weeks": weeks}, now=now)
    return len(changes)


def series_as_toml(settings: Settings, engine: Engine) -> str:
    """The store's series as [[series]] tables, in the form digest.toml accepts (`digest config export`)."""
    if provisioned(settings):
        return "# Series are managed in digest.toml ([[series]]): none are managed in the store.\n"
    entries = list_series(settings, engine)
    if not entries:
        return "# No series in the store.\n"
    lines = []
    for entry in entries:
        s = entry.series
        lines += ["[[series]]", f"id = {toml_string(s.id)}", f"name = {toml_string(s.name)}"]
        if s.aliases:
            lines.append(f"aliases = [{', '.join(toml_string(a) for a in s.aliases)}]")
        if s.url:
            lines.append(f"url = {toml_string(s.url)}")
        if s.names:
            lines.append("names = {" + ", ".join(f"{lang} = {toml_string(n)}" for lang, n in s.names) + "}")
        lines.append("")
    return "\n".join(lines)
