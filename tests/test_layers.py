"""The layers hold: front doors (cli, web, schedule) reach the store only through pipeline use cases.

Walks every import (in-function ones too) of the package's modules with `ast`:
- a front door imports from `digest.store` only opening the store, its error types and (for the
  scheduler) its lock;
- a front door never imports another front door, except the command that launches it
  (`digest serve` starts the web app, `digest run` the scheduler);
- nothing but a front door imports a front door: the pipeline and the stages never do.
"""

from __future__ import annotations

import ast
import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "digest"
FRONT_DOORS = ("digest.cli", "digest.web", "digest.schedule")
STORE = "digest.store"
# Not error types, but what a front door may still take from the store.
STORE_ALLOWED = {"open_store"}
STORE_ALLOWED_FOR = {"digest.schedule": {"SchedulerLock", "JOBS_TABLE"}}
# What starts a front door may import its entry point, and nothing else of it.
LAUNCHES = {
    ("digest.__main__", "digest.cli"),
    ("digest.cli.serve", "digest.web.app"),
    ("digest.cli.run", "digest.schedule"),
}


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module
    names: tuple[str, ...]  # imported names (empty for `import x`)
    line: int

    def __str__(self) -> str:
        names = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.module}:{self.line} imports {self.target}{names}"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[Import]:
    """Every import statement in the file, relative ones resolved against its package."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [Import(name, alias.name, (), node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")
            if node.level:
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(Import(name, target, tuple(alias.name for alias in node.names), node.lineno))
    return found


def all_imports() -> list[Import]:
    return [imp for path in sorted(PACKAGE.rglob("*.py")) for imp in imports_of(path)]


def front_door(module: str) -> str | None:
    return next((door for door in FRONT_DOORS if module == door or module.startswith(door + ".")), None)


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def store_name_allowed(importer: str, target: str, name: str) -> bool:
    """Opening the store, an error type, or (schedule) the scheduler's lock; never a submodule."""
    if name in STORE_ALLOWED or name in STORE_ALLOWED_FOR.get(importer, set()):
        return True
    value = getattr(importlib.import_module(target), name, None)
    return isinstance(value, type) and issubclass(value, Exception)


def store_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        if not front_door(imp.module) or not within(imp.target, STORE):
            continue
        if not imp.names or not all(store_name_allowed(imp.module, imp.target, n) for n in imp.names):
            bad.append(str(imp))
    return bad


def door_violations(imports: list[Import]) -> list[str]:
    bad = []
    for imp in imports:
        target_door = front_door(imp.target)
        if target_door is None or target_door == front_door(imp.module):
            continue
        if (imp.module, imp.target) in LAUNCHES:
            continue
        bad.append(str(imp))
    return bad


def test_front_doors_take_nothing_from_the_store_but_opening_it_and_its_errors():
    assert store_violations(all_imports()) == []


def test_no_front_door_calls_another_and_nothing_below_calls_a_front_door():
    assert door_violations(all_imports()) == []


# --- the checks themselves can fail ---------------------------------------------------------------

def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, relative: str, source: str) -> Path:
    """A module file under a stand-in package root, so `module_name` resolves it as part of digest."""
    root = tmp_path / "digest"
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    monkeypatch.setitem(globals(), "PACKAGE", root)
    return path


def test_a_front_door_reaching_into_the_store_is_caught(tmp_path, monkeypatch):
    path = write_module(tmp_path, monkeypatch, "web/rogue.py", (
        "from ..store.issues import list_issues, IssueNotFound\n"
        "def page():\n    from ..store import subscribers as store\n"
        "from ..store import open_store, StoreError\n"))
    bad = store_violations(imports_of(path))
    assert bad == ["digest.web.rogue:1 imports digest.store.issues (list_issues, IssueNotFound)",
                   "digest.web.rogue:3 imports digest.store (subscribers)"]


def test_a_front_door_calling_another_is_caught_and_a_launch_is_not(tmp_path, monkeypatch):
    rogue = write_module(tmp_path, monkeypatch, "web/rogue.py", "from ..schedule import send_now\n")
    serve = write_module(tmp_path, monkeypatch, "cli/serve.py", "from ..web.app import create_app\n")
    stage = write_module(tmp_path, monkeypatch, "deliver/rogue.py", "import digest.web.texts\n")
    pipe = write_module(tmp_path, monkeypatch, "pipeline/rogue.py", "from ..cli.base import state\n")
    found = door_violations([*imports_of(rogue), *imports_of(serve), *imports_of(stage), *imports_of(pipe)])
    assert found == ["digest.web.rogue:1 imports digest.schedule (send_now)",
                     "digest.deliver.rogue:1 imports digest.web.texts",
                     "digest.pipeline.rogue:1 imports digest.cli.base (state)"]
