"""The `digest` command line: thin commands that parse input, call one pipeline use case, show the result.

Each command module imports what it needs at its top; the only lazy loading is here, at the
command boundary (click's lazy-loading pattern): a module is imported when its command is used,
so `digest fetch` does not load the web app or the scheduler. COMMAND_MODULES maps each top-level
command to the module whose import registers it on `main` (a test checks the table is complete).
The table itself is lazy rather than `get_command`, so click's "Did you mean" and completion see
every command.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, MutableMapping

import click

from .base import main

COMMAND_MODULES = {
    "admin": "run", "approve": "build", "audit": "audit", "bounces": "bounces", "build": "build", "config": "feeds", "demo": "demo", "feeds": "feeds",
    "fetch": "fetch", "init": "init",
    "issue": "build", "render": "render", "run": "run", "send": "send", "series": "series", "serve": "serve", "status": "run",
    "subscribers": "subscribers", "users": "users", "worker": "send",
}


class LazyCommands(MutableMapping):
    """A Group's command table that imports a command's module the first time the command is looked up.

    Listing names imports nothing; looking one up (running it, its --help) imports its module;
    walking the items (`digest --help`, the docs tests) imports them all.
    """

    def __init__(self, modules: dict[str, str], package: str, loaded: dict[str, click.Command]) -> None:
        self._modules, self._package, self._loaded = modules, package, dict(loaded)

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded and name in self._modules:
            importlib.import_module(f"{self._package}.{self._modules[name]}")  # registers it via __setitem__
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        del self._loaded[name]
        self._modules.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._modules

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._loaded.keys() | self._modules.keys()))

    def __len__(self) -> int:
        return len(self._loaded.keys() | self._modules.keys())


main.commands = LazyCommands(COMMAND_MODULES, __name__, main.commands)

__all__ = ["main"]
