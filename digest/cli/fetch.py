"""`digest fetch`: fetch, parse and store every feed; a progress bar, then one line per feed.

The feeds are digest.toml's [[feeds]], or, when it lists none, the store's (`digest feeds …`)."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ..models import FeedStatus, FetchReport
from ..pipeline.ingest import NO_FEEDS, fetch_all
from .base import EXIT_FAILED, EXIT_OK, EXIT_USAGE, console, fail, handle_errors, main, one_line, state

STATUS_STYLE = {FeedStatus.OK: "green", FeedStatus.WARNING: "yellow", FeedStatus.ERROR: "bold red",
                FeedStatus.NOT_MODIFIED: "dim"}


@main.command("fetch")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object per feed per line (name, url, status, items, new, updated, message).")
@handle_errors
def fetch_command(as_json: bool) -> None:
    """Fetch every feed (digest.toml's, else the store's unpaused ones) and store its items; exit 1 if any feed failed."""
    settings = state().settings
    engine = state().engine
    with Progress(TextColumn("fetching"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task("", total=None)
        reports = fetch_all(settings, engine, started=lambda count: bar.update(task, total=count),
                            progress=lambda r: bar.update(task, advance=1, description=one_line(r.feed)))
    if not reports:
        fail(NO_FEEDS, EXIT_USAGE)
    if as_json:
        for report in reports:
            click.echo(json.dumps(report_json(report), ensure_ascii=False))
    else:
        _print_table(reports)
    sys.exit(EXIT_FAILED if any(r.status == FeedStatus.ERROR for r in reports) else EXIT_OK)


def report_json(report: FetchReport) -> dict:
    """One feed's outcome as the `--json` line (and the build manifest's feeds entry)."""
    return {"name": report.feed, "url": report.url, "status": report.status.value, "items": report.items,
            "new": report.new, "updated": report.updated, "message": report.message}


def _print_table(reports: list[FetchReport]) -> None:
    table = Table(show_edge=False, pad_edge=False)
    for column, justify in (("feed", "left"), ("status", "left"), ("items", "right"), ("new", "right"),
                            ("updated", "right"), ("message", "left")):
        table.add_column(column, justify=justify, overflow="fold")
    for r in reports:
        table.add_row(Text(one_line(r.feed)), Text(r.status.value, style=STATUS_STYLE[r.status]), str(r.items),
                      str(r.new), str(r.updated), Text(one_line(r.message)))
    # On a terminal long messages wrap; piped or redirected, each feed stays on one line for scripts.
    Console(highlight=False, soft_wrap=False, width=None if sys.stdout.isatty() else 10_000).print(table)
    failed = sum(r.status == FeedStatus.ERROR for r in reports)
    new = sum(r.new for r in reports)
    summary = (f"{len(reports)} feed{'s' * (len(reports) != 1)}, {new} new item{'s' * (new != 1)}"
               + (f", {failed} failed" if failed else ""))
    console.print(Text(summary, style="bold red" if failed else "bold"))
