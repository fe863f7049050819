"""A burst of admin sign-ins against `digest serve`: do the public pages stay responsive? (issue 16.1)

`digest serve` runs as its own process on 127.0.0.1 with a real-cost admin password hash (scrypt,
log2 n = 15, about 32 MiB each) and trusts X-Forwarded-For from loopback, so one burst can come
from many addresses. Side by side in one run:
1. before: the median (and 90th percentile) time of a public GET (an unsubscribe page: a store
   read in the thread pool), nothing else running;
2. during a burst of N parallel wrong passwords from one address, then from N addresses (posted by
   a process of their own): the same GET, repeated for as long as the burst lasts.
It prints the medians, the ratio during/before, how the burst was answered (401 checked, 429
refused) and the server's peak memory (VmHWM). Before issue 16 (one address, N = 120): 55 of 60
checked, the unsubscribe GET from 43 ms to 7.2 s, 87 MiB to 1,162 MiB.

Not a test: timings on a shared 2-core machine are noisy, so nothing here asserts.

Run: .venv/bin/python bench/bench_login_burst.py [--burst N] [--samples N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("DIGEST_SECRET", "bench-secret")

from digest.config import load_settings  # noqa: E402
from digest.models import Subscriber, SubscriberStatus  # noqa: E402
from digest.passwords import hash_password  # noqa: E402
from digest.signing import subscriber_links  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.store.subscribers import add_subscriber  # noqa: E402

TOKEN_RE = re.compile(r'name="login_token" value="([^"]+)"')


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path) -> tuple[subprocess.Popen, str, str]:
    """(process, base URL, a public page's URL) of `digest serve` on a fresh SQLite store."""
    port = free_port()
    config = folder / "digest.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{folder}/bench.db"\n'
                      f'[web]\nbase_url = "http://127.0.0.1:{port}"\nforwarded_allow_ips = "127.0.0.1"\n'
                      f'admin_password_hash = "{hash_password("the right one")}"\n', encoding="utf-8")
    settings = load_settings(config)
    engine = open_store(settings.store.url)
    reader = add_subscriber(engine, Subscriber(email="reader@example.org", status=SubscriberStatus.CONFIRMED))
    engine.dispose()
    public = subscriber_links(settings, reader).unsubscribe_url
    proc = subprocess.Popen([sys.executable, "-m", "digest", "--config", str(config), "serve"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(public, timeout=2)
            return proc, settings.web.base_url, public
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("digest serve did not start") from None
            time.sleep(0.2)


def peak_memory_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def time_gets(url: str, samples: int, until: subprocess.Popen | None = None) -> list[float]:
    """Seconds per GET of `url`, one after another: `samples` of them, or for as long as `until` runs."""
    times = []
    with httpx.Client(timeout=120) as reader:
        while (until is None and len(times) < samples) or (until is not None and until.poll() is None):
            started = time.perf_counter()
            # A new address every time: the page's own rate limit is not what is measured.
            answer = reader.get(url, headers={"x-forwarded-for": f"192.0.2.{len(times) % 250}"})
            times.append(time.perf_counter() - started)
            assert answer.status_code == 200, answer.status_code
    return times


async def post_burst(base: str, count: int, many_addresses: bool) -> dict[int, int]:
    """Post `count` wrong passwords at once; how they were answered (status: how many)."""
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(max_connections=count)) as client:
        page = await client.get("/admin/login")
        form = {"login_token": TOKEN_RE.search(page.text).group(1), "name": "Mallory", "password": "wrong"}
        prefix = f"10.{count % 250}.{int(many_addresses)}"
        print("start", flush=True)  # the GETs are timed from here

        async def post(n: int) -> int:
            address = f"{prefix}.{n % 250}" if many_addresses else f"{prefix}.1"
            return (await client.post("/admin/login", data=form, headers={"x-forwarded-for": address})).status_code

        codes = await asyncio.gather(*(post(n) for n in range(count)))
    return {code: codes.count(code) for code in sorted(set(codes))}


def burst(base: str, public: str, count: int, many_addresses: bool) -> tuple[list[float], dict[int, int]]:
    """GET times while `count` wrong passwords are posted at once (by another process); and their answers."""
    poster = subprocess.Popen([sys.executable, __file__, "--post-to", base, "--burst", str(count)]
                              + (["--many"] if many_addresses else []), stdout=subprocess.PIPE, text=True)
    assert poster.stdout.readline().strip() == "start", "the burst's process did not start"
    times = time_gets(public, 0, until=poster)
    return times, {int(k): v for k, v in json.loads(poster.stdout.read()).items()}


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))]
    return f"median {statistics.median(times) * 1000:7.1f} ms, p90 {p90 * 1000:7.1f} ms ({len(times)} GETs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=120, help="parallel sign-ins per burst")
    parser.add_argument("--samples", type=int, default=40, help="GETs timed before the bursts")
    parser.add_argument("--post-to", default="", help=argparse.SUPPRESS)  # the burst's own process
    parser.add_argument("--many", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.post_to:
        print(json.dumps(asyncio.run(post_burst(args.post_to, args.burst, args.many))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        proc, base, public = start_server(Path(tmp))
        try:
            time_gets(public, 10)  # warm-up: first requests, templates
            quiet = time_gets(public, args.samples)
            print(f"public GET, nothing else running:       {summary(quiet)}")
            print(f"server peak memory before the bursts:   {peak_memory_mib(proc.pid):7.1f} MiB")
            for many in (False, True):
                during, codes = burst(base, public, args.burst, many)
                ratio = statistics.median(during) / statistics.median(quiet)
                who = f"{args.burst} addresses" if many else "one address"
                print(f"during {args.burst} sign-ins from {who + ':':14} {summary(during)}, "
                      f"{ratio:.1f}x before; answers {codes}")
                print(f"server peak memory so far:              {peak_memory_mib(proc.pid):7.1f} MiB")
        finally:
            proc.terminate()
            proc.wait(timeout=20)


if __name__ == "__main__":
    main()
