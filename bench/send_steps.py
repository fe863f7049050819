"""What one message costs a sender, step by step: CPU per message of each step of the send loop,
one thread, nothing else competing (the figures docs/scaling.md builds on).

Set-up: a fresh PostgreSQL database (created and dropped here, on the server of
DIGEST_BENCH_POSTGRES_URL), N confirmed subscribers and the approved sample issue, DKIM on with a
fresh RSA-2048 key, the counting aiosmtpd sink of bench/smtp_sink.py in its own process. Steps,
each over every subscriber in turn, timed with the process's CPU clock:
- build: the personalised message without DKIM (the edition factory of `digest send`);
- build + DKIM: the same with the RSA-2048 signature (the signature alone is printed beside it);
- SMTP: the SMTP transport sending each signed message over one connection (client side only);
- `sent` mark: the UPDATE each message is recorded with (SentMarks), client side; the PostgreSQL
  backend's CPU for those UPDATEs from /proc (the server must run on this host).

Run: .venv/bin/python bench/send_steps.py [--subscribers N]. Not part of `make bench` (a
breakdown, not a comparison).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
os.environ.setdefault("DIGEST_SECRET", "bench-secret")

from bench_workers import SERVER_URL, scratch_database, write_config, write_key  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import padding  # noqa: E402
from host_stats import process_cpu  # noqa: E402
from send_helpers import add_many, approved_issue  # noqa: E402
from smtp_sink import Sink  # noqa: E402

from digest.config import load_settings  # noqa: E402
from digest.deliver.editions import edition_messages  # noqa: E402
from digest.deliver.outbox import transport_from_settings  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.store.issues import require_issue  # noqa: E402
from digest.store.ledger import SentMarks, claim_batch, start_sending  # noqa: E402


def cpu() -> float:
    times = os.times()
    return times.user + times.system


def per_message(seconds: float, count: int) -> str:
    return f"{seconds / count * 1000:6.3f} ms"


def run(subscribers: int, workdir: Path, database: str) -> None:
    url = SERVER_URL.rstrip("/") + "/" + database
    sink = Sink()
    engine = open_store(url)
    try:
        write_key(workdir / "dkim.pem")
        write_config(workdir / "digest.toml", url, sink.port, connections=1, batch=200, sign=True)
        os.chdir(workdir)  # the key file is relative to the configuration
        settings = load_settings(workdir / "digest.toml")
        unsigned = dataclasses.replace(settings, delivery=dataclasses.replace(
            settings.delivery, dkim=dataclasses.replace(settings.delivery.dkim, selector="")))
        number = approved_issue(engine, settings)
        add_many(engine, subscribers, prefix="s-")
        issue = require_issue(engine, number)
        start_sending(engine, number, datetime.now(UTC))
        people = [c.subscriber for c in claim_batch(engine, number, "steps", subscribers, datetime.now(UTC), 600)]

        build, signed_build = edition_messages(unsigned, issue), edition_messages(settings, issue)
        build(people[0]), signed_build(people[0])  # each segment's template is made once, not timed
        started = cpu()
        for person in people:
            build(person)
        build_cpu = cpu() - started
        started = cpu()
        messages = [signed_build(person) for person in people]
        signed_cpu = cpu() - started

        key = serialization.load_pem_private_key((workdir / "dkim.pem").read_bytes(), password=None)
        started = cpu()
        for _ in people:
            key.sign(b"header fields to sign" * 20, padding.PKCS1v15(), hashes.SHA256())
        rsa_cpu = cpu() - started

        with transport_from_settings(settings) as transport:
            transport.send_messages(messages[:1])  # the connection opens outside the timing
            started = cpu()
            for message in messages:
                transport.send_messages([message])
            smtp_cpu = cpu() - started

        with engine.connect() as conn:
            marks = SentMarks(conn)
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            now, server_before, started = datetime.now(UTC), process_cpu(backend), cpu()
            for person, message in zip(people, messages, strict=True):
                marks.mark_sent(number, person.id, "steps", message.message_id, now)
            mark_cpu, server_cpu = cpu() - started, process_cpu(backend) - server_before
            marks.close()
    finally:
        engine.dispose()
        sink.close()

    n = len(people)
    print(f"{n:,} subscribers, {len(messages[0].data):,}-byte messages, one thread, CPU per message:")
    print(f"  build (personalised, no DKIM) : {per_message(build_cpu, n)}")
    print(f"  build + DKIM RSA-2048         : {per_message(signed_cpu, n)}   "
          f"(the RSA signature alone {per_message(rsa_cpu, n)})")
    print(f"  SMTP, client side             : {per_message(smtp_cpu, n)}")
    print(f"  `sent` mark, client side      : {per_message(mark_cpu, n)}   "
          f"(PostgreSQL's backend {per_message(server_cpu, n)})")
    total = signed_cpu + smtp_cpu + mark_cpu
    print(f"  a signed message, sender side : {per_message(total, n)}   "
          f"({n / total:,.0f} messages/s per core, before claims, threads and start-up)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=4000)
    args = parser.parse_args()
    with scratch_database("bench_steps") as scratch:
        if scratch is not None:
            with tempfile.TemporaryDirectory(prefix="send-steps-") as tmp:
                run(args.subscribers, Path(tmp), scratch[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
