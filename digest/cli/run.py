"""`digest run` (the scheduler), `digest status` and `digest admin hash-password`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import find_config
from ..passwords import hash_password
from ..pipeline.sending import check_signing
from ..pipeline.status import IssueFigures, Status, collect_status, status_as_dict
from ..schedule import RunOptions, run_scheduler
from ..timetable import check_schedule
from .base import EXIT_OK, EXIT_USAGE, fail, handle_errors, main, one_line, print_json, state

When = Callable[[datetime | None], str]  # an instant as the site's local time, "—" for none


@main.command("run")
@click.option("--lease-seconds", type=click.FloatRange(min=2), default=60.0, show_default=True,
              help="How long the scheduler lock lasts without renewal (SQLite lease; renewed every third of it).")
@click.option("--standby-check-seconds", type=click.FloatRange(min=0.5), default=10.0, show_default=True,
              help="How often a standby scheduler tries to take over.")
@handle_errors
def run_command(lease_seconds: float, standby_check_seconds: float) -> None:
    """Run the scheduler: fetch, build, tell staff and send on schedule, until stopped (Ctrl-C or SIGTERM)."""
    settings = state().settings
    check_schedule(settings)
    check_signing(settings)
    # Open (and migrate) the store now, so a bad store.url exits 2 here; the scheduler opens its own.
    state().engine.dispose()
    _configure_logging()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    config_path = str(find_config(state().config_path).resolve())
    run_scheduler(config_path, stop, RunOptions(lease_seconds, standby_check_seconds))
    logging.getLogger("digest.schedule").info("scheduler stopped")
    sys.exit(EXIT_OK)


def _configure_logging() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler's own INFO lines repeat ours; keep its warnings (missed run times) and errors.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@main.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
@click.option("--runs", type=click.IntRange(min=0), default=10, show_default=True,
              help="How many run-log notes to show.")
@handle_errors
def status_command(as_json: bool, runs: int) -> None:
    """Show next runs, the last build, the current draft and its approval, the last sent issue, feed health and run notes."""
    status = collect_status(state().settings, state().engine, datetime.now(UTC), runs=runs)
    if as_json:
        print_json(status_as_dict(status))
    else:
        print_status(status, state().settings.site.tz)
    sys.exit(EXIT_OK)


def print_status(status: Status, tz: tzinfo) -> None:
    """The human-readable `digest status`; feed messages and subjects quote outside text (one_line)."""
    out = Console(highlight=False, soft_wrap=True)

    def when(instant: datetime | None) -> str:
        return "—" if instant is None else instant.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")

    holder = one_line(status.scheduler) if status.scheduler else "none active (`digest run` starts one)"
    out.print(Text(f"scheduler: {holder}"))
    for problem in status.problems:
        out.print(Text(f"problem: {problem}", style="red"))
    out.print(Text("next runs", style="bold"))
    for run in status.next_runs:
        late = " (overdue: runs when `digest run` starts)" if run.overdue else ""
        out.print(Text(f"  {run.job:<6} {when(run.at)}  [{run.source}]{late}"))
    build = status.last_build
    out.print(Text("last build", style="bold"))
    out.print(Text(f"  {when(build.at)}  {build.outcome}  {one_line(build.detail)}" if build else "  none yet"))
    _print_issue(out, "current draft", status.draft, when)
    _print_issue(out, "last sent issue", status.last_sent, when)
    out.print(_feed_table(status, when))
    out.print(Text("recent runs", style="bold"))
    if not status.runs:
        out.print(Text("  none yet"))
    for note in status.runs:
        out.print(Text(f"  {when(note.at)}  {note.job:<6} {note.outcome:<10} {one_line(note.detail)}"))


def _print_issue(out: Console, title: str, figures: IssueFigures | None, when: When) -> None:
    out.print(Text(title, style="bold"))
    if figures is None:
        out.print(Text("  none"))
        return
    issue = figures.issue
    out.print(Text(f"  #{issue.number} {issue.status}  window {when(issue.window_start)} → {when(issue.window_end)}"))
    if issue.subject:
        out.print(Text(f"  subject: {one_line(issue.subject)}"))
    if issue.approved_at:
        out.print(Text(f"  approved by {one_line(issue.approved_by or '?')} at {when(issue.approved_at)} "
                       f"(version {(issue.approved_version or '')[:12]})"))
    elif issue.status == "draft":
        out.print(Text("  waiting for approval"))
    if issue.send_at:
        out.print(Text(f"  send at {when(issue.send_at)}"))
    if issue.sent_at:
        out.print(Text(f"  sent at {when(issue.sent_at)}"))
    counts = {k: v for k, v in figures.deliveries.items() if v}
    if counts:
        out.print(Text("  deliveries: " + ", ".join(f"{k} {v}" for k, v in counts.items())))


def _feed_table(status: Status, when: When) -> Table:
    table = Table(title="feeds", title_justify="left", show_edge=False, pad_edge=False)
    for column in ("feed", "last status", "last success", "last error", "failures", "message"):
        table.add_column(column, overflow="fold")
    for feed in status.feeds:
        style = "red" if feed.consecutive_failures else ""
        table.add_row(Text(one_line(feed.name)), Text(feed.last_status or "never fetched", style=style),
                      when(feed.last_success_at), when(feed.last_error_at),
                      Text(str(feed.consecutive_failures), style=style), Text(one_line(feed.last_message)[:200]))
    return table

@main.group("admin")
def admin_group() -> None:
    """Administration helpers for the web app."""


@admin_group.command("hash-password")
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from the first line of standard input.")
def hash_password_command(from_stdin: bool) -> None:
    """Print an scrypt hash of a new admin password for web.admin_password_hash or DIGEST_ADMIN_PASSWORD_HASH."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("admin password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        fail("the admin password must have at least 8 characters", EXIT_USAGE)
    click.echo(hash_password(password))
