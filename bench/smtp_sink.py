"""A counting aiosmtpd sink for the delivery benches, run in its own process (never sharing a GIL
with the sender it measures), optionally behind a simulated network latency.

Run as a script it serves on a free 127.0.0.1 port, prints the port, then answers one JSON line per
line read on stdin: `count` → received messages, distinct recipients, recipients received more than
once (the extra copies), distinct Message-IDs; `reset` → the same, then zero. `Sink` drives it.

`--latency S`: every reply reaches the client S seconds after the server wrote it, as over a link
with that round-trip time to a remote relay. Replies keep their order and do not hold up the server:
commands a client pipelines (RFC 2920) are answered back to back, so they cost one round trip, not
one per command. The sink advertises PIPELINING in its EHLO reply so a client can tell.
`--samples DIR --sample-every N`: writes every Nth message to DIR (e.g. to verify DKIM afterwards).
`raw_loop` is the baseline both benches measure digest against: plain smtplib, one message over and over.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path


def raw_loop(port: int, data: bytes, sender: str, recipient: str, total: int, connections: int,
             nice: int = 0) -> float:
    """Messages/s of `connections` threads, each one smtplib connection sending `data` over and over;
    the threads at `nice` as digest's sending threads would be (delivery.nice)."""
    from digest.deliver.sender import lower_thread_priority  # not in the sink's own process

    each = max(1, total // connections)

    def run() -> None:
        lower_thread_priority(nice)
        conn = smtplib.SMTP("127.0.0.1", port)
        for _ in range(each):
            conn.sendmail(sender, [recipient], data)
        conn.quit()

    threads = [threading.Thread(target=run) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return each * connections / (time.perf_counter() - start)


class Sink:
    """The sink in a child process: `count()`, `reset()`, `close()`; `port` to send to."""

    def __init__(self, latency: float = 0.0, samples: Path | None = None, sample_every: int = 0) -> None:
        command = [sys.executable, __file__, "--latency", str(latency)]
        if samples is not None:
            command += ["--samples", str(samples), "--sample-every", str(sample_every)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.port = int(self.proc.stdout.readline())

    def _ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def count(self) -> dict:
        """{"messages", "recipients", "duplicates", "message_ids"} received so far."""
        return self._ask("count")

    def reset(self) -> dict:
        """The counts so far, then zero them."""
        return self._ask("reset")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def serve(latency: float, samples: Path | None, sample_every: int) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    lock = threading.Lock()
    state = {"messages": 0, "recipients": Counter(), "message_ids": set()}

    class Handler:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):
            session.host_name = hostname
            return [*responses[:-1], "250-PIPELINING", responses[-1]]

        async def handle_DATA(self, server, session, envelope):
            data = envelope.content
            head = b"\n" + data[:data.find(b"\r\n\r\n")]
            start = head.lower().find(b"\nmessage-id:")
            end = head.find(b"\r\n", start + 1) if start >= 0 else 0
            message_id = head[start + 12:end if end > 0 else len(head)].strip() if start >= 0 else b""
            with lock:
                state["messages"] += 1
                number = state["messages"]
                state["recipients"].update(envelope.rcpt_tos)
                state["message_ids"].add(message_id)
            if samples is not None and sample_every and number % sample_every == 0:
                (samples / f"{number}.eml").write_bytes(data)
            return "250 OK"

    class DelayedSMTP(SMTP):
        """Each reply leaves `latency` seconds after it was written, in order, without blocking."""

        _last_due = 0.0

        async def push(self, status):
            if not latency:
                return await super().push(status)
            response = status.encode("ascii") if isinstance(status, str) else status
            loop = asyncio.get_running_loop()
            # Strictly increasing due times: asyncio orders timers by time only.
            due = self._last_due = max(loop.time() + latency, self._last_due + 1e-6)
            if response[:3] in (b"221", b"421"):  # the connection closes next: deliver this one first
                await asyncio.sleep(due - loop.time())
                self._writer.write(response + b"\r\n")
                await self._writer.drain()
            else:
                loop.call_at(due, self._write_if_open, response + b"\r\n")

        def _write_if_open(self, data: bytes) -> None:
            if not self._writer.transport.is_closing():
                self._writer.write(data)

    class DelayedController(Controller):
        def factory(self):
            return DelayedSMTP(self.handler, **self.SMTP_kwargs)

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = DelayedController(Handler(), hostname="127.0.0.1", port=port, decode_data=False)
    controller.start()
    print(port, flush=True)
    for line in sys.stdin:
        with lock:
            recipients = state["recipients"]
            print(json.dumps({"messages": state["messages"], "recipients": len(recipients),
                              "duplicates": state["messages"] - len(recipients),
                              "message_ids": len(state["message_ids"])}), flush=True)
            if line.strip() == "reset":
                state.update(messages=0, recipients=Counter(), message_ids=set())
    controller.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--samples", type=Path)
    parser.add_argument("--sample-every", type=int, default=0)
    args = parser.parse_args()
    serve(args.latency, args.samples, args.sample_every)
