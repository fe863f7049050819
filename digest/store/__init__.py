"""The store: the only stateful module. SQLAlchemy Core over SQLite (default) or PostgreSQL.

`open_store(url)` returns an Engine with the schema migrated to the newest version; the
functions in items, feeds, issues, subscribers and ledger take that engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import ArgumentError, OperationalError

from ..private_files import create_private_file, make_private, private_folder
from .migrate import MigrationError, upgrade_to_head


class StoreError(Exception):
    """The store cannot be opened or used; the message says why and what to do."""


def open_store(url: str, migrate: bool = True) -> Engine:
    """Connect to the store at `url` and bring its schema up to date (never losing data).

    Raises StoreError (the CLI's exit 2) when the store cannot be opened or migrated.
    """
    try:
        engine = _create_engine(url)
        if migrate:
            upgrade_to_head(engine)
    except ArgumentError as exc:
        raise StoreError(f"store.url {url!r} is not a database URL ({exc})") from None
    except OperationalError as exc:
        raise StoreError(f"cannot open the store at {_redact(url)} (store.url): {exc.orig}") from None
    except MigrationError as exc:
        raise StoreError(f"{exc} (store.url {_redact(url)})") from None
    return engine


@contextmanager
def relaxed_durability(engine: Engine, pool_size: int | None = None) -> Iterator[Engine]:
    """The same store through connections whose commits do not wait for the disk; for writes a rerun redoes.

    SQLite (WAL) commits with synchronous=NORMAL, PostgreSQL with synchronous_commit off: a
    crashed or killed process loses nothing, a power loss may roll back the last commits (never
    corrupting the store). Only for work that is simply done again, e.g. a fetch: its items and
    validators roll back together, so the next run downloads those feeds again. See docs/store.md.
    `pool_size`: connections kept for threads that each hold one (SQLAlchemy's default is 5).
    """
    if engine.dialect.name == "sqlite" and engine.url.database in (None, "", ":memory:"):
        yield engine  # an in-memory database exists only behind its own engine
        return
    relaxed = _create_engine(engine.url.render_as_string(hide_password=False), pool_size)
    statement = "PRAGMA synchronous=NORMAL" if relaxed.dialect.name == "sqlite" else "SET synchronous_commit TO off"

    def relax(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(statement)
        cursor.close()
        dbapi_connection.commit()  # a PostgreSQL SET is transactional: keep it past a pool reset

    event.listen(relaxed, "connect", relax)
    try:
        yield relaxed
    finally:
        relaxed.dispose()


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _create_engine(url: str, pool_size: int | None = None) -> Engine:
    pool = {"pool_size": pool_size} if pool_size else {}
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1] if "///" in url else ""
        if path and path != ":memory:":
            try:
                private_folder(Path(path).parent)
                _private_sqlite_files(Path(path))
            except OSError as exc:
                raise StoreError(f"cannot create the store {exc.filename or path} ({exc.strerror or exc}): "
                                 f"point store.url at a folder digest can write (now {_redact(url)})") from None
        engine = create_engine(url, connect_args={"timeout": 30}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, **pool)


def _private_sqlite_files(path: Path) -> None:
    """The store file 0600 (it holds every reader's address and the links' tokens), whatever the umask.

    SQLite gives its -wal, -shm and -journal files the database file's mode, so creating the
    file 0600 before SQLite does covers them; a store made 0644 by an older version is tightened.
    """
    if "?" in path.name or path.name.startswith("file:"):
        return  # a URI filename: SQLite reads the options, there is no plain path to set up
    try:
        os.close(create_private_file(path))
    except FileExistsError:
        for file in (path, *(path.with_name(path.name + suffix) for suffix in ("-wal", "-shm", "-journal"))):
            make_private(file)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets readers (web, status) run while a fetch or send writes; busy_timeout waits out writers.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url
