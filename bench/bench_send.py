"""Delivery throughput and memory: `digest send` versus a raw smtplib loop, and 100,000 subscribers.

1. Throughput, side by side in one run, against the same counting aiosmtpd sink on 127.0.0.1 (its own
   process, so it never shares a GIL with the sender), 4 connections each:
   - raw: 4 threads, each one smtplib connection, sending one pre-built message over and over;
   - digest: `send_issue` on a fresh SQLite store: ledger fill, render per segment, per-subscriber
     message, claim/commit `sending`, SMTP, commit `sent` per message. Wall time of the whole call.
   The paths alternate for 3 rounds; the best run of each is kept, with the CPU time this process
   spent per message (the sink's CPU not included). Target: digest ≥ 90 % of raw.
2. Memory: in a fresh subprocess, 100,000 confirmed subscribers, ledger fill and send through a
   null transport (4 threads); peak RSS (ru_maxrss). Target: under 200 MB.

Run: .venv/bin/python bench/bench_send.py [--messages N] [--subscribers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DIGEST_SECRET", "bench-secret")

from send_helpers import add_many, approved_issue, smtp_settings  # noqa: E402

from digest.deliver.editions import edition_messages  # noqa: E402
from digest.deliver.transport import SendResult, Transport  # noqa: E402
from digest.pipeline.sending import send_issue  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.store.issues import require_issue  # noqa: E402
from digest.store.subscribers import get_subscriber  # noqa: E402

CONNECTIONS = 4
SINK = r"""
import sys, threading
from aiosmtpd.controller import Controller
count = 0
lock = threading.Lock()
class Handler:
    async def handle_DATA(self, server, session, envelope):
        global count
        with lock:
            count += 1
        return "250 OK"
import socket
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
c = Controller(Handler(), hostname="127.0.0.1", port=port, decode_data=False)
c.start()
print(port, flush=True)
for line in sys.stdin:
    print(count, flush=True)
c.stop()
"""


class Sink:
    """A counting aiosmtpd server in its own process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", SINK], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)
        self.port = int(self.proc.stdout.readline())

    def count(self) -> int:
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def raw_loop(port: int, data: bytes, sender: str, recipient: str, total: int) -> float:
    """Messages/s of 4 threads each sending `total / 4` copies of one message over one connection."""
    each = total // CONNECTIONS

    def run() -> None:
        conn = smtplib.SMTP("127.0.0.1", port)
        for _ in range(each):
            conn.sendmail(sender, [recipient], data)
        conn.quit()

    threads = [threading.Thread(target=run) for _ in range(CONNECTIONS)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return each * CONNECTIONS / (time.perf_counter() - start)


def digest_send(port: int, total: int, workdir: Path) -> tuple[float, float, bytes, str, str]:
    """Messages/s and CPU ms per message of `send_issue` to `total` fresh subscribers; also one
    message it built, for the raw loop."""
    url = f"sqlite:///{workdir / 'digest.db'}"
    settings = smtp_settings(workdir, url, port, batch_size=200, smtp={"host": "127.0.0.1", "port": port,
                                                                        "connections": CONNECTIONS})
    engine = open_store(url)
    number = approved_issue(engine, settings)
    emails = add_many(engine, total)
    sample = edition_messages(settings, require_issue(engine, number))(get_subscriber(engine, emails[0]))
    cpu, start = cpu_seconds(), time.perf_counter()
    report = send_issue(settings, engine, number)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    engine.dispose()
    assert report.sent == total, report
    return total / elapsed, cpu / total * 1000, sample.data, sample.envelope_from, emails[0]


class NullTransport(Transport):
    def send_messages(self, messages):
        return [SendResult(m.message_id, ok=True, code=250) for m in messages]

    def close(self) -> None:
        pass


def memory_run(subscribers: int) -> dict:
    """In this (fresh) process: fill the store, send to `subscribers` through a null transport."""
    with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'digest.db'}"
        settings = smtp_settings(workdir, url, 25, batch_size=500, smtp={"connections": CONNECTIONS})
        engine = open_store(url)
        number = approved_issue(engine, settings)
        for start in range(0, subscribers, 10_000):
            add_many(engine, min(10_000, subscribers - start), prefix=f"r{start}-")
        began = time.perf_counter()
        report = send_issue(settings, engine, number, make_transport=NullTransport)
        elapsed = time.perf_counter() - began
        engine.dispose()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"subscribers": subscribers, "sent": report.sent, "seconds": round(elapsed, 1),
            "rate": round(report.sent / elapsed), "peak_mb": round(peak_mb, 1)}


def cpu_seconds() -> float:
    """CPU time of this process (every thread), not of the sink."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A real list's size: with 2,000 the fixed start of a send (ledger fill, one edition per segment,
    # a probe message) is ~5 % of digest's time, which the raw loop, sending a pre-built message, never pays.
    parser.add_argument("--messages", type=int, default=5000, help="messages per throughput run")
    parser.add_argument("--subscribers", type=int, default=100_000, help="subscribers for the memory run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds (best kept)")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_run(args.memory_child)))
        return

    sink = Sink()
    raw_rates, digest_rates, raw_cpu, digest_cpu = [], [], [], []
    try:
        for round_number in range(args.rounds):
            with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
                rate, cpu, data, sender, recipient = digest_send(sink.port, args.messages, Path(tmp))
                digest_cpu.append(cpu)
            digest_rates.append(rate)
            before = cpu_seconds()
            raw_rates.append(raw_loop(sink.port, data, sender, recipient, args.messages))
            raw_cpu.append((cpu_seconds() - before) / args.messages * 1000)
            print(f"round {round_number + 1}: raw {raw_rates[-1]:,.0f} msg/s, digest {digest_rates[-1]:,.0f} msg/s",
                  flush=True)
        received = sink.count()
    finally:
        sink.close()
    raw, ours = max(raw_rates), max(digest_rates)
    print(f"\nthroughput, {CONNECTIONS} connections, {args.messages} messages of {len(data):,} bytes each "
          f"(sink received {received:,}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  raw smtplib loop : {raw:8,.0f} msg/s   {min(raw_cpu):.2f} ms CPU per message (client side)")
    print(f"  digest send      : {ours:8,.0f} msg/s   {min(digest_cpu):.2f} ms CPU per message "
          f"({ours / raw:.0%} of raw; target >= 90%)")

    child = subprocess.run([sys.executable, __file__, "--memory-child", str(args.subscribers)],
                           capture_output=True, text=True, check=True)
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"\nmemory, {memory['subscribers']:,} subscribers (ledger fill + send, null transport, "
          f"{CONNECTIONS} threads)")
    print(f"  peak RSS         : {memory['peak_mb']:8,.1f} MB   (target < 200 MB)")
    print(f"  sent             : {memory['sent']:8,} in {memory['seconds']} s ({memory['rate']:,} msg/s)")


if __name__ == "__main__":
    main()
