"""`digest build`, `digest approve` and the editorial commands (`digest issue …`)."""

from __future__ import annotations

import functools
import getpass
import json
import sys
import unicodedata
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from .base import EXIT_FAILED, EXIT_USAGE, fail, handle_errors, main, print_json, state


def _issue_errors(func: Callable) -> Callable:
    """Unknown issues, bad input and conflicting windows exit 2; a refused state change (e.g. a sent
    issue) exits 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from ..compose import EditorialError
        from ..store.issues import IssueNotFound, IssueStateError, WindowConflict

        try:
            return func(*args, **kwargs)
        except (IssueNotFound, EditorialError, ValueError, WindowConflict) as exc:
            fail(str(exc), EXIT_USAGE)
        except IssueStateError as exc:
            fail(str(exc), EXIT_FAILED)

    return wrapper


def _instant(text: str | None, option: str) -> datetime | None:
    from ..compose import parse_instant

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
    from ..pipeline import build_issue

    settings, engine = state().settings, state().engine
    issue = build_issue(settings, engine, datetime.now(UTC), since=_instant(since, "--since"),
                        until=_instant(until, "--until"), allow_empty=allow_empty)
    out = sys.stderr if json_out == "-" else sys.stdout
    if issue is None:
        click.echo("Nothing new in the window: no issue built (use --allow-empty to build one anyway).", file=out)
        if json_out:
            _write_json({"issue": None, "sections": [], "feeds": []}, json_out)
        return
    manifest = _manifest(issue)
    _echo_summary(manifest, out)
    if json_out:  # first: the issue is saved, whatever rendering says next
        _write_json(manifest, json_out)
    _echo_size_notes(settings, issue, _edition_languages(settings, manifest))


def _edition_languages(settings, manifest: dict) -> list[str]:  # noqa: ANN001
    """The site language, then every other language confirmed subscribers receive editions in."""
    site = settings.site.language
    return [site, *sorted({s["language"] for s in manifest.get("segments", ())} - {site})]


def _echo_size_notes(settings, issue, languages: list[str]) -> None:  # noqa: ANN001
    """Say at build time when an edition must be shortened to stay under the clipping limit.

    The full edition is the largest a reader can get; labels and dates differ in length between
    languages, so each language is checked. A template error exits 1 (the issue stays saved).
    """
    from ..render import RenderError, full_segment, render_edition

    for language in languages:
        try:
            edition = render_edition(issue, full_segment(issue, language), settings)
        except RenderError as exc:
            fail(f"template error: {exc}\nIssue {issue.number} is saved: fix the template, then check it with "
                 f"`digest render --issue {issue.number} --out DIR`.", EXIT_FAILED)
        for note in edition.notes:
            click.echo(f"note: {note}", err=True)


@main.command("approve")
@click.argument("number", type=int)
@click.option("--by", default=None, help="Who approves (default: the login name).")
@click.option("--version", "version", default=None, help="Approve only this version (default: the current one).")
@handle_errors
@_issue_errors
def approve_command(number: int, by: str | None, version: str | None) -> None:
    """Approve issue NUMBER for sending (approval is for one version: any edit undoes it)."""
    from ..store.issues import approve_issue, require_issue

    engine = state().engine
    version = version or require_issue(engine, number).version
    issue = approve_issue(engine, number, by or _login(), version)
    click.echo(f"Issue {issue.number} approved (version {issue.version}).")


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
    from ..store.issues import list_issues

    rows = list_issues(state().engine)
    if as_json:
        print_json([_summary_json(r) for r in rows])
        return
    if not rows:
        click.echo("No issues yet: run `digest build`.")
    tz = state().settings.site.tz
    for r in rows:
        click.echo(f"{r.number:>4}  {r.status.value:<9}  {r.window.start.astimezone(tz):%Y-%m-%d %H:%M} → "
                   f"{r.window.end.astimezone(tz):%Y-%m-%d %H:%M}  {r.items:>3} items  {r.version[:12]}  {_plain(r.subject)}")


@issue_group.command("show")
@click.argument("number", type=int)
@click.option("--json", "as_json", is_flag=True, help="The issue manifest instead of a summary.")
@handle_errors
@_issue_errors
def show_command(number: int, as_json: bool) -> None:
    """One issue's sections and items (with the keys `drop` and `pin` take)."""
    from ..store.issues import require_issue

    manifest = _manifest(require_issue(state().engine, number))
    if as_json:
        print_json(manifest)
    else:
        _echo_summary(manifest, sys.stdout, keys=True)


def _edit_command(name: str, help_text: str, change: Callable[[str], dict], argument: str) -> None:
    @issue_group.command(name, help=help_text)
    @click.argument("number", type=int)
    @click.argument(argument.lower())
    @handle_errors
    @_issue_errors
    def command(number: int, **kwargs: str) -> None:
        from ..pipeline import edit_issue

        (value,) = kwargs.values()
        issue = edit_issue(state().settings, state().engine, number, datetime.now(UTC), **change(value))
        click.echo(f"Issue {issue.number} updated: {issue.status.value}, version {issue.version}.")


_edit_command("intro", "Set the intro text of issue NUMBER (\"\" removes it).", lambda v: {"intro": v}, "TEXT")
_edit_command("subject", "Set the subject line of issue NUMBER (\"\" restores the default).", lambda v: {"subject": v}, "TEXT")
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
    from ..models import IssueStatus
    from ..store.issues import set_status

    set_status(state().engine, number, IssueStatus.CANCELLED, datetime.now(UTC))
    click.echo(f"Issue {number} cancelled.")


# --- output ---------------------------------------------------------------------------------------

def echo_issue(issue, out=None, keys: bool = False) -> None:  # noqa: ANN001
    """Print an issue's readable summary (sections and item titles); `digest demo` reuses it."""
    _echo_summary(_manifest(issue), out or sys.stdout, keys=keys)


def _manifest(issue) -> dict:  # noqa: ANN001
    """The issue's manifest; segments (from today's subscribers) only while it is a draft or approved.

    A sending or sent issue's manifest is what was sent: today's subscribers say nothing about it.
    """
    from ..manifest import issue_to_manifest
    from ..segments import segments_from_store
    from ..store.issues import OPEN_STATUSES

    segments = segments_from_store(state().engine, issue) if issue.status in OPEN_STATUSES else None
    return issue_to_manifest(issue, state().settings, segments)


def _write_json(data: dict, target: str) -> None:
    if target == "-":
        print_json(data)
        return
    try:
        Path(target).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write the manifest to {target}: {exc.strerror}", EXIT_FAILED)
    click.echo(f"Manifest written to {target}", err=True)


def _echo_summary(manifest: dict, out, keys: bool = False) -> None:  # noqa: ANN001
    head = manifest["issue"]
    window = head["window"]
    click.echo(f"Issue {head['number']} ({head['status']}, version {head['version']}): {_plain(head['subject'])}", file=out)
    click.echo(f"Window {window['start']} → {window['end']}", file=out)
    if head["intro"]:
        click.echo(f"Intro: {_plain(head['intro'])}", file=out)
    for section in manifest["sections"]:
        if not section["items"]:
            continue
        click.echo(f"\n{_plain(section['title'])} ({len(section['items'])})", file=out)
        for item in section["items"]:
            mark = "* " if item.get("pinned") else "- "
            click.echo(f"  {mark}{_plain(item['title'])}" + (f"\n      {_plain(item['key'])}" if keys else ""), file=out)
    if head["editorial"]["dropped"]:
        click.echo(f"\nDropped: {', '.join(map(_plain, head['editorial']['dropped']))}", file=out)
    for feed in manifest["feeds"]:
        if feed["status"] in ("error", "warning"):
            click.echo(f"feed {_plain(feed['name'])}: {feed['status']}: {_plain(feed['message'])}", file=out)


def _plain(text: str) -> str:
    """Feed text on one terminal line: control characters (e.g. ANSI escapes) become spaces."""
    return "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)


def _summary_json(row) -> dict:  # noqa: ANN001
    return {
        "number": row.number, "status": row.status.value, "subject": row.subject, "version": row.version,
        "items": row.items, "window": {"start": row.window.start.isoformat(), "end": row.window.end.isoformat()},
        "approved_by": row.approved_by, "approved_version": row.approved_version,
        "approved_at": row.approved_at.isoformat() if row.approved_at else None,
        "sent_at": row.sent_at.isoformat() if row.sent_at else None,
    }
