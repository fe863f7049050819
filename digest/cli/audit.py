"""`digest audit`: the audit trail on the command line, filtered by issue or person, as text, CSV or JSON."""

from __future__ import annotations

import click

from ..pipeline.audit import audit_trail, export_audit
from .base import handle_errors, main, one_line, state


@main.command("audit")
@click.option("--issue", "issue_number", type=int, default=None, help="Only changes to this issue.")
@click.option("--person", default=None, metavar="EMAIL", help="Only changes made by this account.")
@click.option("--format", "fmt", type=click.Choice(["text", "csv", "json"]), default="text", show_default=True,
              help="text: the newest 50, one per line; csv and json: the whole trail (for the filter).")
@handle_errors
def audit_command(issue_number: int | None, person: str | None, fmt: str) -> None:
    """Who changed what and when: builds, edits, approvals, sends, accounts, settings, imports, erasures."""
    engine = state().engine
    if fmt != "text":
        click.echo(export_audit(engine, fmt, issue_number, person), nl=False)
        return
    trail = audit_trail(engine, issue_number, person)
    if not trail.entries:
        click.echo("Nothing recorded" + (" for this filter." if issue_number is not None or person else "."))
    for e in trail.entries:
        issue = f" #{e.issue_number}" if e.issue_number is not None else ""
        target = f" {e.target}" if e.target else ""
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(e.detail.items()))
        click.echo(one_line(f"{e.at.isoformat(timespec='seconds')}  {e.actor}  {e.action}{issue}{target}"
                            + (f"  ({detail})" if detail else "")))
    if trail.total > len(trail.entries):
        click.echo(f"… and {trail.total - len(trail.entries)} older: --format csv or json exports them all.")
