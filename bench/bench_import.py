"""Subscriber import: `digest subscribers import` on 100,000 rows, time and peak memory, in one run.

Each import runs as its own process (the real command line); its wall time and peak RSS
(ru_maxrss from os.wait4) are measured. Side by side:
  - 10,000 rows vs 100,000 rows (time should grow ~10x, memory barely: the file is streamed);
  - first import (all added) vs re-import (all unchanged) vs 10% edited;
  - `digest --help` as the baseline memory of the interpreter and its libraries;
  - PostgreSQL (first imports) when DIGEST_TEST_POSTGRES_URL's server answers (else skipped).
Target: 100,000 rows under 30 s and 200 MB.

Run: .venv/bin/python bench/bench_import.py
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERIES = ["esa-security-defence", "esa-economy-trade", "esa-digital-technology"]
PG_ADMIN = os.environ.get("DIGEST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FIRST = "Anna Ben Carla David Elena Franz Giulia Hans Ines Jean Katrin Luc Marie Nils Olga Pierre".split()
LAST = "Müller Dubois Schmidt Martin Weber Bernard Fischer Petit Wagner Durand Becker Leroy".split()


def write_list(path: Path, rows: int, edited_every: int = 0) -> None:
    rng = random.Random(5)
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("email,name,language,series\n")
        for n in range(rows):
            name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
            language = rng.choice(("en", "en", "fr", "de"))
            series = ";".join(rng.sample(SERIES, rng.choice((0, 0, 1, 2))))
            if edited_every and n % edited_every == 0:
                name += " (edited)"
            fh.write(f"reader{n}@example{n % 97}.org,{name},{language},{series}\n")


def write_config(folder: Path, store_url: str) -> Path:
    series = "".join(f'[[series]]\nid = "{s}"\nname = "{s}"\n' for s in SERIES)
    config = folder / "digest.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n{series}', encoding="utf-8")
    return config


def run(config: Path, *args: str) -> tuple[float, float, float, str]:
    """(wall seconds, CPU seconds, peak MB, first output line) of one `digest` process."""
    env = {**os.environ, "DIGEST_SECRET": "bench-secret"}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", "from digest.cli import main; main()", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    out = proc.stdout.read().decode()
    proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) not in (0,):
        raise SystemExit(f"digest {' '.join(args)} failed: {out}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss / 1024, out.splitlines()[0] if out else ""


def bench_backend(label: str, store_for: callable, folder: Path, lists: dict[str, Path], full: bool) -> list[tuple]:
    """The SQLite run does every case; PostgreSQL the first import only (keeps the bench under 2 minutes)."""
    rows = []
    small_cfg = write_config(folder / f"{label}-small", store_for("small"))
    rows.append((label, "10,000 rows, first import", *run(small_cfg, "subscribers", "import", str(lists["10k"]))))
    config = write_config(folder / f"{label}-big", store_for("big"))
    rows.append((label, "100,000 rows, first import", *run(config, "subscribers", "import", str(lists["100k"]))))
    if full:
        rows.append((label, "100,000 rows, re-import", *run(config, "subscribers", "import", str(lists["100k"]))))
        rows.append((label, "100,000 rows, 10% edited", *run(config, "subscribers", "import", str(lists["edited"]))))
    return rows


def postgres_store() -> tuple[callable, callable] | None:
    try:
        from sqlalchemy import create_engine, text

        admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception:  # noqa: BLE001 - no server: the PostgreSQL rows are skipped
        return None
    names: list[str] = []

    def store_for(_: str) -> str:
        name = f"digest_bench_{uuid.uuid4().hex[:10]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        names.append(name)
        return PG_ADMIN.rsplit("/", 1)[0] + "/" + name

    def cleanup() -> None:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return store_for, cleanup


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        lists = {"10k": folder / "10k.csv", "100k": folder / "100k.csv", "edited": folder / "edited.csv"}
        write_list(lists["10k"], 10_000)
        write_list(lists["100k"], 100_000)
        write_list(lists["edited"], 100_000, edited_every=10)
        for sub in ("sqlite-small", "sqlite-big", "postgres-small", "postgres-big"):
            (folder / sub).mkdir()
        base = run(write_config(folder / "sqlite-small", f"sqlite:///{folder}/help.db"), "--help")
        rows = bench_backend("sqlite", lambda name: f"sqlite:///{folder}/{name}.db", folder, lists, True)
        pg = postgres_store()
        if pg:
            try:
                rows += bench_backend("postgres", pg[0], folder, lists, False)
            finally:
                pg[1]()
    print(f"baseline `digest --help`: {base[0]:.2f} s wall, {base[1]:.2f} s CPU, peak {base[2]:.0f} MB")
    print(f"{'backend':9} {'case':28} {'wall s':>7} {'CPU s':>6} {'peak MB':>8} {'µs/row':>7}  report")
    for backend, case, seconds, cpu, peak, line in rows:
        count = 10_000 if case.startswith("10,000") else 100_000
        print(f"{backend:9} {case:28} {seconds:7.2f} {cpu:6.2f} {peak:8.0f} {seconds / count * 1e6:7.0f}  {line}")
    for backend in sorted({r[0] for r in rows}):
        small, big = (r for r in rows if r[0] == backend and "first" in r[1])
        print(f"{backend}: 100k/10k time ratio {big[2] / small[2]:.1f}x, memory ratio {big[4] / small[4]:.2f}x; "
              f"100k peak is {big[4] / base[2]:.2f}x the bare CLI's; "
              f"targets: {'OK' if big[2] < 30 and big[4] < 200 else 'MISSED'} (< 30 s, < 200 MB)")
    print(f"load average now: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (wall time grows with it; CPU time does not)")


if __name__ == "__main__":
    main()
