"""What each send outcome does to the ledger, and the checks that stop a run failing for everyone alike.

A message is `sent`; refused for good (`failed_permanent`, a bounce only when the refusal is of the
recipient's address); retried after `retry_delay · 2^(attempt-1)` (4xx, a lost connection) until
`max_attempts`; or, while the server takes no connection at all (an outage: every connection failed
in a row), deferred without using an attempt, at most MAX_DEFERRALS times per row and run.

Ambiguous refusals in a row (5.7.x, other enhanced codes, a bare 5xx) are held back from the
ledger: the next accepted message shows the server takes mail, and they are recorded then (or at the
end of the run). `stop_after_refusals` of them with none accepted in between means the server
refuses everything (a relay that wants a login, a sender it does not accept): the run stops with
those rows still claimed, so they go back to the queue instead of being failed, and bounced, for a
setting. A refusal whose enhanced code names the address (5.1.x, 5.2.x: `550 5.1.1 no such user`)
is the recipient's for certain: recorded at once, a bounce, and never part of a streak (a list
starting with many dead addresses would otherwise stop every run at the same rows). A server
refusing the sender (5xx to MAIL FROM) stops the run at once, rows queued again.

A message refused for its size (SizeRefusals) is the message's problem: its row stays claimed and
goes back to the queue when the run ends, messages at least that large are not offered again in
the run, smaller ones still go, and the run then stops naming the sizes and the limit. A message
possibly delivered (sent, but the connection lost before the server confirmed it) is resent once
at most, after the retry delay, never at once; lost again (or failing otherwise) it ends
`possibly_delivered`, never "given up".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Connection, Engine

from ..config import Settings
from ..models import DeliveryStatus, Subscriber
from ..store.ledger import Claim, SentMarks, mark_failed, mark_possibly_delivered
from ..store.subscribers import record_bounce
from .transport import SendResult

if TYPE_CHECKING:  # sender.py imports this module
    from .sender import SendReport

log = logging.getLogger(__name__)
# A row deferred this often in one run without the server coming back for it starts using attempts:
# a message the server answers with 421 every time would otherwise be deferred for ever. With the
# default delays that is a day or more of outage.
MAX_DEFERRALS = 30

# (rows finished so far, rows to finish) after each finished row.
ProgressFn = Callable[[int, int], None]


class SendStopped(Exception):
    """Sending stopped because messages fail for everybody the same way (the server or a setting, not
    the subscribers), or are too large for the server; those rows are queued again. The message
    names the error and the fix; `report` what the run did until then (set by sender.deliver_issue)."""

    report: SendReport | None = None


class MessagesTooLarge(SendStopped):
    """The server refused messages for their size; they stay queued (the smaller ones were sent)."""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    retry_delay: float = 60.0
    retry_max_delay: float = 3600.0
    bounce_threshold: int = 2
    claim_timeout: float = 300.0
    stop_after_refusals: int = 20

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        d = settings.delivery
        return cls(max_attempts=d.max_attempts, retry_delay=d.retry_delay, retry_max_delay=d.retry_max_delay,
                   bounce_threshold=d.bounce_threshold, claim_timeout=d.claim_timeout,
                   stop_after_refusals=d.stop_after_refusals)

    def delay(self, attempt: int) -> float:
        """Seconds before retrying after failed attempt number `attempt` (1-based): exponential, capped."""
        return min(self.retry_delay * 2 ** max(attempt - 1, 0), self.retry_max_delay)


class Tally:
    """Counters shared by the sending threads."""

    def __init__(self, total: int, progress: ProgressFn | None) -> None:
        self.lock = threading.Lock()
        self.counts = {"sent": 0, "failed": 0, "bounced": 0, "skipped": 0, "retried": 0, "gave_up": 0,
                       "possibly_delivered": 0, "too_large": 0}
        self.total, self.done, self.progress = total, 0, progress

    def add(self, name: str, finished: bool = True, n: int = 1) -> None:
        with self.lock:
            self.counts[name] += n
            if finished:
                self.done += n
            if self.progress and finished:
                self.progress(self.done, self.total)


class Outage:
    """Consecutive connection failures across threads, and the pause they impose."""

    def __init__(self, connections: int, policy: RetryPolicy) -> None:
        self.lock = threading.Lock()
        self.connections, self.policy = connections, policy
        self.failures, self.delay, self.resume_at = 0, policy.retry_delay, 0.0
        self.deferrals: Counter[int] = Counter()

    def success(self) -> None:
        with self.lock:
            self.failures, self.delay = 0, self.policy.retry_delay

    def failure(self, outage: str = "") -> float | None:
        """Count a connection failure; seconds until sending resumes when the server is down, else None.

        `outage` says what is unavailable (SendResult.outage); empty: the SMTP server.
        """
        with self.lock:
            self.failures += 1
            if self.failures < self.connections:
                return None
            now = time.monotonic()
            if now >= self.resume_at:
                self.resume_at = now + self.delay
                # Said on stderr (and in the scheduler's log): otherwise a pause looks like a hang.
                log.warning("%s; sending pauses for %.0f s (unsent messages stay queued; Ctrl-C stops, run the "
                            "same command later)", outage or "every SMTP connection failed: the server looks down",
                            self.delay)
                self.delay = min(self.delay * 2, self.policy.retry_max_delay)
            return self.resume_at - now

    def may_defer(self, subscriber_id: int) -> bool:
        """Whether this row may wait out the outage without using an attempt (MAX_DEFERRALS a run)."""
        with self.lock:
            self.deferrals[subscriber_id] += 1
            return self.deferrals[subscriber_id] <= MAX_DEFERRALS

    def wait(self, stop: threading.Event) -> None:
        while not stop.is_set():
            remaining = self.resume_at - time.monotonic()
            if remaining <= 0:
                return
            stop.wait(min(remaining, 1.0))


@dataclass(frozen=True)
class Refusal:
    """A failed row held back from the ledger: its error, and whether it counts as a bounce."""

    claim: Claim
    error: str
    bounce: bool = False


class RefusalStreak:
    """Permanent refusals since the last accepted message, held back (see the module's doc)."""

    def __init__(self, limit: int) -> None:
        self.lock = threading.Lock()
        self.limit, self.held, self.tripped = limit, [], False

    def accepted(self) -> list[Refusal]:
        """A message was accepted: the refusals held so far were the recipients' own; record them."""
        with self.lock:
            if self.tripped:
                return []
            held, self.held = self.held, []
            return held

    def refused(self, refusal: Refusal) -> tuple[list[Refusal], bool]:
        """(refusals to record now, whether this one reached the limit)."""
        if self.limit <= 0:
            return [refusal], False
        with self.lock:
            self.held.append(refusal)
            if self.tripped or len(self.held) < self.limit:
                return [], False
            self.tripped = True
            return [], True


@dataclass(frozen=True)
class Oversized:
    """A row whose message the server refused for its size (or would: over its limit)."""

    subscriber: Subscriber
    size: int
    error: str


class SizeRefusals:
    """What the server refused for size in this run, and the sizes it will refuse."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: list[Oversized] = []
        self.limit = 0  # the server's advertised SIZE, 0 when unknown
        self.smallest_refused: int | None = None
        self.last_error = ""

    def refused(self, claim: Claim, result: SendResult, error: str) -> None:
        with self.lock:
            self.rows.append(Oversized(claim.subscriber, result.size, error))
            self.limit = result.size_limit or self.limit
            if result.code is not None:  # a refusal the server gave (not our own check of its SIZE)
                self.last_error = error
                if self.smallest_refused is None or result.size < self.smallest_refused:
                    self.smallest_refused = result.size

    def known_too_large(self, size: int) -> bool:
        """Whether a message of `size` bytes would meet a size refusal already seen in this run."""
        return (self.smallest_refused is not None and size >= self.smallest_refused) or 0 < self.limit < size

    def message(self, sent: int, describe: Callable[[Subscriber], str]) -> str:
        """The stop message: sizes by segment, the limit, and what to do."""
        by_segment: dict[str, list[int]] = {}
        for row in self.rows:
            by_segment.setdefault(describe(row.subscriber), []).append(row.size)
        if self.smallest_refused is None:
            limit = f"it takes messages up to {self.limit:,} bytes, its EHLO SIZE says"
        else:
            limit = f"it refused a message of {self.smallest_refused:,} bytes, " + (
                f"though its EHLO SIZE says {self.limit:,}" if self.limit else "and does not say its limit")
        if self.last_error:
            limit += f"; its answer: {self.last_error!r}"
        segments = "; ".join(f"{label}: {len(sizes)} message{'s' if len(sizes) > 1 else ''} of "
                             f"{min(sizes):,}" + (f" to {max(sizes):,}" if max(sizes) != min(sizes) else "") + " bytes"
                             for label, sizes in sorted(by_segment.items()))
        return (f"stopped: {len(self.rows)} messages are too large for the SMTP server ({limit}). Too large: "
                f"{segments}. {sent} smaller messages were sent in this run. The larger ones stay queued and "
                "nobody was marked failed: ask the server's administrator to raise its size limit (Postfix: "
                "message_size_limit), or lower 'digest.max_html_kib' so the editions are shortened, then run "
                "the same send again")


class Recorder:
    """Commits each row's outcome for one run; shared by the sending threads, each on its connection.

    `writing` is taken around every write: on SQLite (one writer) threads take turns on a Python lock,
    which wakes the next writer as soon as the previous commits instead of after the busy handler's
    sleep of a millisecond or more.
    """

    def __init__(self, engine: Engine, number: int, holder: str, policy: RetryPolicy, connections: int,
                 tally: Tally, writing: AbstractContextManager[object]) -> None:  # a lock or a null context
        self.engine, self.number, self.holder, self.policy = engine, number, holder, policy
        self.tally, self.writing = tally, writing
        self.outage = Outage(connections, policy)
        self.refusals = RefusalStreak(policy.stop_after_refusals)
        self.sizes = SizeRefusals()

    def build_failed(self, conn: Connection, claim: Claim, exc: Exception) -> None:
        """A subscriber's own data cannot make a message: their row fails at once, without a bounce.

        A problem every subscriber of a segment would meet (the issue, the settings) never gets here:
        editions.edition_messages tries each new template on a message for nobody in particular first
        and raises EditionError, which stops the run.
        """
        self._record_failures(conn, [Refusal(claim, f"cannot build the message: {exc}")])

    def record(self, conn: Connection, marks: SentMarks, claim: Claim, message_id: str, result: SendResult) -> None:
        """Commit one row's outcome (the step that makes `sent` durable); SendStopped at the refusal limit
        or when the server refuses the sender (this row and the unsent ones stay claimed: queued again)."""
        if result.ok:
            self.outage.success()
            with self.writing:
                marks.mark_sent(self.number, claim.subscriber.id, self.holder, result.message_id or message_id, _now())
            self.tally.add("sent")
            if self.refusals.held:  # a glance without the lock; accepted() takes it
                self._record_failures(conn, self.refusals.accepted())
            return
        error = _ledger_text(result)
        if result.too_large:  # the message's problem: the row stays claimed, queued again at the end
            self.sizes.refused(claim, result, error)
            self.tally.add("too_large", finished=False)
            return
        if result.possibly_delivered:
            self.outage.success()  # the server took the whole message
            self._record_possibly_delivered(conn, claim, error)
            return
        if result.sender_refused and result.permanent:  # before any recipient: every message meets it
            raise SendStopped(_sender_refused_message(result))
        if not result.permanent:
            self._record_temporary(conn, claim, result, error)
            return
        self.outage.success()  # the server answered
        if result.address_refused:  # certainly this recipient's: says nothing about the server
            self._record_failures(conn, [Refusal(claim, error, result.bounce)])
            return
        now, tripped = self.refusals.refused(Refusal(claim, error, result.bounce))
        self._record_failures(conn, now)
        if tripped:
            raise SendStopped(_refusals_message(self.refusals.limit, error))

    def record_held(self, conn: Connection | Engine) -> None:
        """At the end of a run that was not stopped: record the refusals still held back."""
        self._record_failures(conn, self.refusals.accepted())

    def _record_failures(self, conn: Connection | Engine, failures: list[Refusal]) -> None:
        for failure in failures:
            subscriber_id = failure.claim.subscriber.id
            with self.writing:
                if not mark_failed(conn, self.number, subscriber_id, self.holder, DeliveryStatus.FAILED_PERMANENT,
                                   failure.error):
                    continue  # the claim was taken over meanwhile
                bounced = failure.bounce and record_bounce(self.engine, subscriber_id, self.policy.bounce_threshold,
                                                           _now(), failure.error, self.number)
            self.tally.add("failed")
            if bounced:
                self.tally.add("bounced", finished=False)

    def _record_possibly_delivered(self, conn: Connection, claim: Claim, error: str) -> None:
        """Resend once, after the retry delay; the second time (or with no attempt left) it ends so."""
        attempt, now = claim.attempts + 1, _now()
        final = claim.possibly_delivered or attempt >= self.policy.max_attempts
        retry_at = None if final else now + timedelta(seconds=self.policy.delay(attempt))
        with self.writing:
            mark_possibly_delivered(conn, self.number, claim.subscriber.id, self.holder, error, now, retry_at)
        self.tally.add("possibly_delivered" if final else "retried", finished=final)

    def _record_temporary(self, conn: Connection, claim: Claim, result: SendResult, error: str) -> None:
        subscriber_id, attempt, now = claim.subscriber.id, claim.attempts + 1, _now()
        pause = self.outage.failure(result.outage) if result.unreachable else None
        if not result.unreachable:
            self.outage.success()  # the server answered, or took a new connection: it is up
        with self.writing:
            if pause is not None and self.outage.may_defer(subscriber_id):
                mark_failed(conn, self.number, subscriber_id, self.holder, DeliveryStatus.FAILED_TEMPORARY,
                            error if result.outage else f"server unreachable: {error}", now + timedelta(seconds=pause),
                            count_attempt=False)
                outcome = "retried"
            elif claim.possibly_delivered:  # its one resend failed: it may still have arrived the first time
                mark_possibly_delivered(conn, self.number, subscriber_id, self.holder,
                                        f"possibly delivered on an earlier try; its one resend failed: {error}",
                                        now, None)
                outcome = "possibly_delivered"
            elif attempt >= self.policy.max_attempts:
                mark_failed(conn, self.number, subscriber_id, self.holder, DeliveryStatus.FAILED_PERMANENT,
                            f"gave up after {attempt} attempts: {error}")
                outcome = "gave_up"
            else:
                retry_at = now + timedelta(seconds=self.policy.delay(attempt))
                mark_failed(conn, self.number, subscriber_id, self.holder, DeliveryStatus.FAILED_TEMPORARY,
                            error, retry_at)
                outcome = "retried"
        self.tally.add(outcome, finished=outcome != "retried")


def _refusals_message(count: int, error: str) -> str:
    return (f"stopped: {count} messages in a row were refused and none accepted; the server's last answer was "
            f"{error!r}. A server refusing everyone is refusing this sender, not the addresses: check that it "
            "relays for you (its address in 'delivery.smtp.host'/'port'; 'delivery.smtp.username' and the "
            "password variable if it wants a login) and accepts 'delivery.sender'. Those messages are queued "
            "again and nobody was marked bounced: send again once fixed (or raise 'delivery.stop_after_refusals')")


def _ledger_text(result: SendResult) -> str:
    """The error as the ledger keeps it: the reply code in front, once."""
    code = str(result.code) if result.code else ""
    if not code or result.error.startswith(code):
        return result.error or code or "unknown error"
    return f"{code} {result.error}"


def _sender_refused_message(result: SendResult) -> str:
    fix = ("check 'delivery.sender' (an address the server lets you send from) and the [delivery.smtp] "
           "login (username, password_env, security)")
    return (f"stopped: {result.error}. Every message would meet that refusal, so it is not the subscribers': "
            f"{fix}, then send again. The messages not sent are queued again and nobody was marked failed "
            "or bounced")


def _now() -> datetime:
    return datetime.now(UTC)
