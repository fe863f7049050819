"""Database locks shared by every process using one store: lease rows and PostgreSQL advisory locks.

A lease lock is a row in `locks` (name, holder, expires_at): it works on SQLite and PostgreSQL and
survives nothing but its own expiry, so the holder renews it while it works. A holder made by
`lock_holder()` names its host, its process id and its process scope (the boot and PID namespace
the id belongs to), which lets a new process in the same scope take over at once from a holder that
was killed (kill -9 leaves its lease behind) instead of waiting for expiry. Containers that share a
host name but not a PID namespace have different scopes: they never judge each other's processes.

An advisory lock (PostgreSQL only) belongs to a database session and vanishes when that session
ends, however the process died; `advisory_lock` keeps one connection open for as long as it is held.
"""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, Engine, delete, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from .schema import locks


def lock_holder(role: str = "digest") -> str:
    """A holder name unique to this process: `role@host:pid:scope:random` (scope: see process_scope)."""
    return f"{role}@{socket.gethostname()}:{os.getpid()}:{process_scope()}:{uuid.uuid4().hex[:8]}"


@functools.cache
def process_scope() -> str:
    """8 hex digits naming where this process's id means something: this boot and PID namespace.

    Two processes may test each other's pids only when their scopes match. Made from the kernel's
    boot id and the inode of /proc/self/ns/pid; where neither exists (not Linux) the host name has
    to do, and the scope is the same for every process on it.
    """
    parts = []
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
            parts.append(boot.read().strip())
    except OSError:
        pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8]


def holder_is_dead(holder: str) -> bool:
    """True when `holder` (from lock_holder) names a process in this host's scope that no longer runs.

    Holders from another host or scope (another container, another boot), or in an older format
    without a scope, are never taken for dead: their rows wait for claim_timeout.
    """
    try:
        host, pid, scope, _ = holder.rsplit("@", 1)[1].rsplit(":", 3)
        pid_number = int(pid)
    except (IndexError, ValueError):
        return False
    if host != socket.gethostname() or scope != process_scope() or pid_number == os.getpid():
        return False
    try:
        os.kill(pid_number, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by someone else
        return False
    return _is_zombie(pid_number)


def _is_zombie(pid: int) -> bool:
    # A killed child not yet reaped by its parent still answers kill(0); it holds nothing any more.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def acquire_lock(engine: Engine, name: str, holder: str, ttl: float, now: datetime | None = None) -> bool:
    """Take the lease lock `name` for `ttl` seconds; True if `holder` now holds it.

    Succeeds when the lock is free, expired, already held by `holder` (a renewal), or held by a
    dead process on this host. Never blocks.
    """
    now = now or datetime.now(UTC)
    expires = now + timedelta(seconds=ttl)
    try:
        with engine.begin() as conn:
            conn.execute(insert(locks).values(name=name, holder=holder, expires_at=expires))
        return True
    except IntegrityError:
        pass
    with engine.begin() as conn:
        current = conn.execute(select(locks.c.holder).where(locks.c.name == name)).scalar()
        if current is None:
            conn.execute(insert(locks).values(name=name, holder=holder, expires_at=expires))
            return True
        takeover = current == holder or holder_is_dead(current)
        condition = locks.c.holder == current if takeover else locks.c.expires_at < now
        result = conn.execute(
            update(locks).where(locks.c.name == name, condition).values(holder=holder, expires_at=expires)
        )
        return result.rowcount == 1


def renew_lock(engine: Engine, name: str, holder: str, ttl: float, now: datetime | None = None) -> bool:
    """Extend `holder`'s lease by `ttl` seconds from now; False if it lost the lock meanwhile."""
    now = now or datetime.now(UTC)
    with engine.begin() as conn:
        result = conn.execute(
            update(locks)
            .where(locks.c.name == name, locks.c.holder == holder)
            .values(expires_at=now + timedelta(seconds=ttl))
        )
    return result.rowcount == 1


def release_lock(engine: Engine, name: str, holder: str) -> None:
    """Give the lock up if `holder` holds it; harmless otherwise."""
    with engine.begin() as conn:
        conn.execute(delete(locks).where(locks.c.name == name, locks.c.holder == holder))


def lock_owner(engine: Engine, name: str) -> str | None:
    """Who holds the lease lock `name` (expired or not), for messages."""
    with engine.connect() as conn:
        return conn.execute(select(locks.c.holder).where(locks.c.name == name)).scalar()


def advisory_key(name: str) -> int:
    """The signed 64-bit key PostgreSQL's advisory locks use for `name` (stable across processes)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


@contextmanager
def advisory_lock(engine: Engine, name: str) -> Iterator[bool]:
    """Try PostgreSQL's session advisory lock `name`; yields True while held, False if taken.

    Holds one pooled connection for the duration; the lock ends with the session, so a killed
    holder never blocks the next one.
    """
    if engine.dialect.name != "postgresql":
        raise ValueError("advisory locks need PostgreSQL; use acquire_lock (a lease row) on SQLite")
    key = advisory_key(name)
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        held = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar())
        try:
            yield held
        finally:
            if held:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})


# --- the one acting scheduler ---------------------------------------------------------------------

SCHEDULER_LOCK = "digest-scheduler"
# APScheduler's persistent job store (the scheduler's next run times) lives in this table.
JOBS_TABLE = "scheduler_jobs"


class SchedulerLock:
    """The database lock that makes one scheduler act: a PostgreSQL advisory lock or an SQLite lease row."""

    def __init__(self, engine: Engine, lease_seconds: float) -> None:
        self.engine, self.lease_seconds = engine, lease_seconds
        self.holder = lock_holder("scheduler")
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free; True if this process now holds it."""
        if _on_sqlite(self.engine):
            return acquire_lock(self.engine, SCHEDULER_LOCK, self.holder, self.lease_seconds)
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": advisory_key(SCHEDULER_LOCK)}).scalar():
            self._conn = conn
            return True
        conn.close()
        return False

    def renew(self) -> bool:
        """Still ours? Renews the lease; on PostgreSQL checks the lock's session is alive."""
        if _on_sqlite(self.engine):
            return renew_lock(self.engine, SCHEDULER_LOCK, self.holder, self.lease_seconds)
        try:
            assert self._conn is not None
            self._conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - a dead session means the lock is gone
            return False

    def release(self) -> None:
        """Give the lock up; harmless when it is already gone."""
        if _on_sqlite(self.engine):
            release_lock(self.engine, SCHEDULER_LOCK, self.holder)
        elif self._conn is not None:
            try:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": advisory_key(SCHEDULER_LOCK)})
                self._conn.close()
            except Exception:  # noqa: BLE001 - the session is gone, and the lock with it
                self._conn.invalidate()
            self._conn = None

    def owner(self) -> str:
        """Who holds the lock, for messages."""
        return active_scheduler(self.engine) or "unknown"


def active_scheduler(engine: Engine) -> str | None:
    """Who holds the scheduler lock: the lease holder (SQLite), or the PostgreSQL backend pid."""
    if _on_sqlite(engine):
        return lock_owner(engine, SCHEDULER_LOCK)
    key = advisory_key(SCHEDULER_LOCK)
    query = text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                 "AND classid = :hi AND objid = :lo AND objsubid = 1")
    with engine.connect() as conn:
        pid = conn.execute(query, {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF}).scalar()
    return None if pid is None else f"PostgreSQL session pid {pid} (advisory lock)"


def _on_sqlite(engine: Engine) -> bool:
    """Lease rows where there are no advisory locks (SQLite)."""
    return engine.dialect.name != "postgresql"
