"""Does the time a sign-up takes to answer tell the address's state? (issue 16.4)

`digest serve` runs as its own process on 127.0.0.1 (SQLite by default, or --store-url, e.g. an
empty PostgreSQL database) with the outbox transport. The store holds one address in each state:
pending, confirmed, unsubscribed, bounced, complained; "new" is a fresh address every time. Rounds
post the subscribe form once per state, in a shuffled order, each from its own address
(X-Forwarded-For, so the form's rate limit stays out of it), and time the answer; between two
posts the bench waits for the work after the answer (store writes, the email) to end, so it never
overlaps the next answer. It prints the median and the 90th percentile per state, and the largest
difference between two states' medians. Before issue 16, on SQLite: new 6.5 ms against confirmed
3.4 ms (one request guessed right 96 % of the time).

Not a test: timings on a shared machine are noisy, so nothing here asserts.

Run: .venv/bin/python bench/bench_signup_timing.py [--rounds N] [--store-url URL]
"""

from __future__ import annotations

import argparse
import os
import random
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
from digest.store import open_store  # noqa: E402
from digest.store.subscribers import add_subscriber, set_status  # noqa: E402

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
KNOWN = {"pending": None, "confirmed": SubscriberStatus.CONFIRMED, "unsubscribed": SubscriberStatus.UNSUBSCRIBED,
         "bounced": SubscriberStatus.BOUNCED, "complained": SubscriberStatus.COMPLAINED}
STATES = ["new", *KNOWN]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(folder: Path, store_url: str) -> tuple[subprocess.Popen, str, Path]:
    """(process, base URL, outbox folder) of `digest serve` with one address in each state."""
    port = free_port()
    config = folder / "digest.toml"
    config.write_text(f'[store]\nurl = "{store_url or f"sqlite:///{folder}/bench.db"}"\n'
                      f'[web]\nbase_url = "http://127.0.0.1:{port}"\nforwarded_allow_ips = "127.0.0.1"\n'
                      # Every new address is @example.org: no per-domain cap, or its emails (the end of
                      # the work this bench waits for) would stop after 30.
                      'confirm_mail_per_domain_hour = 0\n'
                      f'[delivery]\noutbox_dir = "{folder}/outbox"\n', encoding="utf-8")
    settings = load_settings(config)
    engine = open_store(settings.store.url)
    for state, status in KNOWN.items():
        added = add_subscriber(engine, Subscriber(email=f"{state}@example.org"), event="signup")
        if status is not None:
            set_status(engine, added.id, SubscriberStatus.CONFIRMED)
            if status != SubscriberStatus.CONFIRMED:
                set_status(engine, added.id, status)
    engine.dispose()
    proc = subprocess.Popen([sys.executable, "-m", "digest", "--config", str(config), "serve"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{settings.web.base_url}/subscribe", timeout=2)
            return proc, settings.web.base_url, folder / "outbox"
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("digest serve did not start") from None
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60, help="posts per state")
    parser.add_argument("--store-url", default="", help="an empty store to use instead of a new SQLite file")
    args = parser.parse_args()
    times: dict[str, list[float]] = {state: [] for state in STATES}
    with tempfile.TemporaryDirectory() as tmp:
        proc, base, outbox = start_server(Path(tmp), args.store_url)
        try:
            with httpx.Client(base_url=base, timeout=30) as client:
                token = CSRF_RE.search(client.get("/subscribe").text).group(1)
                sent = 0
                for n in range(args.rounds + 2):  # the first two rounds warm up
                    order = random.sample(STATES, len(STATES))
                    for state in order:
                        email = f"new{n}@example.org" if state == "new" else f"{state}@example.org"
                        form = {"csrf_token": token, "email": email, "language": "en"}
                        address = {"x-forwarded-for": f"10.{n % 250}.{STATES.index(state)}.1"}
                        started = time.perf_counter()
                        answer = client.post("/subscribe", data=form, headers=address)
                        took = time.perf_counter() - started
                        assert answer.status_code == 200, answer.status_code
                        if n >= 2:
                            times[state].append(took)
                        if state == "new":  # its email is the end of the work after the answer
                            sent += 1
                            deadline = time.monotonic() + 10
                            while len(list(outbox.glob("*.eml"))) < sent and time.monotonic() < deadline:
                                time.sleep(0.005)
                        time.sleep(0.05)  # the other states' work after the answer (store reads) ends
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    store = "PostgreSQL" if args.store_url.startswith("postgresql") else "SQLite"
    print(f"POST /subscribe, answer time per address state ({store}, {args.rounds} posts each):")
    medians = {}
    for state in STATES:
        ordered = sorted(times[state])
        medians[state] = statistics.median(ordered)
        p90 = ordered[int(len(ordered) * 0.9)]
        print(f"  {state:13} median {medians[state] * 1000:6.2f} ms   p90 {p90 * 1000:6.2f} ms")
    spread = max(medians.values()) - min(medians.values())
    print(f"largest difference between two states' medians: {spread * 1000:.2f} ms")


if __name__ == "__main__":
    main()
