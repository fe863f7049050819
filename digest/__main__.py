"""`digest` and `python -m digest`: the command line, with the feed parser's fork server started first.

A command that parses feeds at once (`fetch`, `demo`) starts the parse workers' fork server
(digest.cpulimit) before the command line's own imports (SQLAlchemy, httpx, click, rich: about
0.3 s of CPU), so that the server's interpreter start and imports run on another CPU meanwhile
and the first feed body can be parsed the moment it lands. This module imports nothing heavy.
With `fetch.parse_cpu_seconds = 0` (parse in-process) the server is started for nothing and
stopped at exit; it costs about 0.1 s of CPU on an otherwise idle core.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

# Not `run`: it fetches hours later, and only once it is the active scheduler (schedule.prepare_fetch).
PARSING_COMMANDS = frozenset({"fetch", "demo"})
# digest.parse.PARSER_PRELOAD, named here so that this module imports nothing heavy.
PARSER_PRELOAD = ("feedparser", "digest.parse")


def main() -> None:
    """Run the `digest` command line."""
    if command_named(sys.argv[1:]) in PARSING_COMMANDS:
        from .cpulimit import start_fork_server

        start_fork_server(preload=PARSER_PRELOAD)
    from .cli import main as cli

    cli()


def command_named(args: Sequence[str]) -> str | None:
    """The subcommand in `args` (what click will run), skipping the group's `--config PATH`."""
    remaining = iter(args)
    for arg in remaining:
        if arg == "--config":
            next(remaining, None)
        elif arg in ("-h", "--help", "--version"):
            return None
        elif not arg.startswith("-"):
            return arg
    return None


if __name__ == "__main__":
    main()
