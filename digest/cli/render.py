"""`digest render --issue N [--subscriber EMAIL] --out DIR`: an edition as files to open and inspect."""

from __future__ import annotations

from pathlib import Path

import click
from rich.markup import escape

from ..pipeline.editions import render_issue
from ..render import RenderedIssue, RenderError
from .base import EXIT_FAILED, EXIT_USAGE, console, fail, handle_errors, main, state


@main.command("render")
@click.option("--issue", "number", type=int, required=True, metavar="N", help="Issue number.")
@click.option("--subscriber", "email", metavar="EMAIL",
              help="Render this subscriber's edition (their sections, language and links); default: the full edition.")
@click.option("--out", "out_dir", required=True, metavar="DIR", type=click.Path(file_okay=False),
              help="Folder to write issue.html, issue.txt and issue.eml into (created if missing).")
@handle_errors
def render_command(number: int, email: str | None, out_dir: str) -> None:
    """Write issue.html, issue.txt and issue.eml for the full edition or one subscriber's."""
    try:
        rendered = render_issue(state().settings, state().engine, number, email)
    except (LookupError, ValueError) as exc:  # no such issue or subscriber; their choices select nothing
        fail(str(exc), EXIT_USAGE)
    except RenderError as exc:
        fail(f"template error: {exc}", EXIT_FAILED)
    paths = write_rendered_issue(rendered, Path(out_dir))
    for note in rendered.edition.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", markup=True, soft_wrap=True)
    size = rendered.edition.html_bytes / 1024
    click.echo(f"issue {number} ({rendered.edition.language}, {size:.0f} KiB HTML) for {rendered.recipient}:")
    for path in paths:
        click.echo(str(path))


def write_rendered_issue(rendered: RenderedIssue, out: Path) -> list[Path]:
    """Write issue.html, issue.txt and issue.eml into `out` (created if missing); returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "issue.html", out / "issue.txt", out / "issue.eml"]
    paths[0].write_text(rendered.html, encoding="utf-8")
    paths[1].write_text(rendered.text, encoding="utf-8")
    paths[2].write_bytes(rendered.eml)
    return [p.resolve() for p in paths]
