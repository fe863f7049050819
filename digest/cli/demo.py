"""`digest demo`: the whole job on the bundled samples, into a fresh folder, with nothing else running.

Fetch the sample feeds → import the sample subscriber list → build the sample week's issue → render
the full edition → approve it → deliver every subscriber's edition into an outbox folder.
The sample feeds describe a fixed week, so the demo runs on a fixed clock.
"""

from __future__ import annotations

import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from rich.text import Text
from sqlalchemy import Engine

from ..archive_urls import archive_url
from ..config import Settings
from ..models import Account, Role
from ..passwords import hash_password
from ..pipeline.editions import render_issue
from ..pipeline.ingest import fetch_all
from ..pipeline.issues import approve_issue, build_issue, issue_manifest
from ..pipeline.sending import send_issue
from ..pipeline.subscribers import import_subscribers
from .base import EXIT_FAILED, EXIT_USAGE, console, fail, handle_errors, main, state
from .build import echo_manifest
from .render import write_rendered_issue

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
SAMPLE_LIST_NAMES = ("subscribers/sample.csv",)
BRUSSELS = ZoneInfo("Europe/Brussels")
# The sample feeds' week: the demo composes [DEMO_SINCE, DEMO_UNTIL) as seen on DEMO_NOW.
DEMO_SINCE = datetime(2026, 11, 16, tzinfo=BRUSSELS)
DEMO_UNTIL = datetime(2026, 11, 23, tzinfo=BRUSSELS)
DEMO_NOW = datetime(2026, 11, 23, 9, 0, tzinfo=BRUSSELS)
DEMO_ADMIN_PASSWORD = "demo"
DEMO_CONFIG_MARK = "# digest demo configuration"  # the first line of the samples' digest.toml


@main.command("demo")
@click.option("--dir", "directory", default="demo-output", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for the demo's config, store, edition and outbox (recreated: it must be new, empty or an earlier demo's).")
@click.option("--subscribers", "subscribers_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Subscriber list to import (default: subscribers/sample.csv).")
@handle_errors
def demo_command(directory: Path, subscribers_file: Path | None) -> None:
    """Run the whole job on the bundled sample feeds and subscriber list; prints where to look."""
    list_file = subscribers_file or _sample_list()
    config_path = _prepare_folder(directory)
    # Every later step (and the commands it reuses) reads the demo's own config.
    cli_state = state()
    cli_state.config_path = str(config_path)
    _run_demo(cli_state.settings, cli_state.engine, list_file, config_path)


def _run_demo(settings: Settings, engine: Engine, list_file: Path, config_path: Path) -> None:
    """The pipeline's use cases one after the other, as `digest run` would over a week, saying each step."""
    _step("1/5 fetching the sample feeds")
    for report in fetch_all(settings, engine):
        click.echo(f"  {report.feed:<14} {report.status.value:<12} {report.items:>3} items, {report.new} new  {report.message}")
    _step(f"2/5 importing {list_file}")
    imported = import_subscribers(settings, engine, list_file, datetime.now(UTC))  # consent: when imported
    click.echo(f"  added {imported.added}, rejected {len(imported.rejected)}")
    _step(f"3/5 building the issue for {DEMO_SINCE:%d %b} – {DEMO_UNTIL:%d %b %Y}")
    issue = build_issue(settings, engine, now=DEMO_NOW, since=DEMO_SINCE, until=DEMO_UNTIL)
    if issue is None:
        fail("the sample feeds gave nothing new for the demo week", EXIT_FAILED)
    echo_manifest(issue_manifest(settings, engine, issue))
    _step("4/5 rendering the full edition")
    rendered = render_issue(settings, engine, issue.number)
    paths = write_rendered_issue(rendered, config_path.parent / "edition")
    for note in rendered.edition.notes:
        click.echo(f"  note: {note}")
    _step("5/5 approving and delivering to the outbox")
    approve_issue(settings, engine, issue.number, by=Account(email="", role=Role.ADMIN, name="digest demo"),
                  version=issue.version)
    report = send_issue(settings, engine, issue.number)
    click.echo(f"  sent {report.sent}, failed {report.failed}, skipped {report.skipped} in {report.duration:.2f} s")
    _print_where(settings, config_path, paths, issue.number)
    if report.failed:
        sys.exit(EXIT_FAILED)


def _sample_list() -> Path:
    # The repo's subscribers/ folder (editable installs and `make demo`), else the current folder's.
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        for name in SAMPLE_LIST_NAMES:
            if (base / name).is_file():
                return base / name
    fail("no subscribers/sample.csv here: pass --subscribers FILE.csv", EXIT_USAGE)


def _prepare_folder(directory: Path) -> Path:
    """A fresh copy of the sample feeds and config, with a demo admin password; returns the config path."""
    if directory.exists():
        # Recreating means deleting: only ever an empty folder or an earlier demo's, never `--dir .` or ~.
        if any(directory.iterdir()) and not _is_demo_folder(directory):
            fail(f"{directory} is not empty and not an earlier demo folder; pass a new or empty --dir "
                 "(the demo deletes and recreates its folder)", EXIT_USAGE)
        shutil.rmtree(directory)
    shutil.copytree(SAMPLES, directory, ignore=shutil.ignore_patterns("*.db", "*.db-*", "outbox", "__pycache__"))
    config_path = directory / "digest.toml"
    with config_path.open("a", encoding="utf-8") as config:
        config.write(f'\n[web]\n# The demo admin password is "{DEMO_ADMIN_PASSWORD}".\n'
                     f'admin_password_hash = "{hash_password(DEMO_ADMIN_PASSWORD)}"\n')
    return config_path.resolve()


def _is_demo_folder(directory: Path) -> bool:
    config = directory / "digest.toml"
    try:
        return config.is_file() and config.read_text(encoding="utf-8").startswith(DEMO_CONFIG_MARK)
    except (OSError, UnicodeDecodeError):
        return False


def _step(text: str) -> None:
    console.print(Text(text, style="bold"))


def _print_where(settings: Settings, config_path: Path, paths: list[Path], number: int) -> None:
    outbox = settings.resolve_path(settings.delivery.outbox_dir).resolve()
    count = len(list(outbox.glob("*.eml"))) if outbox.is_dir() else 0
    base = settings.web.base_url.rstrip("/")
    click.echo("")
    click.echo(f"Edition (open in a browser): {paths[0]}")
    click.echo(f"Plain text and message:      {paths[1]}  {paths[2]}")
    click.echo(f"Outbox ({count} personalised .eml files): {outbox}")
    click.echo(f"Store:                       {settings.store.url}")
    click.echo("")
    # The demo issue is sent by now: its admin page previews it and links its delivery report.
    click.echo("Open the demo issue in the admin (already sent: its preview and delivery report):")
    click.echo(f"  {_digest_command()} --config {config_path} serve")
    click.echo(f"  then open {base}/admin/issues/{number} (password: {DEMO_ADMIN_PASSWORD})")
    click.echo(f"  delivery report: {base}/admin/issues/{number}/report · public page: {archive_url(settings, number)}")


def _digest_command() -> str:
    """How this `digest` was started (e.g. .venv/bin/digest), so the printed command works from here."""
    started = sys.argv[0]
    return started if Path(started).name == "digest" else "digest"
