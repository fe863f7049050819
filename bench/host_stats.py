"""What the bench's processes and the PostgreSQL server on this host used: CPU time from /proc, the
machine's busy share, a database's transaction count (bench_workers.py, send_steps.py)."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg


def server_transactions(admin: psycopg.Connection, database: str) -> int:
    admin.execute("SELECT pg_stat_clear_snapshot()")
    row = admin.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
                        (database,)).fetchone()
    return int(row[0]) if row else 0


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (idle and iowait are not busy)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    total = sum(values[:8]) / tick
    return total - (values[3] + values[4]) / tick, total


class BackendCpu:
    """CPU seconds of the PostgreSQL backends serving one database (the server runs on this host):
    their pids from pg_stat_activity, their time from /proc/PID/stat, kept per pid as last seen
    (a backend's last <= 0.5 s before it exits is missed)."""

    def __init__(self, admin: psycopg.Connection, database: str) -> None:
        self.admin, self.database = admin, database
        self.seen: dict[int, float] = {}

    def sample(self) -> None:
        rows = self.admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,)).fetchall()
        for (pid,) in rows:
            if cpu := process_cpu(pid):
                self.seen[pid] = cpu

    def total(self) -> float:
        return sum(self.seen.values())
