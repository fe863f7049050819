"""`digest build`, `digest approve` and the editorial commands (`digest issue …`)."""

from __future__ import annotations

import functools
import getpass
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

import click

from ..compose import EditorialError, parse_instant
from ..pipeline.accounts import AccountError, NotAllowed, command_line_actor
from ..pipeline.issues import (
    IssueSummary,
    approve_issue,
    build_issue,
    build_notes,
    cancel_issue,
    edit_issue,
    edition_notes,
    get_issue,
    issue_manifest,
    list_issues,
)
from ..render import RenderError
from ..store.issues import IssueNotFound, IssueStateError, WindowConflict
from .base import EXIT_FAILED, EXIT_USAGE, fail, handle_errors, main, one_line, print_json, state

P = ParamSpec("P")
R = TypeVar("R")


def _issue_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Unknown issues, bad input and conflicting windows exit 2; a refused state change (e.g. a sent
    issue, a stale version) exits 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (IssueNotFound, EditorialError, ValueError, WindowConflict, NotAllowed) as exc:
            fail(str(exc), EXIT_USAGE)
        except IssueStateError as exc:
            fail(str(exc), EXIT_FAILED)

    return wrapper


def _instant(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_instant(text, state().settings.site.tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@main.command("build")
@click.option("--since", metavar="ISO", help="Window start (default: end of the last sent issue); naive = site timezone.")
@click.option("--until", metavar="ISO", help="Window end, exclusive (default: now); naive = site timezone.")
@click.option("--json", "json_out", metavar="PATH|-", help="Write the issue manifest to PATH, or to stdout with -.")
@click.option("--allow-empty", is_flag=True, help="Build an issue even when nothing is new in the window.")
@handle_errors
@_issue_errors
def build_command(since: str | None, until: str | None, json_out: str | None, allow_empty: bool) -> None:
    """Compose (or refresh) the draft issue for the window and write its manifest."""
    settings, engine = state().settings, state().engine
    issue = build_issue(settings, engine, datetime.now(UTC), since=_instant(since, "--since"),
                        until=_instant(until, "--until"), allow_empty=allow_empty)
    out = sys.stderr if json_out == "-" else sys.stdout
    if issue is None:
        click.echo("Nothing new in the window: no issue built (use --allow-empty to build one anyway).", file=out)
        if json_out:
            _write_json({"issue": None, "sections": [], "feeds": []}, json_out)
        return
    manifest = issue_manifest(settings, engine, issue)
    echo_manifest(manifest, out)
    for line in build_notes(settings, engine, issue):  # late, held back, too old: in plain words
        click.echo(f"build: {one_line(line)}", file=out)
    if json_out:  # first: the issue is saved, whatever rendering says next
        _write_json(manifest, json_out)
    try:
        notes = edition_notes(settings, engine, issue)
    except RenderError as exc:
        fail(f"template error: {exc}\nIssue {issue.number} is saved: fix the template, then check it with "
             f"`digest render --issue {issue.number} --out DIR`.", EXIT_FAILED)
    for note in notes:
        click.echo(f"note: {note}", err=True)


@main.command("approve")
@click.argument("number", type=int)
@click.option("--as", "as_email", default=None, metavar="EMAIL",
              help="The staff account approving (required once the site has accounts; its role must allow it).")
@click.option("--by", default=None, help="Who approves, on a site without accounts (default: the login name).")
@click.option("--version", "version", default=None, help="Approve only this version (default: the current one).")
@handle_errors
@_issue_errors
def approve_command(number: int, as_email: str | None, by: str | None, version: str | None) -> None:
    """Approve issue NUMBER for sending (approval is for one version: any edit undoes it)."""
    settings, engine = state().settings, state().engine
    try:
        actor = command_line_actor(engine, as_email, by or _login())
    except AccountError as exc:
        fail(str(exc), EXIT_USAGE)
    # Without --version the version approved is the one `digest issue show` shows now.
    version = version or get_issue(engine, number).version
    issue = approve_issue(settings, engine, number, actor, version).issue
    click.echo(f"Issue {issue.number} approved (version {issue.version}) by {actor.label}.")


def _login() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


@main.group("issue")
def issue_group() -> None:
    """List and inspect issues; edit a draft's intro, subject, dropped and pinned items."""


@issue_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array instead of a table.")
@handle_errors
def list_command(as_json: bool) -> None:
    """Every issue, newest first, with status, window and version."""
    rows = list_issues(state().engine)
    if as_json:
        print_json([_summary_json(r) for r in rows])
        return
    if not rows:
        click.echo("No issues yet: run `digest build`.")
    tz = state().settings.site.tz
    for r in rows:
        click.echo(f"{r.number:>4}  {r.status.value:<9}  {r.window.start.astimezone(tz):%Y-%m-%d %H:%M} → "
                   f"{r.window.end.astimezone(tz):%Y-%m-%d %H:%M}  {r.items:>3} items  {r.version[:12]}  "
                   f"{one_line(r.subject)}")


@issue_group.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="The issue manifest instead of a summary.")
@handle_errors
@_issue_errors
def show_command(number: int, as_json: bool) -> None:
    """One issue's sections and items (with the keys `drop` and `pin` take)."""
    manifest = issue_manifest(state().settings, state().engine, number)
    if as_json:
        print_json(manifest)
    else:
        echo_manifest(manifest, sys.stdout, keys=True)


def _edit_command(name: str, help_text: str, change: Callable[[str], dict[str, object]], argument: str) -> None:
    @issue_group.command(name, help=help_text)
    @click.argument("number", type=int)
    @click.argument(argument.lower())
    @handle_errors
    @_issue_errors
    def command(number: int, **kwargs: str) -> None:
        (value,) = kwargs.values()
        issue = edit_issue(state().settings, state().engine, number, datetime.now(UTC), **change(value))
        click.echo(f"Issue {issue.number} updated: {issue.status.value}, version {issue.version}.")


def _text_command(name: str, help_text: str) -> None:
    @issue_group.command(name, help=help_text)
    @click.argument("number", type=int)
    @click.argument("text")
    @click.option("--language", default=None, metavar="LANG",
                  help="The edition language it is for (en, fr, de); default: the site's language. Readers of a "
                       "language without its own get the site language's.")
    @handle_errors
    @_issue_errors
    def command(number: int, text: str, language: str | None) -> None:
        change = {"texts": {language: {name: text}}} if language else {name: text}
        issue = edit_issue(state().settings, state().engine, number, datetime.now(UTC), **change)
        click.echo(f"Issue {issue.number} updated: {issue.status.value}, version {issue.version}.")


_text_command("intro", "Set the intro text of issue NUMBER (\"\" removes it).")
_text_command("subject", "Set the subject line of issue NUMBER (\"\" restores the default).")
_text_command("lead", "Set the lead text shown with issue NUMBER's lead story, its first pinned item (\"\" removes it).")
_edit_command("drop", "Leave item KEY out of issue NUMBER.", lambda v: {"drop": [v]}, "KEY")
_edit_command("undrop", "Put a dropped item KEY back into issue NUMBER.", lambda v: {"undrop": [v]}, "KEY")
_edit_command("pin", "Put item KEY at the top of its section in issue NUMBER.", lambda v: {"pin": [v]}, "KEY")
_edit_command("unpin", "Return pinned item KEY to its usual place in issue NUMBER.", lambda v: {"unpin": [v]}, "KEY")


@issue_group.command("cancel")
@click.argument("number", type=int)
@handle_errors
@_issue_errors
def cancel_command(number: int) -> None:
    """Cancel a draft or approved issue (it will not be sent; building its window again reopens it)."""
    cancel_issue(state().engine, number, datetime.now(UTC))
    click.echo(f"Issue {number} cancelled.")


# --- output ---------------------------------------------------------------------------------------

def echo_manifest(manifest: dict, out: IO[str] | None = None, keys: bool = False) -> None:
    """Print an issue manifest as a readable summary (sections and item titles, with keys if asked).

    `digest demo` prints the issue it built with it.
    """
    out = out or sys.stdout
    head = manifest["issue"]
    window = head["window"]
    click.echo(f"Issue {head['number']} ({head['status']}, version {head['version']}): {one_line(head['subject'])}",
               file=out)
    click.echo(f"Window {window['start']} → {window['end']}", file=out)
    if head["intro"]:
        click.echo(f"Intro: {one_line(head['intro'])}", file=out)
    for section in manifest["sections"]:
        if not section["items"]:
            continue
        click.echo(f"\n{one_line(section['title'])} ({len(section['items'])})", file=out)
        for item in section["items"]:
            mark = "* " if item.get("pinned") else "- "
            key = f"\n      {one_line(item['key'])}" if keys else ""
            click.echo(f"  {mark}{one_line(item['title'])}{key}", file=out)
    if head["editorial"]["dropped"]:
        click.echo(f"\nDropped: {', '.join(map(one_line, head['editorial']['dropped']))}", file=out)
    for feed in manifest["feeds"]:
        if feed["status"] in ("error", "warning"):
            click.echo(f"feed {one_line(feed['name'])}: {feed['status']}: {one_line(feed['message'])}", file=out)


def _write_json(data: dict, target: str) -> None:
    if target == "-":
        print_json(data)
        return
    try:
        Path(target).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write the manifest to {target}: {exc.strerror}", EXIT_FAILED)
    click.echo(f"Manifest written to {target}", err=True)


def _summary_json(row: IssueSummary) -> dict[str, object]:
    return {
        "number": row.number, "status": row.status.value, "subject": row.subject, "version": row.version,
        "items": row.items, "window": {"start": row.window.start.isoformat(), "end": row.window.end.isoformat()},
        "approved_by": row.approved_by, "approved_version": row.approved_version,
        "approved_at": row.approved_at.isoformat() if row.approved_at else None,
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
    }
