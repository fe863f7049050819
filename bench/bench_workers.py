"""Many senders on one PostgreSQL, DKIM on, one killed mid-way: do they reach the mail server's ceiling?

Set-up, all real processes: a fresh PostgreSQL database (created and dropped here, on the server of
DIGEST_BENCH_POSTGRES_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/); N confirmed
subscribers and the approved sample issue; a digest.toml with the smtp transport, `[delivery.dkim]`
on with a fresh RSA-2048 key (whatever signer digest/deliver/dkim.py has is what gets measured);
the counting aiosmtpd sink of bench/smtp_sink.py in its own process; K `digest worker` processes,
then `digest send --issue N` (the send fills the ledger; the workers join in).

Fault: when the sink has received 40 % of the messages, one sender (a worker by default) is killed
with SIGKILL and started again at once.

Baseline, in the same run against the same sink: a raw smtplib loop sending one pre-built, signed
message of this issue over as many connections as the digest senders use together, its threads at
the nice value of digest's sending threads (`delivery.nice`, `--nice`); run before and after
digest's send, the faster run is the baseline.

Prints: messages/s (first `digest send` start to the last recipient received, and the steady rate
between 10 % and 90 %) and the ratio to the raw loop, and when the first message arrived; lost
(recipients never received: must be 0) and duplicates (copies beyond one per recipient: at most
kills × connections); per sender process its peak RSS (VmHWM, sampled every 0.1 s), its CPU time
per message it sent (os.wait4; start-up included) and its PostgreSQL round trips per claimed
batch, counted by bench/sender_probe.py, which each sender runs the real command line through; the
server's transaction count as a cross-check; the CPU time of the PostgreSQL backends serving the
bench's database (from /proc: the server must run on this host); a DKIM check of sampled received
messages with dkimpy.
Rounds: the whole run is done `--rounds` times (default 3), each round with its own database,
sink and raw loop; a round's ratio moves by ±0.05 with the host's noise, so the verdict takes
the median. Target: the median >= 0.8x the raw loop; in every round 0 lost, duplicates at most
kills × connections and every sampled signature verifying.

Run: .venv/bin/python bench/bench_workers.py [--quick] [--rounds R] [--subscribers N] [--workers K] ...
`make bench` runs the default 3 rounds of 20,000 (about 2 min in a quiet hour); --quick (5,000,
about 20 s a round) is for a first look: there the senders' start-up weighs four times as much
in the ratio.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("DIGEST_SECRET", "bench-secret")

import dkim  # noqa: E402
import psycopg  # noqa: E402
from conftest import SERIES  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402
from host_stats import BackendCpu, machine_busy, process_cpu, server_transactions  # noqa: E402
from send_helpers import add_many, approved_issue  # noqa: E402
from smtp_sink import Sink, raw_loop  # noqa: E402
from sqlalchemy import text  # noqa: E402

from digest.config import load_settings  # noqa: E402
from digest.deliver.editions import edition_messages  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.store.issues import require_issue  # noqa: E402
from digest.store.subscribers import get_subscriber  # noqa: E402

SERVER_URL = os.environ.get("DIGEST_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/")
KILL_AT = 0.4

PROBE = Path(__file__).resolve().parent / "sender_probe.py"


@dataclass
class Sender:
    """One `digest send` or `digest worker` process under the probe."""

    role: str
    command: list[str]
    workdir: Path
    number: int
    proc: subprocess.Popen = field(init=False)
    stats_path: Path = field(init=False)
    killed: bool = False
    rusage: resource.struct_rusage | None = None
    exit_code: int | None = None
    peak_kib: int = 0

    def __post_init__(self) -> None:
        self.stats_path = self.workdir / f"probe-{self.role}-{self.number}.json"
        log = open(self.workdir / f"{self.role}-{self.number}.log", "w")  # open for the process's life
        self.proc = subprocess.Popen([sys.executable, str(PROBE), str(self.stats_path), *self.command],
                                     cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT)

    @property
    def name(self) -> str:
        return f"{self.role} #{self.number}" + (" (killed)" if self.killed else "")

    def sample_memory(self) -> None:
        """Keep the process's peak RSS so far (VmHWM). Not ru_maxrss: a child inherits its parent's
        high-water mark across fork and exec, and this process is ~100 MB."""
        if self.rusage is not None:
            return
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except OSError:
            return
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    def reap(self) -> None:
        """Wait for the process and keep its resource usage (peak RSS, CPU time)."""
        if self.rusage is None:
            _, status, self.rusage = os.wait4(self.proc.pid, 0)
            self.exit_code = self.proc.returncode = os.waitstatus_to_exitcode(status)

    def reap_within(self, seconds: float) -> bool:
        if self.rusage is not None:
            return True
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            pid, status, usage = os.wait4(self.proc.pid, os.WNOHANG)
            if pid:
                self.rusage, self.exit_code = usage, os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.exit_code
                return True
            time.sleep(0.1)
        return False

    def probe(self) -> dict | None:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return None  # killed: no counts


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # a JSON string is a TOML basic string


def write_config(path: Path, store_url: str, port: int, connections: int, batch: int, sign: bool,
                 nice: int | None = None) -> None:
    tables = {
        "store": {"url": store_url},
        "web": {"base_url": "https://digest.example.org"},
        "delivery": {"transport": "smtp", "batch_size": batch, "retry_delay": 0.5, "retry_max_delay": 2.0,
                     "sender": "Bench Digest <digest@example.org>"},
        "delivery.smtp": {"host": "127.0.0.1", "port": port, "connections": connections, "timeout": 30.0},
        "delivery.dkim": {"selector": "bench", "domain": "example.org", "key_file": "dkim.pem"},
    }
    if not sign:
        del tables["delivery.dkim"]
    if nice is not None:
        tables["delivery"]["nice"] = nice
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items()]
    for series in SERIES:
        lines.append("[[series]]")
        lines += [f"{key} = {toml_value(value)}" for key, value in series.items()]
    path.write_text("\n".join(lines) + "\n")


def write_key(path: Path) -> bytes:
    """A fresh RSA-2048 key (mode 600); returns the DNS record's p= value."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(public)


def holder_pid(holder: str) -> int:
    """The process id in a claim holder `send@host:pid:scope:random`."""
    return int(holder.rsplit("@", 1)[1].rsplit(":", 3)[1])


def run(args: argparse.Namespace, workdir: Path, admin: psycopg.Connection, database: str) -> str:
    store_url = SERVER_URL.rstrip("/") + "/" + database
    config = workdir / "digest.toml"
    dns_key = write_key(workdir / "dkim.pem")
    samples = workdir / "samples"
    samples.mkdir()
    sink = Sink(samples=samples, sample_every=max(1, args.subscribers // 10))
    senders: list[Sender] = []
    try:
        write_config(config, store_url, sink.port, args.connections, args.batch, sign=not args.no_dkim,
                     nice=args.nice)
        settings = load_settings(config)
        nice = settings.delivery.nice
        engine = open_store(store_url)
        number = approved_issue(engine, settings)
        for start in range(0, args.subscribers, 10_000):
            add_many(engine, min(10_000, args.subscribers - start), prefix=f"r{start}-")
        first = get_subscriber(engine, "r0-0@example.net")
        sample = edition_messages(settings, require_issue(engine, number))(first)
        total_connections = (args.workers + 1) * args.connections
        raw_messages = args.raw_messages or min(args.subscribers, 5000)

        raw_sink_cpu = process_cpu(sink.proc.pid)
        raw_before = raw_loop(sink.port, sample.data, sample.envelope_from, first.email, raw_messages,
                              total_connections, nice)
        raw_sink_cpu = (process_cpu(sink.proc.pid) - raw_sink_cpu) / sink.reset()["messages"]
        print(f"raw smtplib loop (before): {raw_before:,.0f} msg/s; the sink's CPU {raw_sink_cpu * 1000:.2f} ms "
              "per message", flush=True)

        common = ["--config", str(config)]
        worker_command = [*common, "worker", "--interval", "0.5"]
        send_command = [*common, "send", "--issue", str(number)]
        for i in range(args.workers):
            senders.append(Sender("worker", worker_command, workdir, i + 1))
        time.sleep(args.warmup)  # the workers' start-up (imports) is not the send's
        transactions_before = server_transactions(admin, database)
        backends = BackendCpu(admin, database)
        backends.sample()
        backend_cpu_before = backends.total()
        sink_cpu_before, machine_before = process_cpu(sink.proc.pid), machine_busy()
        started = time.perf_counter()
        senders.append(Sender("send", send_command, workdir, 1))
        victim_role = args.kill
        kills, timeline = 0, []
        deadline = started + max(120.0, args.subscribers / 10)
        while time.perf_counter() < deadline:
            for sender in senders:
                sender.sample_memory()
            if len(timeline) % 5 == 0:
                backends.sample()
            counts = sink.count()
            now = time.perf_counter() - started
            timeline.append((now, counts["recipients"]))
            if counts["recipients"] >= args.subscribers:
                break
            if victim_role != "none" and not kills and counts["recipients"] >= KILL_AT * args.subscribers:
                victim = next(s for s in senders if s.role == victim_role and s.rusage is None)
                victim.sample_memory()
                os.kill(victim.proc.pid, signal.SIGKILL)
                victim.killed = True
                victim.reap()
                kills += 1
                command = worker_command if victim_role == "worker" else send_command
                senders.append(Sender(victim_role, command, workdir, sum(s.role == victim_role for s in senders) + 1))
                print(f"killed {victim.role} #{victim.number} with SIGKILL at {counts['recipients']:,} received, {now:.1f} s; started it again",
                      flush=True)
            time.sleep(0.1)
        elapsed = timeline[-1][0]
        sink_cpu = process_cpu(sink.proc.pid) - sink_cpu_before
        machine_after = machine_busy()
        busy = (machine_after[0] - machine_before[0]) / max(machine_after[1] - machine_before[1], 1e-9)
        print(f"digest: {timeline[-1][1]:,} of {args.subscribers:,} recipients received in {elapsed:.1f} s",
              flush=True)

        # The last sender marks the issue sent once nothing is open; then stop the workers.
        with engine.connect() as conn:
            query = text("SELECT status FROM issues WHERE number = :n")
            for _ in range(300):
                if conn.execute(query, {"n": number}).scalar() == "sent":
                    break
                for sender in senders:
                    sender.sample_memory()
                backends.sample()
                time.sleep(0.1)
                conn.rollback()
        backends.sample()
        for sender in senders:
            if sender.role == "send" and sender.rusage is None and not sender.reap_within(60):
                sender.proc.send_signal(signal.SIGTERM)
        for sender in senders:
            if sender.rusage is None:
                sender.proc.send_signal(signal.SIGTERM)
        for sender in senders:
            if not sender.reap_within(30):
                sender.proc.kill()
                sender.reap()
        backend_cpu = backends.total() - backend_cpu_before
        time.sleep(1.5)  # backends report their statistics when they exit
        transactions = server_transactions(admin, database) - transactions_before
        time.sleep(0.5)
        received = sink.count()

        with engine.connect() as conn:
            status = conn.execute(text("SELECT status FROM issues WHERE number = :n"), {"n": number}).scalar()
            ledger = dict(conn.execute(text(
                "SELECT status, count(*) FROM deliveries WHERE issue_number = :n GROUP BY status"), {"n": number}).all())
            per_holder = conn.execute(text(
                "SELECT claimed_by, count(*) FROM deliveries WHERE issue_number = :n AND status = 'sent' "
                "GROUP BY claimed_by"), {"n": number}).all()
        engine.dispose()
        sent_by_pid: dict[int, int] = {}
        for holder, count in per_holder:
            sent_by_pid[holder_pid(holder)] = sent_by_pid.get(holder_pid(holder), 0) + count

        raw_after = raw_loop(sink.port, sample.data, sample.envelope_from, first.email, raw_messages,
                             total_connections, nice)
        print(f"raw smtplib loop (after):  {raw_after:,.0f} msg/s", flush=True)
    finally:
        for sender in senders:
            if sender.rusage is None:
                sender.proc.kill()
                sender.reap()
        sink.close()

    raw = max(raw_before, raw_after)
    rate = received["recipients"] / elapsed if elapsed else 0.0
    steady = steady_rate(timeline, args.subscribers)
    lost = args.subscribers - received["recipients"]
    duplicates = received["duplicates"]
    allowed = kills * args.connections
    load = os.getloadavg()

    print(f"\n{args.subscribers:,} subscribers, {args.workers} `digest worker` + `digest send`, "
          f"{args.connections} SMTP connections each, batch {args.batch}, sending threads at nice {nice}, "
          f"{'no DKIM' if args.no_dkim else 'DKIM rsa-sha256 2048 bit'}, "
          f"{len(sample.data):,}-byte messages; load average {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} CPUs")
    print(f"  raw smtplib loop : {raw:8,.0f} msg/s   ({total_connections} connections, one {'unsigned' if args.no_dkim else 'signed'} message; "
          f"before {raw_before:,.0f}, after {raw_after:,.0f})")
    print(f"  digest senders   : {rate:8,.0f} msg/s   whole run incl. start-up, ledger fill, the kill: "
          f"{rate / raw:.2f}x raw (target >= 0.8x)")
    if steady:
        print(f"                     {steady:8,.0f} msg/s   steady, 10 % to 90 % received: {steady / raw:.2f}x raw")
    first = next((t for t, n in timeline if n), None)
    if first is not None:
        print(f"                     first message received {first:.1f} s after `digest send` started "
              "(its start-up, the ledger fill, the workers' next pass)")
    print(f"  lost             : {lost:8,}         (must be 0)")
    print(f"  duplicates       : {duplicates:8,}         (at most kills x connections = {allowed}); "
          f"distinct Message-IDs {received['message_ids']:,}")
    print(f"  issue            : {status}; ledger {dict(sorted(ledger.items()))}")

    print("\n  process           exit  peak RSS   sent    CPU s  CPU ms/msg  round trips  batches  per batch "
          "(claiming)  per msg")
    all_trips = all_batches = 0
    for sender in senders:
        usage = sender.rusage
        cpu = usage.ru_utime + usage.ru_stime
        sent = sent_by_pid.get(sender.proc.pid, 0)
        probe = sender.probe()
        per_msg = f"{cpu / sent * 1000:10.2f}" if sent else "         -"
        if probe and probe["batches"]:
            all_trips += probe["round_trips"]
            all_batches += probe["batches"]
            trips = (f"{probe['round_trips']:11,}  {probe['batches']:7,}  {probe['round_trips'] / probe['batches']:9.1f} "
                     f"({probe['claim_round_trips'] / probe['batches']:6.1f})  "
                     f"{probe['round_trips'] / sent if sent else 0:7.2f}")
        else:
            trips = "          -        -          -               -" + ("  (killed: no probe counts)"
                                                                           if sender.killed else "")
        print(f"  {sender.name:17} {sender.exit_code:4}  {sender.peak_kib / 1024:6.1f} MB {sent:6,} {cpu:8.2f} "
              f"{per_msg}  {trips}")
        if sender.exit_code not in (0, -signal.SIGKILL):
            log = (sender.workdir / f"{sender.role}-{sender.number}.log").read_text(errors="replace")
            print("      its last lines: " + " | ".join(log.strip().splitlines()[-3:]))
    if all_batches:
        print(f"  PostgreSQL round trips per claimed batch of up to {args.batch}: "
              f"{all_trips / all_batches:.1f} (probe, processes that exited normally); "
              f"server transactions for the whole send: {transactions:,} "
              f"= {transactions / max(1, received['recipients']):.2f} per message")

    print(f"  PostgreSQL server CPU for the whole send: {backend_cpu:.1f} s = "
          f"{backend_cpu / max(1, received['recipients']) * 1000:.2f} ms per message (its backends, from /proc)")
    print(f"  the sink's CPU until the last recipient: {sink_cpu:.1f} s = "
          f"{sink_cpu / max(1, received['recipients']) * 1000:.2f} ms per message; the machine was busy "
          f"{busy:.0%} of that time ({os.cpu_count()} CPUs)")
    verified, checked = (0, 0) if args.no_dkim else verify_samples(samples, dns_key)
    if not args.no_dkim:
        print(f"  DKIM             : {verified} of {checked} sampled messages verify with dkimpy")
    safe = lost == 0 and duplicates <= allowed and verified == checked
    print(f"this round: {rate / raw:.2f}x raw; lost {lost}, duplicates {duplicates} (bound {allowed}), "
          f"DKIM {verified} of {checked}: {'safe' if safe else 'NOT SAFE'}")
    return Round(rate / raw, steady / raw if steady else 0.0, safe)


@dataclass(frozen=True)
class Round:
    """One run's ratios to its raw loop (whole run, steady) and whether it lost, doubled or broke nothing."""

    ratio: float
    steady: float
    safe: bool


def verdict(rounds: list[Round], no_dkim: bool) -> str:
    """Print the rounds' ratios and their median; the target's verdict: the median of the whole-run
    ratios at least 0.8x, and every round safe (0 lost, duplicates within the bound, DKIM verifies)."""
    median = statistics.median(r.ratio for r in rounds)
    if len(rounds) > 1:
        print(f"\n{len(rounds)} rounds, whole run: " + " ".join(f"{r.ratio:.2f}x" for r in rounds) +
              f", median {median:.2f}x; steady: " + " ".join(f"{r.steady:.2f}x" for r in rounds) +
              f", median {statistics.median(r.steady for r in rounds):.2f}x")
    if no_dkim:
        return "not measured (--no-dkim)"
    met = median >= 0.8 and all(r.safe for r in rounds)
    return "met" if met else "MISSED"


def steady_rate(timeline: list[tuple[float, int]], total: int) -> float | None:
    """Recipients per second between 10 % and 90 % received."""
    low = next((t for t, n in timeline if n >= 0.1 * total), None)
    high = next(((t, n) for t, n in timeline if n >= 0.9 * total), None)
    low_n = next((n for t, n in timeline if n >= 0.1 * total), 0)
    if low is None or high is None or high[0] <= low:
        return None
    return (high[1] - low_n) / (high[0] - low)


def verify_samples(samples: Path, dns_key: bytes) -> tuple[int, int]:
    record = b"v=DKIM1; k=rsa; p=" + dns_key

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record

    files = sorted(samples.glob("*.eml"))
    failed = [f for f in files if not dkim.verify(f.read_bytes(), dnsfunc=dns)]
    if failed:  # kept for a look: the run's own folder is deleted
        keep = Path(tempfile.mkdtemp(prefix="bench-workers-dkim-failed-"))
        for f in failed:
            (keep / f.name).write_bytes(f.read_bytes())
        (keep / "dns.txt").write_bytes(record + b"\n")
        print(f"  DKIM failures kept in {keep}")
    return len(files) - len(failed), len(files)


@contextmanager
def scratch_database(prefix: str) -> Iterator[tuple[psycopg.Connection, str] | None]:
    """A fresh database on the server of SERVER_URL, dropped afterwards: (an autocommit connection to
    the server, the database's name), or None (said on stdout) when there is no PostgreSQL."""
    database = f"{prefix}_{os.getpid()}"
    admin_url = SERVER_URL.replace("postgresql+psycopg://", "postgresql://").rstrip("/") + "/postgres"
    try:
        admin = psycopg.connect(admin_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        print(f"skipped: no PostgreSQL at {admin_url} ({exc})")
        yield None
        return
    admin.execute(f'CREATE DATABASE "{database}"')
    try:
        yield admin, database
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="5,000 subscribers, for a first look")
    parser.add_argument("--workers", type=int, default=2, help="`digest worker` processes besides `digest send`")
    parser.add_argument("--connections", type=int, default=4, help="delivery.smtp.connections of each sender")
    parser.add_argument("--batch", type=int, default=200, help="delivery.batch_size")
    parser.add_argument("--kill", choices=("worker", "send", "none"), default="worker",
                        help="which sender is killed with SIGKILL at 40 %% and started again")
    parser.add_argument("--raw-messages", type=int, default=0, help="messages per raw run (default min(N, 5000))")
    parser.add_argument("--no-dkim", action="store_true", help="without [delivery.dkim]: what signing costs")
    parser.add_argument("--nice", type=int, help="delivery.nice of the senders, and of the raw loop's threads "
                                                     "(default: the setting's default)")
    parser.add_argument("--rounds", type=int, default=3, help="runs, each with its own raw loop; the verdict "
                                                                  "takes their median")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds the workers get to start first")
    args = parser.parse_args()
    if args.quick:  # below ~5,000 the senders' start-up (imports, ledger fill, render) dominates the ratio
        args.subscribers = 5000

    rounds = []
    for number in range(args.rounds):
        if args.rounds > 1:
            print(f"\n--- round {number + 1} of {args.rounds}", flush=True)
        with scratch_database("bench_workers") as scratch:
            if scratch is None:
                return 0
            admin, database = scratch
            with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
                rounds.append(run(args, Path(tmp), admin, database))
    result = verdict(rounds, args.no_dkim)
    print(f"target (median of the rounds >= 0.8x raw with DKIM on; every round 0 lost, duplicates within "
          f"kills x connections, DKIM verifies): {result}")
    print(f"exit 0 either way (a bench reports, the target line says it: {result})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
