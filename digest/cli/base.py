"""The `digest` command group and what every command shares: config loading, the store, exit codes.

Exit codes: 0 success; 1 the job ran but something failed; 2 usage or configuration error.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine

from ..config import ConfigError, Settings, find_config, load_settings
from ..store import StoreError, open_store
from ..unsafe_chars import BIDI_CONTROLS, CONTROLS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2

console = Console(stderr=True, highlight=False)
# What outside text (feed messages, titles, subjects, names) must not bring to a terminal: control
# characters move the cursor or recolour it (ANSI escapes), bidi controls make a line read backwards.
_UNPRINTABLE = re.compile(f"[{CONTROLS}{BIDI_CONTROLS}]")

P = ParamSpec("P")
R = TypeVar("R")


class CliState:
    """Lazily loaded settings and store for one invocation."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self._settings: Settings | None = None
        self._engine: Engine | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(find_config(self.config_path))
        return self._settings

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = open_store(self.settings.store.url)
        return self._engine


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--config", "config_path", metavar="PATH", envvar="DIGEST_CONFIG",
              help="digest.toml to use (default: $DIGEST_CONFIG, else ./digest.toml).")
@click.version_option(package_name="digest")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """digest: turn your organisation's feeds into a weekly email digest."""
    ctx.obj = CliState(config_path)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn configuration and store errors into a clear message and exit code 2, file errors into exit 1."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (ConfigError, StoreError) as exc:
            fail(setup_error(exc), EXIT_USAGE)
        except BrokenPipeError:
            # Whoever read the output stopped (e.g. `| head`): nothing to say; keep Python's exit quiet too.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_FAILED)
        except OSError as exc:
            # A file the command reads or writes (e.g. --out, -o, DIR): a message, never a traceback.
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}", EXIT_FAILED)
        except KeyboardInterrupt:
            fail("interrupted", EXIT_FAILED)

    return wrapper


def setup_error(exc: ConfigError | StoreError) -> str:
    """What a command says (exit 2) when the configuration or the store cannot be used."""
    return f"{'configuration' if isinstance(exc, ConfigError) else 'store'} error: {exc}"


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Print `error: message` on stderr and exit; the message is plain text (config keys such as
    `[[feeds]]` or `feeds[0].url` are shown as they are, never read as rich markup)."""
    console.print(f"[bold red]error:[/] {escape(message)}", markup=True, soft_wrap=True)
    sys.exit(code)


def state() -> CliState:
    """This invocation's settings and store."""
    return click.get_current_context().find_root().obj


def print_json(data: object) -> None:
    """`data` as indented JSON on stdout (datetimes and other values as their str())."""
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def one_line(text: str) -> str:
    """Outside text on one terminal line: control and bidi characters become spaces."""
    return _UNPRINTABLE.sub(" ", text)
