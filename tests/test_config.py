"""Configuration: defaults, validation errors that name the key and the fix, `digest init`."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from digest.cli import main
from digest.config import ConfigError, load_settings, settings_from_dict
from digest.models import ItemKind


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "digest.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_empty_file_gives_every_default(tmp_path):
    settings = load_settings(write(tmp_path, ""))
    assert settings.site.timezone == "Europe/Brussels"
    assert settings.digest.window_days == 7
    assert settings.delivery.transport == "outbox"
    assert settings.fetch.max_bytes == 32 * 1024 * 1024
    assert settings.store.url == f"sqlite:///{(tmp_path / 'digest.db').resolve()}"


def test_interface_example_loads(tmp_path):
    text = '''
[site]
name = "Europa Progressiva Foundation"
timezone = "Europe/Brussels"
[[feeds]]
name = "Publications"
url = "https://www.example.org/feed/"
kind = "brief"
[[feeds]]
name = "Media"
url = "media.xml"
kind = "media"
language = "de"
[[series]]
id = "esa-security-defence"
name = "European Strategic Autonomy – Security & Defence"
aliases = ["European Strategic Autonomy series - Security & Defense"]
url = "https://www.example.org/series/security-defence/"
[delivery.smtp]
security = "starttls"
port = 587
'''
    s = load_settings(write(tmp_path, text))
    assert [f.kind for f in s.feeds] == [ItemKind.BRIEF, ItemKind.MEDIA]
    assert s.series[0].aliases == ("European Strategic Autonomy series - Security & Defense",)
    assert s.delivery.smtp.port == 587
    assert s.resolve_path(s.feeds[1].url) == tmp_path / "media.xml"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("[site]\ncolour = 'red'", "unknown key 'site.colour'"),
        ("bogus = 1", "unknown key 'bogus'"),
        ("[digest]\nwindow_days = 'seven'", "'digest.window_days' must be a whole number"),
        ("[digest]\nwindow_days = 0", "'digest.window_days' is 0"),
        ("[site]\ntimezone = 'Mars/Olympus'", "'site.timezone' is 'Mars/Olympus'"),
        ("[site]\nlanguage = 'xx'", "'site.language' is 'xx'"),
        ("[delivery]\ntransport = 'pigeon'", "'delivery.transport' is 'pigeon'"),
        ("[delivery.smtp]\nsecurity = 'ssl3'", "'delivery.smtp.security'"),
        ("[[feeds]]\nname = 'A'\nurl = 'a.xml'\nkind = 'podcast'", "'feeds[0].kind' is 'podcast'"),
        ("[[feeds]]\nname = 'A'", "'feeds[0]' is missing 'url'"),
        ("[[feeds]]\nname = 'A'\nurl = 'a'\n[[feeds]]\nname = 'A'\nurl = 'b'", "'feeds[1].name' repeats 'A'"),
        ("[[series]]\nid = 'bad id!'\nname = 'X'", "'series[0].id' is 'bad id!'"),
        ("[[series]]\nid = 'x'\nname = 'X'\naliases = 'Y'", "'series[0].aliases' must be a list"),
        ("[schedule]\nauto_approve = 'yes'", "'schedule.auto_approve' must be true or false"),
        ("[store]\nurl = 'mysql://x'", "'store.url'"),
        ("site = 3", "[site] must be a table"),
        ("[site\nname='x'", "invalid TOML"),
    ],
)
def test_errors_name_the_key_and_the_fix(tmp_path, text, expected):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(write(tmp_path, text))
    assert expected in str(excinfo.value)


def test_missing_file_says_how_to_create_one(tmp_path):
    with pytest.raises(ConfigError, match="digest init"):
        load_settings(tmp_path / "nope.toml")


def test_not_utf8_is_a_clear_error(tmp_path):
    path = tmp_path / "digest.toml"
    path.write_bytes(b"[site]\nname = '\xff'\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_settings(path)


def test_cli_config_error_exits_2_with_the_message(tmp_path):
    path = write(tmp_path, "[site]\ncolour = 'red'")
    result = CliRunner().invoke(main, ["--config", str(path), "init", str(tmp_path / "x")])
    # init writes its own config; a broken --config only matters to commands that read it
    assert result.exit_code == 0
    result = CliRunner().invoke(main, ["--config", str(path), "status"])
    assert result.exit_code == 2
    assert "unknown key 'site.colour'" in result.output


def test_init_writes_a_config_that_loads_and_creates_the_store(tmp_path):
    result = CliRunner().invoke(main, ["init", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    settings = load_settings(tmp_path / "site" / "digest.toml")
    assert settings.feeds[0].name == "Publications"
    assert (tmp_path / "site" / "digest.db").exists()
    again = CliRunner().invoke(main, ["init", str(tmp_path / "site")])
    assert "keeping it" in again.output


def test_settings_from_dict_keeps_absolute_store_urls(tmp_path):
    s = settings_from_dict({"store": {"url": "postgresql+psycopg://u@h/db"}}, base_dir=tmp_path)
    assert s.store.url == "postgresql+psycopg://u@h/db"
