"""`digest bounces import PATH`: act on bounces and complaints that arrived after the send.

Parses PATH (a message file, an mbox or a Maildir), calls digest.pipeline.bounces.import_reports
and prints what it did; the rules (what a hard or soft bounce or a complaint does) live there.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..pipeline.bounces import BounceSummary, MailboxError, import_reports
from .base import EXIT_FAILED, EXIT_USAGE, fail, handle_errors, main, one_line, print_json, state


@main.group()
def bounces() -> None:
    """Bounces (DSNs) and spam complaints (ARF) that arrive after the send."""


@bounces.command("import")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def import_command(path: Path, as_json: bool) -> None:
    """Read every report in PATH (one message file, an mbox or a Maildir) and act on it.

    Hard bounces mark the subscriber bounced, complaints mark them complained, soft bounces count
    towards delivery.soft_bounce_limit. Importing the same reports again changes nothing. Exits 1
    when PATH held messages but none was a usable report, 2 when PATH cannot be read.
    """
    if not path.exists():
        fail(f"{path}: no such file or folder (give a message file, an mbox or a Maildir)", EXIT_USAGE)
    try:
        summary = import_reports(state().settings, state().engine, path)
    except MailboxError as exc:
        fail(str(exc), EXIT_USAGE)
    if as_json:
        print_json(summary.as_dict())
    else:
        _print(summary)
    if summary.messages and len(summary.malformed) == summary.messages:
        raise SystemExit(EXIT_FAILED)


def _print(summary: BounceSummary) -> None:
    click.echo(f"{summary.messages} messages: {summary.hard} hard bounces, {summary.soft} soft bounces, "
               f"{summary.delayed} delay warnings, {summary.complaints} complaints, "
               f"{len(summary.unmatched)} unmatched, {len(summary.malformed)} malformed, "
               f"{summary.duplicates} already imported")
    click.echo(f"subscribers now bounced: {summary.bounced}, now complained: {summary.complained}")
    for item in summary.unmatched:
        what = item.message_id or item.recipient or "no Message-ID or recipient"
        click.echo(one_line(f"  unmatched: {item.position}: {what} (no delivery digest sent)"))
    for item in summary.malformed:
        click.echo(one_line(f"  malformed: {item.position}: {item.reason}"))
