"""The package imports, the CLI answers --help, and the store migrates on both backends."""

from click.testing import CliRunner
from sqlalchemy import inspect

from digest.cli import main


def test_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "digest" in result.output


def test_store_has_every_table(engine):
    tables = set(inspect(engine).get_table_names())
    assert {"items", "feeds", "issues", "subscribers", "deliveries", "locks", "alembic_version"} <= tables


def test_error_messages_keep_their_brackets(tmp_path):
    """fail() prints plain text: `[[feeds]]` and `[site]` in a message are not read as rich markup."""
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "d.db"}"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "fetch"])
    assert result.exit_code == 2
    assert "add [[feeds]] tables" in result.output

    config.write_text("[site]\nnmae = 'x'\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "fetch"])
    assert result.exit_code == 2 and "site.nmae" in result.output
