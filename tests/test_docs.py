"""Every command, option and setting a user can reach is documented (after Datasette's docs tests)."""

import re
from pathlib import Path

import click
import pytest

from digest.cli import main
from digest.config import describe_settings, settings_reference_markdown

ROOT = Path(__file__).resolve().parent.parent
DOCS = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def all_commands(group: click.Group, prefix: str = "digest") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        found.append((path, command))
        if isinstance(command, click.Group):
            found.extend(all_commands(command, path))
    return found


COMMANDS = all_commands(main)


@pytest.mark.parametrize("path, command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_command_is_documented(path, command):
    assert path in DOCS, f"`{path}` is not documented in README.md or docs/*.md"


@pytest.mark.parametrize("path, command", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_option_is_documented(path, command):
    for param in command.params:
        if isinstance(param, click.Option):
            longest = max(param.opts, key=len)
            if longest in ("--help",):
                continue
            assert longest in DOCS, f"option {longest} of `{path}` is not documented"


@pytest.mark.parametrize("key", [k for k, _, _ in describe_settings()])
def test_every_setting_is_documented(key):
    assert f"`{key}`" in DOCS, f"setting {key} is missing from docs/configuration.md (run `make docs`)"


def test_settings_reference_is_current():
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    generated = settings_reference_markdown()
    block = re.search(r"<!-- settings:start -->\n(.*?)<!-- settings:end -->", text, re.S)
    assert block, "docs/configuration.md lost its settings markers"
    assert block.group(1) == generated, "docs/configuration.md is stale: run `make docs`"


def architecture_modules() -> set[str]:
    """The modules docs/architecture.md lists: the `path.py` in the first column of its tables."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([\w/]+\.py)` \|", text, flags=re.MULTILINE))


def package_modules() -> set[str]:
    package = ROOT / "digest"
    return {str(p.relative_to(package)) for p in package.rglob("*.py") if "migrations" not in p.parts}


def test_every_module_is_in_the_architecture_page_and_no_other():
    assert architecture_modules() == package_modules()
