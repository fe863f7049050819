"""`digest init`: a commented digest.toml and a migrated store, ready to edit."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import load_settings
from ..store import open_store
from .base import console, handle_errors, main

CONFIG_TEMPLATE = '''# digest configuration. Every setting has a default; see docs/configuration.md.
# Relative paths are relative to this file.

[site]
name = "Europa Progressiva Foundation"
url = "https://www.example.org"           # base for absolute links and the web archive
timezone = "Europe/Brussels"              # windows, schedules and displayed dates use it
language = "en"                           # default edition language: en, fr or de
postal_address = "Rue Example 1, 1000 Brussels"

[store]
url = "sqlite:///digest.db"               # or postgresql+psycopg://user@host/db

# Feeds, series, the schedule and the branding ([branding]) written here are managed in this file:
# the admin shows them read-only. Delete their tables to manage them in the admin and with
# `digest feeds …` / `digest series …` instead (README, "Where settings live").

# One [[feeds]] table per feed. kind: brief | event | news | article | media
# To try digest first, point url at the bundled samples in digest/data/samples/ (publications.xml,
# events.xml, news.xml, magazine.rdf, media.xml), or run `digest demo`.
[[feeds]]
name = "Publications"
url = "https://www.example.org/feed/"     # http(s) URL or a local file path
kind = "brief"

# Series in display order, named as your feeds' categories name them. Category spellings that
# differ beyond case, dashes, "&"/"and", whitespace and HTML entities need an alias.
[[series]]
id = "esa-security-defence"
name = "European Strategic Autonomy series – Security & Defence"
aliases = ["European Strategic Autonomy series - Security & Defense"]
url = "https://www.example.org/series/security-defence/"   # "find all related" link

[[series]]
id = "esa-economy-trade"
name = "European Strategic Autonomy series – Economy & Trade"
url = "https://www.example.org/series/economy-trade/"

[[series]]
id = "esa-digital-technology"
name = "European Strategic Autonomy series – Digital & Technology"
url = "https://www.example.org/series/digital-technology/"

[digest]
window_days = 7                           # window of the first issue; later ones start where the last ended
upcoming_events_days = 60

[schedule]
cron = "0 9 * * mon"                      # build the draft (site timezone)
send_cron = "0 11 * * mon"                # send it, if approved

[delivery]
transport = "outbox"                      # outbox | smtp
outbox_dir = "outbox"
sender = "Europa Progressiva Digest <digest@example.org>"

[delivery.smtp]
host = "127.0.0.1"
port = 25
security = "none"                         # none | starttls | tls
username = ""
password_env = "DIGEST_SMTP_PASSWORD"     # the password itself never sits in the file
connections = 4

[web]
base_url = "http://127.0.0.1:8080"        # where `digest serve` is reached; used in email links
'''


@main.command("init")
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite an existing digest.toml.")
@handle_errors
def init_command(directory: Path, force: bool) -> None:
    """Write a commented digest.toml in DIRECTORY and create its store."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "digest.toml"
    if config_path.exists() and not force:
        console.print(f"{config_path} exists; keeping it (use --force to overwrite)", markup=False)
    else:
        config_path.write_text(CONFIG_TEMPLATE, encoding="utf-8")
        console.print(f"wrote {config_path}", markup=False)
    settings = load_settings(config_path)
    open_store(settings.store.url).dispose()
    console.print(f"store ready: {settings.store.url}", markup=False)
    console.print("next: edit the [[feeds]] and [[series]] tables, then run `digest fetch`", markup=False)
