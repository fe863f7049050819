"""`digest subscribers` commands: import/export list files, add, remove, list, erase, show."""

from __future__ import annotations

import csv
import json
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import click

from ..models import SubscriberStatus
from ..store import subscribers as store
from ..subscribers import (
    EXPORT_COLUMNS,
    SUPPRESSED_STATUSES,
    InvalidSubscriber,
    ListFileError,
    export_row,
    make_subscriber,
    normalise_email,
    parse_series,
    subscriber_json,
)
from ..tokens import checked_suppression_keys
from .base import EXIT_FAILED, EXIT_USAGE, fail, handle_errors, main, print_json, state

STATUS_CHOICE = click.Choice([s.value for s in SubscriberStatus])


@main.group()
def subscribers() -> None:
    """Subscriber lists: import/export CSV, add, remove, list, GDPR erase and show."""


@subscribers.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handle_errors
def import_command(file: Path, as_json: bool) -> None:
    """Sync a CSV list (email,name,language,series) into the store; prints what changed.

    New addresses are added as confirmed with consent method "import": staff vouch for consent.
    Unsubscribed, bounced, complained and erased addresses are never re-added; a `status` column (as
    `export` writes it) keeps opt-outs. Exit 1 if rows were rejected, 2 if the file or a suppression key is unusable.
    """
    from ..pipeline import import_subscribers

    try:
        report = import_subscribers(state().settings, state().engine, file)
    except ListFileError as exc:
        fail(str(exc), EXIT_USAGE)
    if as_json:
        print_json(report.as_dict())
    else:
        _print_import_report(report)
    if report.rejected:
        sys.exit(EXIT_FAILED)


def _print_import_report(report) -> None:  # noqa: ANN001
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
    engine = state().engine
    rows = store.iter_subscribers(engine, SubscriberStatus(status) if status else None, series_id)
    out = output.open("w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(EXPORT_COLUMNS)
            writer.writerows(export_row(s) for s in rows)
        else:
            for s in rows:
                out.write(json.dumps(subscriber_json(s), ensure_ascii=False) + "\n")
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
    settings, engine = state().settings, state().engine
    try:
        wanted = make_subscriber(settings, email, name, language, ";".join(series), want_events=not no_events,
                                 want_media=not no_media, status=SubscriberStatus.CONFIRMED,
                                 consent_at=datetime.now(UTC), consent_method="admin")
    except InvalidSubscriber as exc:
        fail(str(exc), EXIT_USAGE)
    keys = checked_suppression_keys(settings, engine)
    existing = store.get_subscriber(engine, wanted.email)
    if existing is not None and existing.status == SubscriberStatus.BOUNCED and reactivate_bounced:
        store.confirm_subscriber(engine, replace(wanted, id=existing.id), "admin", "")
        click.echo(f"reactivated {wanted.email} (had bounced)")
        return
    opted_out = existing is not None and existing.status in SUPPRESSED_STATUSES
    if opted_out or store.is_erased(engine, wanted.email, keys):
        fail(_suppressed_reason(wanted.email, existing))
    if existing is None:
        store.add_subscriber(engine, wanted, source="admin")
        click.echo(f"added {wanted.email}")
    elif existing.status == SubscriberStatus.PENDING:
        store.confirm_subscriber(engine, replace(wanted, id=existing.id), "admin", "")
        click.echo(f"confirmed {wanted.email} (was pending)")
    else:
        store.update_choices(engine, replace(wanted, id=existing.id), source="admin")
        click.echo(f"updated {wanted.email}")


def _suppressed_reason(email: str, existing) -> str:  # noqa: ANN001
    """Why `add` refuses: the opt-out the row records, else the erasure (the row, if any, is a pending sign-up)."""
    if existing is not None and existing.status == SubscriberStatus.BOUNCED:
        return (f"{email} bounced: add --reactivate-bounced if its owner asked you to send again "
                "(a stranger typing it on the subscribe page cannot)")
    opted_out = existing is not None and existing.status in SUPPRESSED_STATUSES
    what = existing.status.value if opted_out else "was erased"
    pending = existing is not None and existing.status == SubscriberStatus.PENDING
    waiting = "; theirs is waiting for its confirmation" if pending else ""
    return (f"{email} {what}: only their own sign-up on the subscribe page can add them again{waiting} "
            "(staff never re-add an unsubscribed, complained or erased address)")


@subscribers.command("remove")
@click.argument("email")
@handle_errors
def remove_command(email: str) -> None:
    """Unsubscribe an address; it stays stored so imports never re-add it."""
    found = _find(email)
    if found.status in SUPPRESSED_STATUSES:
        click.echo(f"{found.email} is already {found.status.value}")
        return
    store.set_status(state().engine, found.id, SubscriberStatus.UNSUBSCRIBED, detail="staff")
    click.echo(f"unsubscribed {found.email}")


@subscribers.command("list")
@click.option("--status", type=STATUS_CHOICE, help="Only subscribers with this status.")
@click.option("--series", "series_id", metavar="ID", help="Only subscribers who receive this series.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@handle_errors
def list_command(status: str | None, series_id: str | None, as_json: bool) -> None:
    """List subscribers: email, status, language, series (all = every series), name."""
    _check_series(series_id)
    count = 0
    for s in store.iter_subscribers(state().engine, SubscriberStatus(status) if status else None, series_id):
        count += 1
        if as_json:
            click.echo(json.dumps(subscriber_json(s), ensure_ascii=False))
        else:
            click.echo(f"{s.email}\t{s.status.value}\t{s.language}\t{';'.join(s.series) or 'all'}\t{s.name}")
    if not as_json:
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
    engine = state().engine
    keys = checked_suppression_keys(state().settings, engine, require=False)
    existed = store.erase_subscriber(engine, address, keys)
    click.echo(f"erased {address}" if existed else f"{address} was not stored; its hash is now suppressed")


@subscribers.command("show")
@click.argument("email")
@click.option("--json", "as_json", is_flag=True, help="Print the full record as JSON (GDPR access).")
@handle_errors
def show_command(email: str, as_json: bool) -> None:
    """Everything stored about one address: the subscriber, their events and deliveries."""
    address = _address(email)
    settings, engine = state().settings, state().engine
    keys = checked_suppression_keys(settings, engine, require=False)
    record = store.subscriber_record(engine, address)
    if record is None:
        erased = store.is_suppressed(engine, address, keys)
        fail(f"{address} is not stored" + (" (erased: only a keyed hash is kept)" if erased else ""))
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
    if series_id is None:
        return
    if not series_id.strip():
        fail("--series needs a series id (see [[series]] in the config)", EXIT_USAGE)
    try:
        parse_series([series_id], state().settings)
    except InvalidSubscriber as exc:
        fail(f"--series: {exc}", EXIT_USAGE)


def _address(email: str) -> str:
    try:
        return normalise_email(email)
    except InvalidSubscriber as exc:
        fail(str(exc), EXIT_USAGE)
        raise  # unreachable: fail exits


def _find(email: str):  # noqa: ANN202
    found = store.get_subscriber(state().engine, _address(email))
    if found is None:
        fail(f"{_address(email)} is not a subscriber (see `digest subscribers list`)")
    return found
