"""Files holding working links are the owner's alone, whatever the umask: the SQLite store and the demo's output."""

from __future__ import annotations

import os
import stat

import pytest
from click.testing import CliRunner
from sqlalchemy import text

from digest.cli import main
from digest.store import open_store


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def test_a_new_sqlite_store_and_its_wal_files_are_0600_and_its_folder_0700(tmp_path, umask):
    path = tmp_path / "data" / "digest.db"
    engine = open_store(f"sqlite:///{path}")
    with engine.begin() as conn:  # the migrations and this write leave the -wal and -shm files in place
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
        conn.execute(text("INSERT INTO probe VALUES (1)"))
        assert {p.name: mode(p) for p in path.parent.iterdir()} == {
            "digest.db": 0o600, "digest.db-wal": 0o600, "digest.db-shm": 0o600}
    engine.dispose()
    assert mode(path.parent) == 0o700


def test_a_store_an_older_version_left_readable_is_made_private_when_opened(tmp_path, umask):
    path = tmp_path / "digest.db"
    older = open_store(f"sqlite:///{path}")
    with older.begin() as conn:  # still connected: its -wal and -shm files stay
        conn.execute(text("CREATE TABLE probe (x INTEGER)"))
        files = [path, path.with_name("digest.db-wal"), path.with_name("digest.db-shm")]
        for file in files:
            file.chmod(0o644)
        open_store(f"sqlite:///{path}").dispose()
        assert [mode(f) for f in files] == [0o600, 0o600, 0o600]
    older.dispose()


def test_the_demo_output_holding_working_links_is_private(tmp_path, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "test-secret")
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(main, ["demo", "--dir", str(tmp_path / "demo")])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    outbox = tmp_path / "demo" / "outbox"
    messages = list(outbox.glob("*.eml"))
    assert messages and b"/unsubscribe" in messages[0].read_bytes()  # personal links: whoever reads them acts
    assert mode(outbox) == 0o700 and {mode(m) for m in messages} == {0o600}
    stores = list((tmp_path / "demo").glob("*.db"))
    assert stores and {mode(s) for s in stores} == {0o600}
