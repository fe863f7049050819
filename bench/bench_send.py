"""Delivery throughput and memory: `digest send` versus a raw smtplib loop, and 100,000 subscribers.

1. Throughput, side by side in one run, against the same counting aiosmtpd sink on 127.0.0.1
   (bench/smtp_sink.py: its own process, so it never shares a GIL with the sender), 4 connections each:
   - raw: 4 threads, each one smtplib connection, sending one pre-built message over and over (at
     the nice value digest's sending threads have, delivery.nice);
   - digest: `send_issue` on a fresh SQLite store: ledger fill, render per segment, per-subscriber
     message, claim/commit `sending`, SMTP, commit `sent` per message. Wall time of the whole call.
   5 alternating rounds (digest, raw, digest, raw, …); the ratio digest/raw of each round, and the
   median of those ratios with its spread (lowest–highest), so a regression can be told from the
   host's noise. CPU time this process spent per message is printed too (the sink's not included).
   Target: median >= 90 % of raw (no DKIM).
2. A remote relay: the same two paths against a sink whose every reply arrives 20 ms after it is
   written (`--latency`), as over a link with a 20 ms round trip. smtplib's `sendmail` waits for
   each reply (MAIL, RCPT, DATA, end of data: 4 round trips per message); a client using SMTP
   PIPELINING (RFC 2920, which the sink offers) sends MAIL, RCPT and DATA together. Printed: the
   rates, their ratio, and the round trips per message each implies (connections / rate / latency).
3. Memory: in a fresh subprocess, 100,000 confirmed subscribers, ledger fill and send through a null
   transport (4 threads); peak RSS (VmHWM). Target: under 200 MB.

Run: .venv/bin/python bench/bench_send.py [--messages N] [--rounds N] [--latency S] [--subscribers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DIGEST_SECRET", "bench-secret")

from send_helpers import add_many, approved_issue, smtp_settings  # noqa: E402
from smtp_sink import Sink, raw_loop  # noqa: E402

from digest.config import DeliverySettings  # noqa: E402
from digest.deliver.editions import edition_messages  # noqa: E402
from digest.deliver.transport import SendResult, Transport  # noqa: E402
from digest.pipeline.sending import send_issue  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.store.issues import require_issue  # noqa: E402
from digest.store.subscribers import get_subscriber  # noqa: E402

CONNECTIONS = 4


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
    # VmHWM, this process's own peak: ru_maxrss would include the parent's high-water mark, which a
    # child inherits across fork and exec (and the parent, having sent 25,000 messages, is ~100 MB).
    status = Path("/proc/self/status").read_text()
    peak_mb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) / 1024
    return {"subscribers": subscribers, "sent": report.sent, "seconds": round(elapsed, 1),
            "rate": round(report.sent / elapsed), "peak_mb": round(peak_mb, 1)}


def cpu_seconds() -> float:
    """CPU time of this process (every thread), not of the sink."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def alternate(port: int, messages: int, rounds: int, label: str) -> dict:
    """`rounds` alternating runs of digest then raw against the sink on `port`; rates, CPU, ratios."""
    runs = {"digest": [], "raw": [], "digest_cpu": [], "raw_cpu": [], "ratio": []}
    for round_number in range(rounds):
        with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
            rate, cpu, data, sender, recipient = digest_send(port, messages, Path(tmp))
        runs["digest"].append(rate)
        runs["digest_cpu"].append(cpu)
        before = cpu_seconds()
        runs["raw"].append(raw_loop(port, data, sender, recipient, messages, CONNECTIONS, DeliverySettings().nice))
        runs["raw_cpu"].append((cpu_seconds() - before) / messages * 1000)
        runs["ratio"].append(runs["digest"][-1] / runs["raw"][-1])
        print(f"{label} round {round_number + 1}: digest {runs['digest'][-1]:,.0f} msg/s, "
              f"raw {runs['raw'][-1]:,.0f} msg/s: {runs['ratio'][-1]:.0%}", flush=True)
    runs["size"] = len(data)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # A real list's size: with 2,000 the fixed start of a send (ledger fill, one edition per segment,
    # a probe message) is ~5 % of digest's time, which the raw loop, sending a pre-built message, never pays.
    parser.add_argument("--messages", type=int, default=5000, help="messages per throughput run")
    parser.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds (median kept)")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds each reply of the remote-relay sink takes")
    parser.add_argument("--latency-messages", type=int, default=400, help="messages per run against that sink")
    parser.add_argument("--subscribers", type=int, default=100_000, help="subscribers for the memory run")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_run(args.memory_child)))
        return

    sink = Sink()
    try:
        runs = alternate(sink.port, args.messages, args.rounds, "throughput")
        received = sink.count()["messages"]
    finally:
        sink.close()
    ratio = statistics.median(runs["ratio"])
    print(f"\nthroughput, {CONNECTIONS} connections, {args.messages} messages of {runs['size']:,} bytes each, "
          f"{args.rounds} alternating rounds (sink received {received:,}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    print(f"  raw smtplib loop : {statistics.median(runs['raw']):8,.0f} msg/s median "
          f"({min(runs['raw']):,.0f}-{max(runs['raw']):,.0f})   "
          f"{statistics.median(runs['raw_cpu']):.2f} ms CPU per message (client side)")
    print(f"  digest send      : {statistics.median(runs['digest']):8,.0f} msg/s median "
          f"({min(runs['digest']):,.0f}-{max(runs['digest']):,.0f})   "
          f"{statistics.median(runs['digest_cpu']):.2f} ms CPU per message")
    print(f"  digest / raw     : {ratio:8.0%} median of the rounds' ratios, spread "
          f"{min(runs['ratio']):.0%}-{max(runs['ratio']):.0%} "
          f"({' '.join(f'{r:.0%}' for r in runs['ratio'])})")
    print(f"target (median >= 90% of raw, no DKIM): {'met' if ratio >= 0.9 else 'MISSED'}")

    relay = Sink(latency=args.latency)
    try:
        delayed = alternate(relay.port, args.latency_messages, 1, f"{args.latency * 1000:.0f} ms relay")
    finally:
        relay.close()
    digest_rate, raw_rate = delayed["digest"][0], delayed["raw"][0]
    print(f"\nremote relay: every reply {args.latency * 1000:.0f} ms late, {CONNECTIONS} connections, "
          f"{args.latency_messages} messages (the sink offers PIPELINING)")
    for name, rate in (("raw smtplib loop", raw_rate), ("digest send", digest_rate)):
        print(f"  {name:17}: {rate:8,.1f} msg/s   = {CONNECTIONS / rate / args.latency:.1f} round trips per message")
    print(f"  digest / raw     : {digest_rate / raw_rate:8.0%}   (PIPELINING shows as fewer round trips than "
          f"the raw loop's ~4)")

    child = subprocess.run([sys.executable, __file__, "--memory-child", str(args.subscribers)],
                           capture_output=True, text=True, check=True)
    memory = json.loads(child.stdout.strip().splitlines()[-1])
    print(f"\nmemory, {memory['subscribers']:,} subscribers (ledger fill + send, null transport, "
          f"{CONNECTIONS} threads)")
    print(f"  peak RSS         : {memory['peak_mb']:8,.1f} MB   (target < 200 MB)")
    print(f"  sent             : {memory['sent']:8,} in {memory['seconds']} s ({memory['rate']:,} msg/s)")


if __name__ == "__main__":
    main()
