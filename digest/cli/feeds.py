"""`digest feeds …` (list, add, pause, resume, rename, remove, import, export) and `digest config export`.

Each command parses its options, calls one use case of digest.pipeline.feeds and prints what it
did. When digest.toml lists [[feeds]], every change is refused (exit 2): the feeds are managed there.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import click
from rich.markup import escape

from ..feed_fields import KINDS
from ..pipeline.feeds import (
    DuplicateFeed,
    FeedsProvisioned,
    InvalidFeed,
    NoSuchFeed,
    OpmlError,
    add_feed,
    export_config,
    export_opml,
    import_opml,
    list_feeds,
    pause_feed,
    remove_feed,
    rename_feed,
    resume_feed,
    try_feed,
)
from .base import EXIT_FAILED, EXIT_USAGE, console, fail, handle_errors, main, one_line, print_json, state

REFUSED = (FeedsProvisioned, DuplicateFeed, InvalidFeed, NoSuchFeed, OpmlError)


@main.group()
def feeds() -> None:
    """The feeds fetched, when digest.toml lists none: list, add, pause, resume, rename, remove, OPML."""


@feeds.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the feeds as JSON (name, url, kind, language, paused, source).")
@handle_errors
def list_command(as_json: bool) -> None:
    """Every feed, paused ones too, and where it is managed (digest.toml or the store)."""
    entries = list_feeds(state().settings, state().engine)
    if as_json:
        print_json([{"name": e.feed.name, "url": e.feed.url, "kind": e.feed.kind.value, "language": e.feed.language,
                     "paused": e.paused, "source": e.source} for e in entries])
        return
    if not entries:
        console.print("no feeds yet: add one with `digest feeds add URL --name NAME --kind KIND`", markup=False)
        return
    for e in entries:
        flags = ", ".join(x for x in (e.feed.kind.value, e.feed.language or "", "paused" if e.paused else "",
                                      f"managed in {e.source}") if x)
        click.echo(f"{one_line(e.feed.name)}\t{one_line(e.feed.url)}\t{flags}")


@feeds.command("add")
@click.argument("url")
@click.option("--name", required=True, help="The feed's name (unique; shown in reports).")
@click.option("--kind", type=click.Choice(KINDS), default="brief", show_default=True,
              help="What its items are.")
@click.option("--language", default=None, help="Two-letter language of its items (e.g. de); default: detected.")
@click.option("--check", is_flag=True, help="Fetch and parse it once first; save it only if that works.")
@handle_errors
def add_command(url: str, name: str, kind: str, language: str | None, check: bool) -> None:
    """Add a feed to the store; it is fetched from the next fetch on."""
    settings, engine = state().settings, state().engine
    try:
        if check:
            trial = try_feed(settings, engine, name, url, kind, language)
            if not trial.ok:
                fail(f"the test fetch of {url} failed, nothing was saved: {trial.reason}", EXIT_FAILED)
            console.print(f"test fetch: {trial.items} items" + "".join(f"; warning: {w}" for w in trial.warnings),
                          markup=False)
        feed = add_feed(settings, engine, name, url, kind, language, datetime.now(UTC))
    except REFUSED as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(f"added {one_line(feed.name)} ({feed.kind.value}): {one_line(feed.url)}")


def _change(action: str, func: Callable[..., object], *args: str) -> None:
    try:
        changed = func(state().settings, state().engine, *args)
    except REFUSED as exc:
        fail(str(exc), EXIT_USAGE)
    click.echo(action if changed is not False else f"unchanged: {action} already")


@feeds.command("pause")
@click.argument("name")
@handle_errors
def pause_command(name: str) -> None:
    """Stop fetching a feed until it is resumed (its items stay)."""
    _change(f"paused {one_line(name)}", pause_feed, name)


@feeds.command("resume")
@click.argument("name")
@handle_errors
def resume_command(name: str) -> None:
    """Fetch a paused feed again."""
    _change(f"resumed {one_line(name)}", resume_feed, name)


@feeds.command("rename")
@click.argument("name")
@click.argument("new_name")
@handle_errors
def rename_command(name: str, new_name: str) -> None:
    """Give a feed a new name; its fetch state and stored items follow."""
    _change(f"renamed {one_line(name)} to {one_line(new_name)}", rename_feed, name, new_name)


@feeds.command("remove")
@click.argument("name")
@handle_errors
def remove_command(name: str) -> None:
    """Stop fetching a feed for good; its items and past issues stay."""
    _change(f"removed {one_line(name)} (its items and past issues stay)", remove_feed, name)


@feeds.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@handle_errors
def import_command(file: Path) -> None:
    """Add the feeds of an OPML file; bad or duplicate outlines are listed by line (exit 1), the rest added."""
    data = file.read_bytes()
    try:
        result = import_opml(state().settings, state().engine, data, datetime.now(UTC))
    except REFUSED as exc:
        fail(f"{file}: {exc}", EXIT_USAGE)
    for feed in result.added:
        click.echo(f"added {one_line(feed.name)} ({feed.kind.value}): {one_line(feed.url)}")
    for problem in result.problems:
        console.print(f"[yellow]skipped[/] {escape(one_line(problem))}", soft_wrap=True)
    click.echo(f"{len(result.added)} added, {len(result.problems)} skipped")
    if result.problems:
        sys.exit(EXIT_FAILED)


@feeds.command("export")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@handle_errors
def export_command(output: Path | None) -> None:
    """Every feed as an OPML 2.0 file (digest's kind in the digest: namespace)."""
    text = export_opml(state().settings, state().engine, datetime.now(UTC))
    if output:
        output.write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


@main.group("config")
def config_group() -> None:
    """The settings managed in the store."""


@config_group.command("export")
@handle_errors
def config_export_command() -> None:
    """Print the store-managed settings (feeds, for now) as TOML that digest.toml accepts."""
    click.echo(export_config(state().settings, state().engine), nl=False)
