"""The send loop: claim ledger rows in batches, send each message, record each outcome at once.

The loop depends on the ledger (store functions), a message factory (subscriber → message) and a
transport factory only. The main thread claims rows (committed `sending`) into a bounded queue;
one thread per SMTP connection takes a few at a time and, for each, builds the message, sends it and
commits its row `sent` before the next, so a crash can leave at most one message per connection
both delivered and unrecorded: the only duplicates `at least once` allows. Temporary failures and
refusals that name the address are committed at once too; ambiguous refusals are held back in
memory (retries.py) until a later accepted message shows the server takes mail, or the run ends.
A crash before then leaves those rows `sending`: the next sender queues them again and tries them
once more (they were refused, so nobody gets a message twice).

What each outcome does (retries, bounces, outages, and stopping a run that fails for everyone the
same way) is in retries.py.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Connection, Engine

from ..models import DeliveryStatus, Subscriber, SubscriberStatus
from ..store import relaxed_durability
from ..store.ledger import (
    Claim,
    SentMarks,
    claim_rows,
    claimed_subscribers,
    finish_if_done,
    issue_status,
    ledger_counts,
    mark_skipped,
    next_retry_at,
    renew_claims,
    requeue_orphans,
)
from ..store.locks import acquire_lock, holder_is_dead, lock_owner, release_lock, renew_lock
from .retries import MessagesTooLarge, ProgressFn, Recorder, RetryPolicy, SendStopped, Tally
from .transport import OutgoingMessage, SendResult, Transport

__all__ = ["MessagesTooLarge", "ProgressFn", "RetryPolicy", "SendOptions", "SendReport", "SendStopped", "SenderBusy",
           "deliver_issue", "sender_slot"]

SEND_LOCK = "send"
# Claimed rows handed to a sending thread at a time: a queue hand-off (two condition variables and
# a thread wake-up) costs about what building a message does, so a few rows share one; few enough
# that the threads share a batch evenly.
CHUNK = 8
LOCK_TTL = 60.0
KEEP_ALIVE_EVERY = 5.0
# Database connections beyond the one each sending thread holds: claims, reads and bounce records.
SPARE_CONNECTIONS = 3

# subscriber → their message, or None when their preferences select nothing in this issue.
MessageFactory = Callable[[Subscriber], OutgoingMessage | None]
# subscriber → the name of their segment, for the report of messages too large.
SegmentLabel = Callable[[Subscriber], str]
TransportFactory = Callable[[], Transport]


class SenderBusy(Exception):
    """Another sender holds the store's send lock (SQLite runs one sender at a time)."""


@dataclass(frozen=True)
class SendOptions:
    connections: int = 4
    batch_size: int = 200
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    # `digest send` waits for due retries until the issue is done; a worker pass does not.
    wait_for_retries: bool = True
    # The sending threads' nice value at least (delivery.nice; Linux): 0 leaves it as it is.
    nice: int = 0


@dataclass(frozen=True)
class SendReport:
    """What one run did to one issue (`ledger` holds the issue's rows per status afterwards)."""

    issue: int
    status: str
    sent: int = 0
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    retried: int = 0
    gave_up: int = 0
    # Sent, twice at most, without the server's confirmation: may have arrived (never "given up").
    possibly_delivered: int = 0
    # Refused for their size (or over the server's advertised limit): still queued.
    too_large: int = 0
    duration: float = 0.0
    ledger: dict[str, int] = field(default_factory=dict)
    # Why the run stopped early, when it did (`digest send --json` prints the report then too).
    error: str = ""

    @property
    def rate(self) -> float:
        return self.sent / self.duration if self.duration > 0 else 0.0

    @property
    def open_rows(self) -> int:
        return sum(self.ledger.get(s.value, 0) for s in
                   (DeliveryStatus.QUEUED, DeliveryStatus.SENDING, DeliveryStatus.FAILED_TEMPORARY))

    def as_json(self) -> dict:
        return {**asdict(self), "duration": round(self.duration, 3), "rate": round(self.rate, 1),
                "open": self.open_rows}


@dataclass
class _Run:
    """Everything the sending threads share for one issue."""

    engine: Engine
    number: int
    holder: str
    outcomes: Recorder
    make_message: MessageFactory
    # Lists of claimed rows (at most CHUNK each), then one None per sending thread.
    jobs: queue.Queue = field(default_factory=queue.Queue)
    stop: threading.Event = field(default_factory=threading.Event)
    errors: list[BaseException] = field(default_factory=list)
    # The message factory caches a template per segment and is not promised to be thread-safe; the
    # GIL runs one build at a time anyway, so taking turns costs next to nothing (and no segment is
    # rendered twice by threads racing to its first subscriber).
    building: threading.Lock = field(default_factory=threading.Lock)


# --- the sender lock -----------------------------------------------------------------------------

@contextlib.contextmanager
def sender_slot(engine: Engine, holder: str, wait: float = 0.0) -> Iterator[Callable[[], None]]:
    """Hold the right to send: on SQLite the store's lease lock (SenderBusy if another sender has it
    after `wait` seconds), on PostgreSQL nothing (claims are row-locked). Yields a keep-alive to call
    at least every minute; it raises SenderBusy if the lease was lost."""
    if engine.dialect.name == "postgresql":
        yield lambda: None
        return
    deadline = time.monotonic() + wait
    while not acquire_lock(engine, SEND_LOCK, holder, LOCK_TTL):
        if time.monotonic() >= deadline:
            owner = lock_owner(engine, SEND_LOCK) or "another process"
            raise SenderBusy(f"another sender ({owner}) is sending from this store; SQLite allows one at a "
                             "time: let it finish (it sends every issue in `sending`), or use PostgreSQL "
                             "for several workers")
        time.sleep(min(1.0, max(deadline - time.monotonic(), 0.05)))

    def keep_alive() -> None:
        if not renew_lock(engine, SEND_LOCK, holder, LOCK_TTL):
            raise SenderBusy("lost the send lock (this sender stalled longer than its lease); stopping")

    try:
        yield keep_alive
    finally:
        release_lock(engine, SEND_LOCK, holder)


def orphan_check(engine: Engine, holder: str) -> Callable[[str], bool]:
    """Which claim holders are gone: on SQLite (one sender, holding the lock) every other one; on
    PostgreSQL those on this host whose process died (others wait for claim_timeout)."""
    if engine.dialect.name == "postgresql":
        return holder_is_dead
    return lambda other: other != holder


# --- the loop ------------------------------------------------------------------------------------

def deliver_issue(engine: Engine, number: int, *, holder: str, make_message: MessageFactory,
                  make_transport: TransportFactory, options: SendOptions,
                  keep_alive: Callable[[], None] = lambda: None, progress: ProgressFn | None = None,
                  segment_label: SegmentLabel = lambda subscriber: "their segment") -> SendReport:
    """Send every claimable row of issue `number` (the ledger already filled); returns the report.

    Marks the issue `sent` when no row is left open. Call inside `sender_slot`. SendStopped when
    messages fail for everyone alike (their rows queued again), MessagesTooLarge at the end of a run
    in which the server refused messages for their size (those rows queued again, by
    `segment_label`); both carry the run's report. A sending thread's error is re-raised.
    """
    started = time.monotonic()
    requeue_orphans(engine, number, orphan_check(engine, holder))
    before = ledger_counts(engine, number)
    total = sum(before[s] for s in ("queued", "sending", "failed_temporary"))
    # Outcomes are committed without waiting for the disk: a killed process loses nothing, a power
    # loss may roll back the last `sent` marks and those messages go again (still at least once).
    # Each sending thread holds one pooled connection for the whole run.
    with relaxed_durability(engine, pool_size=options.connections + SPARE_CONNECTIONS) as writes:
        # SQLite has one writer: threads take turns on a Python lock (see Recorder); PostgreSQL's
        # row locks never make writers wait for each other.
        writing = contextlib.nullcontext() if engine.dialect.name == "postgresql" else threading.Lock()
        recorder = Recorder(writes, number, holder, options.policy, options.connections, Tally(total, progress),
                            writing)
        run = _Run(writes, number, holder, recorder, make_message,
                   queue.Queue(maxsize=max(options.batch_size // CHUNK, 2)))
        _run_threads(run, options, make_transport, keep_alive)
    if run.errors:
        error = run.errors[0]
        if isinstance(error, SendStopped):
            error.report = _report(engine, number, recorder, started, str(error))
        raise error
    finish_if_done(engine, number, _now())
    if recorder.sizes.rows:
        stopped = MessagesTooLarge(recorder.sizes.message(recorder.tally.counts["sent"], segment_label))
        stopped.report = _report(engine, number, recorder, started, str(stopped))
        raise stopped
    return _report(engine, number, recorder, started)


def _report(engine: Engine, number: int, recorder: Recorder, started: float, error: str = "") -> SendReport:
    status = issue_status(engine, number)
    return SendReport(issue=number, status=status.value if status else "", **recorder.tally.counts,
                      duration=time.monotonic() - started, ledger=ledger_counts(engine, number), error=error)


def _run_threads(run: _Run, options: SendOptions, make_transport: TransportFactory,
                 keep_alive: Callable[[], None]) -> None:
    """Start the sending threads, feed them claimed rows until none is left, stop them whatever happens."""
    renew = _throttled(lambda: (keep_alive(), renew_claims(run.engine, run.number, run.holder, _now())))
    threads = [threading.Thread(target=_sending_thread, args=(run, make_transport, options.nice), daemon=True,
                                name=f"digest-send-{i}") for i in range(options.connections)]
    finished = False
    try:
        for thread in threads:
            thread.start()
        _claim_and_queue(run, options, renew)
        finished = True
    except BaseException:
        run.stop.set()  # interrupted: threads finish the message in hand and skip the rest
        raise
    finally:
        _stop_threads(run, threads, record_held=finished)


def _claim_and_queue(run: _Run, options: SendOptions, renew: Callable[[], None]) -> None:
    while not run.errors:
        renew()
        with run.outcomes.writing:  # only the UPDATE needs the writer's turn; reading subscribers does not
            rows = claim_rows(run.engine, run.number, run.holder, options.batch_size, _now(),
                              options.policy.claim_timeout)
        claims = claimed_subscribers(run.engine, rows)
        if not claims:
            _wait_drained(run, renew)
            if run.errors or _claimable_now(run):
                continue
            if not options.wait_for_retries or not _wait_for_retry(run, renew):
                return
            continue
        # Messages are built by the sending threads, each right before sending it: a thread building
        # messages ahead would hold the GIL in long stretches that the socket-waiting threads queue
        # behind, several times per SMTP transaction.
        for start in range(0, len(claims), CHUNK):
            _put(run, claims[start:start + CHUNK], renew)


_FAILED = object()


def _is_confirmed(claim: Claim) -> bool:
    return claim.subscriber.status == SubscriberStatus.CONFIRMED


def _message_or_failure(run: _Run, conn: Connection, claim: Claim) -> object:
    """The subscriber's message, None if there is nothing for them, or _FAILED (recorded) when their
    own data cannot make a message (an address no header can carry): that costs their row only."""
    try:
        with run.building:
            return run.make_message(claim.subscriber)
    except (ValueError, KeyError) as exc:
        run.outcomes.build_failed(conn, claim, exc)
        return _FAILED


def _claimable_now(run: _Run) -> bool:
    # Rows finished by the threads may have become due retries while we waited; look once more.
    due = next_retry_at(run.engine, run.number)
    return due is not None and due <= _now()


def _wait_for_retry(run: _Run, renew: Callable[[], None]) -> bool:
    """Sleep until the earliest retry is due; False when nothing waits to be retried."""
    due = next_retry_at(run.engine, run.number)
    if due is None:
        return False
    while not run.errors and (remaining := (due - _now()).total_seconds()) > 0:
        renew()
        time.sleep(min(remaining, 1.0))
    return True


def _put(run: _Run, claims: list[Claim], renew: Callable[[], None]) -> None:
    while not run.errors:
        try:
            run.jobs.put(claims, timeout=1.0)
            return
        except queue.Full:
            renew()


def _wait_drained(run: _Run, renew: Callable[[], None]) -> None:
    while True:
        with run.jobs.all_tasks_done:
            if not run.jobs.unfinished_tasks:
                return
            run.jobs.all_tasks_done.wait(timeout=1.0)
        renew()


def _stop_threads(run: _Run, threads: list[threading.Thread], record_held: bool) -> None:
    # One None per live thread is not enough: a thread that fails drains the queue, sentinels
    # included, so keep offering them until every thread has gone (leftovers are harmless).
    while any(t.is_alive() for t in threads):
        with contextlib.suppress(queue.Full):
            run.jobs.put(None, timeout=0.1)
    for thread in threads:
        if thread.ident is not None:  # started
            thread.join()
    if record_held and not run.errors:  # refusals held back until now
        run.outcomes.record_held(run.engine)
    # Rows claimed but never sent (interrupted, or held back when the run stopped): back to the
    # queue, for this or another sender.
    requeue_orphans(run.engine, run.number, lambda other: other == run.holder)


def _sending_thread(run: _Run, make_transport: TransportFactory, nice: int) -> None:
    # The transport closes last (quitting SMTP can take a while): a failure stops the run first.
    with contextlib.ExitStack() as stack:
        try:
            lower_thread_priority(nice)
            transport = stack.enter_context(make_transport())
            # One pooled connection per thread, in AUTOCOMMIT, shared by SentMarks and the other writes.
            with run.engine.connect() as conn, contextlib.closing(SentMarks(conn)) as marks:
                while (claims := run.jobs.get()) is not None:
                    try:
                        _send_claimed(run, transport, conn, marks, claims)
                    finally:
                        run.jobs.task_done()
            run.jobs.task_done()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            run.errors.append(exc)
            run.stop.set()
            _drain(run.jobs)


def lower_thread_priority(nice: int) -> None:
    """Raise the calling thread's nice value to `nice` unless it is already that high (Linux only).

    On Linux nice is a property of each thread, and threads inherit it: only the sending threads
    yield, never the thread that started them (a web request, the command line's progress bar).
    A sender waits on its mail server, so taking the CPU from a mail server, PostgreSQL or web
    pages on the same machine only slows everyone, the send included (bench/README.md). Never
    lowers a nice value: without privileges it could not, and whoever set it meant it.
    """
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    thread = threading.get_native_id()
    try:
        if os.getpriority(os.PRIO_PROCESS, thread) < nice:
            os.setpriority(os.PRIO_PROCESS, thread, nice)
    except OSError:  # a sandbox that forbids it: send at the usual priority
        pass


def _send_claimed(run: _Run, transport: Transport, conn: Connection, marks: SentMarks, claims: list[Claim]) -> None:
    """Build, send and record each row's message in turn; rows with nothing to send end `skipped`.

    Once the run stops, the rest stay claimed and go back to the queue (`_stop_threads`).
    """
    skipped = []
    for claim in claims:
        if run.stop.is_set():
            break
        message = _message_or_failure(run, conn, claim) if _is_confirmed(claim) else None
        if message is None:
            skipped.append(claim.subscriber.id)
            continue
        if message is _FAILED:
            continue
        run.outcomes.outage.wait(run.stop)
        if run.stop.is_set():  # stopped while the server was taken to be down
            break
        if run.outcomes.sizes.known_too_large(len(message.data)):  # the server refused no larger one already
            result = SendResult(message.message_id, ok=False, permanent=True, too_large=True,
                                size=len(message.data), error=f"too large ({len(message.data):,} bytes): the "
                                "server refused a message this large in this run; not offered again")
        else:
            result = _send_one(transport, message)
        run.outcomes.record(conn, marks, claim, message.message_id, result)
    if skipped:
        with run.outcomes.writing:
            mark_skipped(conn, run.number, skipped, run.holder, "not confirmed, or nothing selected")
        run.outcomes.tally.add("skipped", n=len(skipped))


def _drain(jobs: queue.Queue) -> None:
    while True:
        try:
            jobs.get_nowait()
        except queue.Empty:
            return
        jobs.task_done()


def _send_one(transport: Transport, message: OutgoingMessage) -> SendResult:
    try:
        return transport.send_messages([message])[0]
    except OSError as exc:  # transports report failures as results; a stray socket error is one too
        return SendResult(message.message_id, ok=False, error=f"{exc.__class__.__name__}: {exc}")


def _throttled(action: Callable[[], object], every: float = KEEP_ALIVE_EVERY) -> Callable[[], None]:
    last = [time.monotonic()]

    def call() -> None:
        if time.monotonic() - last[0] >= every:
            last[0] = time.monotonic()
            action()

    return call


def _now() -> datetime:
    return datetime.now(UTC)
