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
