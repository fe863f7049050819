"""`digest series …`: list, add, edit, alias, move, remove, unmatched, rematch.

Each command parses its options, calls one use case of digest.pipeline.series_settings and prints
what it did. When digest.toml lists [[series]], every change is refused (exit 2): the series are
managed there. A command has no page that showed an older version, so its changes apply to the
series as it is when the command runs (still refused if someone changes it in the same instant).
"""

from __future__ import annotations

from datetime import UTC, datetime

import click

from ..pipeline.series_settings import (
    AliasTaken,
    DuplicateSeries,
    InvalidSeries,
    NoSuchSeries,
    SeriesProvisioned,
    StaleSeries,
    add_alias,
    add_series,
    edit_series,
    list_series,
    move_series,
    rematch_items,
    remove_alias,
    remove_series,
    unmatched_categories,
)
from .base import EXIT_USAGE, console, fail, handle_errors, main, one_line, print_json, state

REFUSED = (SeriesProvisioned, DuplicateSeries, InvalidSeries, AliasTaken, NoSuchSeries, StaleSeries)


@main.group()
def series() -> None:
    """The series items are grouped in, when digest.toml lists none: list, add, edit, alias, move, remove."""


def _names(values: tuple[str, ...]) -> dict[str, str]:
    """--name-in LANG=NAME options as {LANG: NAME}; `de=` (empty) removes that language's name."""
    names = {}
    for value in values:
        language, sep, name = value.partition("=")
        if not sep:
            fail(f"--name-in takes LANG=NAME, e.g. --name-in \"de=Sicherheit & Verteidigung\", not {one_line(value)!r}",
                 EXIT_USAGE)
        names[language.strip().lower()] = name
    return names


@series.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the series as JSON (id, name, names, aliases, url, version, source).")
@handle_errors
def list_command(as_json: bool) -> None:
    """Every series in display order, and where it is managed (digest.toml or the store)."""
    entries = list_series(state().settings, state().engine)
    if as_json:
        print_json([{"id": e.series.id, "name": e.series.name, "names": dict(e.series.names),
                     "aliases": list(e.series.aliases), "url": e.series.url, "version": e.version,
                     "source": e.source} for e in entries])
        return
    if not entries:
        console.print("no series yet: add one with `digest series add ID --name NAME`", markup=False)
        return
    for e in entries:
        s = e.series
        extra = "".join(f"\n  {lang}: {one_line(name)}" for lang, name in s.names)
        extra += "".join(f"\n  alias: {one_line(alias)}" for alias in s.aliases)
        click.echo(f"{one_line(s.id)}\t{one_line(s.name)}\t{one_line(s.url) or '-'}\tmanaged in {e.source}{extra}")


@series.command("add")
@click.argument("series_id", metavar="ID")
@click.option("--name", required=True, help="The series' name in the site language, as categories spell it.")
@click.option("--name-in", "names", multiple=True, metavar="LANG=NAME", help="Its name in another language (repeatable).")
@click.option("--alias", "aliases", multiple=True, help="Another spelling of the category that means it (repeatable).")
@click.option("--url", default="", help="The series' page on the website (https://…).")
@handle_errors
def add_command(series_id: str, name: str, names: tuple[str, ...], aliases: tuple[str, ...], url: str) -> None:
    """Add a series to the store; the next fetch matches items to it."""
    try:
        entry = add_series(state().settings, state().engine, series_id, name, names=_names(names), aliases=aliases,
                           url=url)
    except REFUSED as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"added {one_line(entry.series.id)}: {one_line(entry.series.name)}")


@series.command("edit")
@click.argument("series_id", metavar="ID")
@click.option("--name", default=None, help="A new name in the site language (categories spelled the old way stop matching).")
@click.option("--name-in", "names", multiple=True, metavar="LANG=NAME",
              help="Its name in another language (repeatable); LANG= with nothing after removes it.")
@click.option("--url", default=None, help="A new URL for its page; --url '' removes it.")
@handle_errors
def edit_command(series_id: str, name: str | None, names: tuple[str, ...], url: str | None) -> None:
    """Change a series' name, names in other languages or URL (aliases: `digest series alias`)."""
    try:
        entry = edit_series(state().settings, state().engine, series_id, None, name=name,
                            names=_names(names) if names else None, url=url)
    except REFUSED as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"saved {one_line(entry.series.id)} (version {entry.version})")


@series.command("alias")
@click.argument("series_id", metavar="ID")
@click.argument("alias")
@click.option("--remove", is_flag=True, help="Remove this alias instead of adding it.")
@handle_errors
def alias_command(series_id: str, alias: str, remove: bool) -> None:
    """Add (or --remove) a category spelling that means this series; the next fetch matches it."""
    settings, engine = state().settings, state().engine
    try:
        changed = remove_alias(settings, engine, series_id, alias) if remove else \
            add_alias(settings, engine, series_id, alias)
    except REFUSED as exc:
        fail(str(exc), EXIT_USAGE)
    what = f"{'removed' if remove else 'added'} the alias {one_line(alias)!r} {'from' if remove else 'to'} {one_line(series_id)}"
    if not changed:
        what = (f"unchanged: {one_line(series_id)} has no alias {one_line(alias)!r}" if remove
                else f"unchanged: {one_line(series_id)} already matches {one_line(alias)!r}")
    click.echo(what)


@series.command("move")
@click.argument("series_id", metavar="ID")
@click.argument("direction", type=click.Choice(["up", "down"]))
@handle_errors
def move_command(series_id: str, direction: str) -> None:
    """Move a series one place up or down in display order (the order of an edition's sections)."""
    try:
        moved = move_series(state().settings, state().engine, series_id, None, direction)
    except REFUSED as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"moved {one_line(series_id)} {direction}" if moved
               else f"unchanged: {one_line(series_id)} is already {'first' if direction == 'up' else 'last'}")


@series.command("remove")
@click.argument("series_id", metavar="ID")
@handle_errors
def remove_command(series_id: str) -> None:
    """Remove a series: its categories match nothing from the next fetch on; items and past issues stay."""
    try:
        remove_series(state().settings, state().engine, series_id)
    except REFUSED as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"removed {one_line(series_id)} (items and past issues keep it)")


@series.command("unmatched")
@click.option("--weeks", default=8, show_default=True, type=click.IntRange(1, 520),
              help="Look at items first seen in this many weeks.")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON (category, items, suggestion).")
@handle_errors
def unmatched_command(weeks: int, as_json: bool) -> None:
    """The categories of recent items that match no series, with counts and the series each nearly spells."""
    found = unmatched_categories(state().settings, state().engine, datetime.now(UTC), weeks)
    if as_json:
        print_json([{"category": c.category, "items": c.items, "suggestion": c.suggestion or None}
                    for c in found.categories])
        return
    if not found.categories:
        console.print(f"every category of the last {weeks} weeks matches a series", markup=False)
    for c in found.categories:
        hint = f"\tdid you mean {one_line(c.suggestion)}? `digest series alias {c.suggestion} '…'`" if c.suggestion else ""
        click.echo(f"{c.items}\t{one_line(c.category)}{hint}")
    if found.more:
        click.echo(f"… and {found.more} more")


@series.command("rematch")
@click.option("--weeks", default=8, show_default=True, type=click.IntRange(1, 520),
              help="Match the items first seen in this many weeks.")
@handle_errors
def rematch_command(weeks: int) -> None:
    """Match stored items to today's series and aliases again (a fetch only matches the items it stores)."""
    changed = rematch_items(state().settings, state().engine, datetime.now(UTC), weeks)
    click.echo(f"{changed} item{'' if changed == 1 else 's'} now in other series")
