"""`digest subscribers` commands: import/export list files, add, remove, list, erase, show.

Each command parses its options, calls one use case of digest.pipeline.subscribers and prints
what it did; the rules (who may be added back, what an erasure keeps) live there.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ..listfile import ImportReport, ListFileError
from ..models import SubscriberStatus
from ..pipeline.subscriber_import import OUTCOMES, ImportFileError, plan_import
from ..pipeline.subscribers import (
    Addition,
    add_subscriber,
    erase_subscriber,
    export_subscribers,
    import_subscribers,
    list_subscribers,
    remove_subscriber,
    show_subscriber,
)
from ..private_files import open_private_text
from ..subscriber_fields import InvalidSubscriber, normalise_email
from .base import EXIT_FAILED, EXIT_USAGE, fail, handle_errors, main, print_json, state

STATUS_CHOICE = click.Choice([s.value for s in SubscriberStatus])


@main.group()
def subscribers() -> None:
    """Subscriber lists: import/export CSV, add, remove, list, GDPR erase and show."""


@subscribers.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--dry-run", is_flag=True, help="Show what each line would do (added, updated, unchanged, "
              "suppressed, rejected, and why); store nothing.")
@handle_errors
def import_command(file: Path, as_json: bool, dry_run: bool) -> None:
    """Sync a CSV list (email,name,language,series) into the store; prints what changed.

    New addresses are added as confirmed with consent method "import": staff vouch for consent.
    Unsubscribed, bounced, complained and erased addresses are never re-added; a `status` column (as
    `export` writes it) keeps opt-outs. Exports of Mailchimp, listmonk, Substack and Buttondown are
    recognised by their header. Exit 1 if rows were rejected, 2 if the file or a suppression key is unusable.
    """
    if dry_run:
        _dry_run(file, as_json)
        return
    try:
        report = import_subscribers(state().settings, state().engine, file, datetime.now(UTC))
    except ListFileError as exc:
        fail(str(exc), EXIT_USAGE)
    if as_json:
        print_json(report.as_dict())
    else:
        _print_import_report(report)
    if report.rejected:
        sys.exit(EXIT_FAILED)


def _dry_run(file: Path, as_json: bool) -> None:
    try:
        plan = plan_import(state().settings, state().engine, file)
    except ImportFileError as exc:
        fail(f"{file}: {exc}", EXIT_USAGE)
    if as_json:
        print_json({**plan.counts, "source": plan.source, "ignored_columns": list(plan.ignored_columns),
                    "lines": [{"line": r.line, "outcome": r.outcome, "email": r.email, "reason": r.reason}
                              for r in plan.rows]})
    else:
        counts = ", ".join(f"{outcome} {plan.counts[outcome]}" for outcome in OUTCOMES)
        click.echo(f"dry run{f' of a {plan.source} export' if plan.source else ''}, nothing stored: {counts}")
        for row in plan.rows:
            click.echo(f"  line {row.line}: {row.outcome}: {row.email + ': ' if row.email else ''}{row.reason}")
        if plan.ignored_columns:
            click.echo(f"  ignored columns: {', '.join(plan.ignored_columns)}")
    if plan.counts["rejected"]:
        sys.exit(EXIT_FAILED)


def _print_import_report(report: ImportReport) -> None:
    click.echo(f"added {report.added}, updated {report.updated}, unchanged {report.unchanged}, "
               f"rejected {len(report.rejected)}, suppressed {len(report.suppressed)}")
    for row in report.rejected:
        click.echo(f"  line {row.line}: rejected: {row.reason}")
    if report.suppressed:
        lines = ", ".join(str(n) for n in report.suppressed[:50]) + (" …" if len(report.suppressed) > 50 else "")
        click.echo(f"  suppressed (unsubscribed, bounced, complained or erased; never mailed): lines {lines}")
    if report.ignored_columns:
        click.echo(f"  ignored columns: {', '.join(report.ignored_columns)}")


@subscribers.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option("--status", type=STATUS_CHOICE, help="Only subscribers with this status.")
@click.option("--series", "series_id", metavar="ID", help="Only subscribers who receive this series.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write here instead of stdout.")
@handle_errors
def export_command(fmt: str, status: str | None, series_id: str | None, output: Path | None) -> None:
    """Write subscribers as CSV (formula-safe, re-importable) or JSON lines."""
    _check_series(series_id)
    out = open_private_text(output) if output else sys.stdout  # personal data: 0600, whatever the umask
    try:
        export_subscribers(state().settings, state().engine, out, fmt, _status(status), series_id)
    finally:
        if output:
            out.close()


@subscribers.command("add")
@click.argument("email")
@click.option("--name", default="", help="Display name.")
@click.option("--language", default="", help="en, fr or de (default: site.language).")
@click.option("--series", "series", multiple=True, metavar="ID",
              help="A series id to follow (repeat, or ;-separated); none = all series.")
@click.option("--no-events", is_flag=True, help="Leave out the upcoming events section.")
@click.option("--no-media", is_flag=True, help="Leave out the in-the-media section.")
@click.option("--reactivate-bounced", is_flag=True,
              help="The address bounced and its owner asked you to send again: confirm it anew (consent admin).")
@handle_errors
def add_command(email: str, name: str, language: str, series: tuple[str, ...], no_events: bool, no_media: bool,
                reactivate_bounced: bool) -> None:
    """Add (or update) one confirmed subscriber; consent method "admin".

    Refuses addresses that unsubscribed, complained or were erased (only their own sign-up brings
    them back), and bounced ones unless --reactivate-bounced.
    """
    try:
        done = add_subscriber(state().settings, state().engine, email, name=name, language=language,
                              series=";".join(series).split(";"), want_events=not no_events,
                              want_media=not no_media, reactivate_bounced=reactivate_bounced,
                              now=datetime.now(UTC))
    except InvalidSubscriber as exc:
        fail(str(exc), EXIT_USAGE)
    address = done.subscriber.email
    if done.refused:
        fail(_refusal(done))
    elif done.reactivated:
        click.echo(f"reactivated {address} (had bounced)")
    elif done.added:
        click.echo(f"added {address}")
    elif done.confirmed:
        click.echo(f"confirmed {address} (was pending)")
    else:
        click.echo(f"updated {address}")


def _refusal(done: Addition) -> str:
    """Why `add` refused: the opt-out the row records, else the erasure."""
    email = done.subscriber.email
    if done.opted_out == SubscriberStatus.BOUNCED:
        return (f"{email} bounced: add --reactivate-bounced if its owner asked you to send again "
                "(a stranger typing it on the subscribe page cannot)")
    what = done.opted_out.value if done.opted_out else "was erased"
    waiting = "; theirs is waiting for its confirmation" if done.signup_waiting else ""
    return (f"{email} {what}: only their own sign-up on the subscribe page can add them again{waiting} "
            "(staff never re-add an unsubscribed, complained or erased address)")


@subscribers.command("remove")
@click.argument("email")
@handle_errors
def remove_command(email: str) -> None:
    """Unsubscribe an address; it stays stored so imports never re-add it."""
    done = remove_subscriber(state().settings, state().engine, _address(email), datetime.now(UTC))
    if not done.found:
        fail(f"{done.email} is not a subscriber (see `digest subscribers list`)")
    elif done.unsubscribed:
        click.echo(f"unsubscribed {done.email}")
    else:
        click.echo(f"{done.email} is already {done.status.value}")


@subscribers.command("list")
@click.option("--status", type=STATUS_CHOICE, help="Only subscribers with this status.")
@click.option("--series", "series_id", metavar="ID", help="Only subscribers who receive this series.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@handle_errors
def list_command(status: str | None, series_id: str | None, as_json: bool) -> None:
    """List subscribers: email, status, language, series (all = every series), name."""
    _check_series(series_id)
    settings, engine = state().settings, state().engine
    if as_json:  # the lines `export --format json` writes
        export_subscribers(settings, engine, sys.stdout, "json", _status(status), series_id)
        return
    count = 0
    for s in list_subscribers(settings, engine, _status(status), series_id):
        count += 1
        click.echo(f"{s.email}\t{s.status.value}\t{s.language}\t{';'.join(s.series) or 'all'}\t{s.name}")
    click.echo(f"{count} subscriber(s)", err=True)


@subscribers.command("erase")
@click.argument("email")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@handle_errors
def erase_command(email: str, yes: bool) -> None:
    """GDPR erasure: delete the subscriber, their deliveries and event details; keep a keyed hash only."""
    address = _address(email)
    if not yes:
        click.confirm(f"Erase everything about {address}? This cannot be undone", abort=True)
    done = erase_subscriber(state().settings, state().engine, address, datetime.now(UTC))
    click.echo(f"erased {done.email}" if done.existed else f"{done.email} was not stored; its hash is now suppressed")


@subscribers.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON (GDPR access).")
@handle_errors
def show_command(email: str, as_json: bool) -> None:
    """Everything stored about one address: the subscriber, their events and deliveries."""
    found = show_subscriber(state().settings, state().engine, _address(email))
    record = found.record
    if record is None:
        fail(f"{found.email} is not stored" + (" (erased: only a keyed hash is kept)" if found.erased else ""))
    if as_json:
        print_json(record)
        return
    for key, value in record["subscriber"].items():
        click.echo(f"{key}: {value}")
    click.echo(f"events: {len(record['events'])}, deliveries: {len(record['deliveries'])}, "
               f"sign-up requests waiting: {len(record['signup_requests'])}")
    for event in record["events"]:
        click.echo(f"  {event['at']}  {event['event']}  {event['detail']}")


def _check_series(series_id: str | None) -> None:
    """Refuse a blank or unknown --series before anything is written (the option's own words)."""
    if series_id is None:
        return
    if not series_id.strip():
        fail("--series needs a series id (see [[series]] in the config)", EXIT_USAGE)
    try:
        list_subscribers(state().settings, state().engine, None, series_id)
    except InvalidSubscriber as exc:
        fail(f"--series: {exc}", EXIT_USAGE)


def _status(value: str | None) -> SubscriberStatus | None:
    return SubscriberStatus(value) if value else None


def _address(email: str) -> str:
    """The address as stored; a usage error (exit 2) when it is not one."""
    try:
        return normalise_email(email)
    except InvalidSubscriber as exc:
        fail(str(exc), EXIT_USAGE)
        raise  # unreachable: fail exits
