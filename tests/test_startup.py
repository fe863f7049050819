"""The `digest` entry points as a user starts them, and what a fresh process loads: only the command
it runs (click's lazy group), the language detector only when a language must be guessed.

Each check runs a real process, so nothing imported by other tests hides a regression.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import FEEDS
from http_feed_server import FeedServer, static

import digest.cli
from digest.cli import COMMAND_MODULES, main
from digest.store import open_store

# Runs the real CLI, then writes the names of every module it imported to the file named in argv[1].
PROBE = """
import atexit, json, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
from digest.cli import main
main(prog_name="digest")
"""


def run_probe(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    out = tmp_path / "modules.json"
    result = subprocess.run([sys.executable, "-c", PROBE, str(out), *args], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    return result, set(json.loads(out.read_text()))


@pytest.fixture
def server():
    srv = FeedServer().start()
    yield srv
    srv.stop()


def test_the_command_table_names_every_command_and_its_module():
    for info in pkgutil.iter_modules(digest.cli.__path__):
        __import__(f"digest.cli.{info.name}")  # registers every command there is
    assert set(main.commands) == set(COMMAND_MODULES), "add new commands to COMMAND_MODULES in digest/cli/__init__.py"
    for name, module in COMMAND_MODULES.items():
        command = main.commands[name]
        assert command.name == name
        assert command.callback.__module__ == f"digest.cli.{module}"


def test_help_lists_every_command_with_its_short_help():
    output = CliRunner().invoke(main, ["--help"], terminal_width=200).output
    for name in COMMAND_MODULES:
        short = main.commands[name].get_short_help_str(limit=45).removesuffix("...")
        assert f"  {name} " in output and short in output, name


def test_an_unknown_command_is_still_refused_with_a_suggestion():
    result = CliRunner().invoke(main, ["fetc"])
    assert result.exit_code == 2 and "Did you mean 'fetch'" in result.output


def test_fetch_loads_only_its_command(tmp_path, server):
    server.routes["/wp"] = static((FEEDS / "wordpress-rss.xml").read_bytes())
    store = f"sqlite:///{tmp_path / 'digest.db'}"
    open_store(store).dispose()  # as `digest init` leaves it: at head
    (tmp_path / "digest.toml").write_text(
        f'[store]\nurl = "{store}"\n\n[[feeds]]\nname = "WP"\nurl = "{server.url("/wp")}"\nkind = "brief"\n',
        encoding="utf-8")

    first, modules = run_probe(tmp_path, "--config", "digest.toml", "fetch", "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["new"] > 0
    assert {m for m in modules if m.startswith("digest.cli.")} == {"digest.cli.base", "digest.cli.fetch"}

    again, _ = run_probe(tmp_path, "--config", "digest.toml", "fetch", "--json")
    assert json.loads(again.stdout)["status"] == "not_modified"


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "digest"],
    [str(Path(sys.executable).with_name("digest"))],  # the installed script: digest.__main__:main
])
def test_the_entry_points_run_the_command_line(tmp_path, command):
    result = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout and "  fetch " in result.stdout and "  run " in result.stdout
    refused = subprocess.run([*command, "fetc"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert refused.returncode == 2 and "Did you mean 'fetch'" in refused.stderr


def test_the_language_detector_loads_only_when_a_language_must_be_guessed():
    code = f"""
import sys
from pathlib import Path
from digest.models import Feed, ItemKind
from digest.parse import parse_feed
feeds = Path({str(FEEDS)!r})
stated = parse_feed((feeds / "wordpress-rss.xml").read_bytes(), Feed("WP", "https://example.org/", ItemKind.BRIEF), ())
print("py3langid" in sys.modules)
guessed = parse_feed((feeds / "google-alerts.xml").read_bytes(), Feed("GA", "https://example.org/", ItemKind.MEDIA), ())
print("py3langid" in sys.modules, sorted({{i.language for i in guessed.items if i.language}}))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    before, after = result.stdout.splitlines()
    assert before == "False"
    assert after.startswith("True") and "'de'" in after
