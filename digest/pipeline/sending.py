"""Use case: sending. An approved issue to every eligible subscriber exactly once; workers; tests; due sends.

Rules that live here and nowhere else:
- only an approved (or already sending) issue is sent, and the ledger sends each row once;
- a test send goes to staff addresses and never touches the ledger;
- a send started by hand (`digest send`, `digest worker --once`) stops at once when the SMTP server
  takes no connection; a scheduled send or a looping worker waits the outage out;
- an approved issue goes out at its send time (digest.timetable.send_outlook); one more than
  `schedule.stale_after_hours` late waits for a fresh approval;
- every scheduled or "send now" send leaves a note in the run log, as does the staff note.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..config import Settings
from ..deliver.dkim import DkimError, signer_from_settings
from ..deliver.editions import edition_messages, staff_subscriber
from ..deliver.message import HeaderError
from ..deliver.notes import staff_note_message
from ..deliver.outbox import TransportFactory, deliver_now, transport_from_settings
from ..deliver.retries import ProgressFn, RetryPolicy
from ..deliver.sender import SenderBusy, SendOptions, SendReport, deliver_issue, sender_slot
from ..deliver.smtp import SmtpTransport
from ..deliver.transport import SendResult, TransportError
from ..models import Account, Issue, IssueStatus, Subscriber
from ..segments import segment_for
from ..store.issues import IssueStateError, require_issue
from ..store.ledger import issue_status, issues_being_sent, issues_with_late_readers, start_sending
from ..store.locks import lock_holder
from ..store.runs import hold_for_approval, issue_timings, record_run
from ..store.subscribers import get_subscriber
from ..timetable import SendWhen, send_outlook
from .accounts import test_recipients_allowed
from .audit import SCHEDULER, record
from .managed import uses_current_settings
from .runs import JOB_NOTIFY, JOB_SEND, describe, hours, local_time

log = logging.getLogger("digest.pipeline")



class StoreFailed(Exception):
    """The store failed during a send (locked too long, a full disk, the server gone); the message
    names the store and what to do. At most one message per SMTP connection may go twice."""


@uses_current_settings
def send_issue(settings: Settings, engine: Engine, number: int, progress: ProgressFn | None = None, *,
               late: bool = False, make_transport: TransportFactory | None = None, wait: float = 0.0,
               check_server: bool = False, actor: Account | None = None) -> SendReport:
    """Fill the ledger for an approved issue and send until every row is done; returns a SendReport.

    Only approved (or already sending) issues are sent: LedgerError otherwise. A sent issue sends
    nothing again unless `late` (subscribers confirmed since then get it). On SQLite one sender runs
    at a time: SenderBusy if another holds the lock after `wait` seconds. `progress(done, total)`.
    EditionError (rows still queued) when a segment's message cannot be built; SendStopped (rows
    queued again) when messages fail for everyone alike, or the server refuses the sender.
    With `check_server` (`digest send`), ServerUnreachable once the rows are queued when the SMTP
    server takes no connection: a send started by hand says so at once, where a scheduled one
    waits the outage out (up to delivery.retry_max_delay per pause). The audit trail records
    `actor` (None: the command line) when this call starts the send, or a late one.
    """
    holder = lock_holder("send")
    with _store_failures(engine, f"run `digest send --issue {number}` again"), \
            sender_slot(engine, holder, wait) as keep_alive:
        before = issue_status(engine, number)  # None: start_sending says there is no such issue
        start_sending(engine, number, datetime.now(UTC), late=late)
        issue = require_issue(engine, number)
        if before == IssueStatus.APPROVED or (late and before == IssueStatus.SENT):
            record(engine, actor, "issue.send", issue_number=number, detail={"late": True} if late else {})
        if check_server and (late or issue.status != IssueStatus.SENT):  # a sent issue has nothing to send
            _refuse_unreachable(settings)
        messages = edition_messages(settings, issue)
        return deliver_issue(engine, number, holder=holder, make_message=messages,
                             make_transport=make_transport or _connection_transport(settings),
                             options=_send_options(settings), keep_alive=keep_alive, progress=progress,
                             segment_label=_segment_label(settings, issue))


@uses_current_settings
def work_pending(settings: Settings, engine: Engine, holder: str, progress: ProgressFn | None = None, *,
                 batch_size: int | None = None, make_transport: TransportFactory | None = None,
                 wait: float = 0.0, check_server: bool = False) -> list[SendReport]:
    """One worker pass: send the claimable rows of every issue in `sending`; returns a SendReport each.

    Does not wait for retries that are not due yet (the next pass takes them). Safe to run in any
    number of processes on PostgreSQL; SenderBusy on SQLite when another sender holds the lock.
    With `check_server`, ServerUnreachable when there is something to send and the SMTP server
    takes no connection (one pass must not sit out an outage).
    """
    options = replace(_send_options(settings, batch_size), wait_for_retries=False)
    reports = []
    with _store_failures(engine, "start the worker again"), sender_slot(engine, holder, wait) as keep_alive:
        numbers = issues_being_sent(engine)
        if check_server and numbers:
            _refuse_unreachable(settings)
        for number in numbers:
            issue = require_issue(engine, number)
            reports.append(deliver_issue(engine, number, holder=holder, make_message=edition_messages(settings, issue),
                                         make_transport=make_transport or _connection_transport(settings),
                                         options=options, keep_alive=keep_alive, progress=progress,
                                         segment_label=_segment_label(settings, issue)))
    return reports


@uses_current_settings
def send_test(settings: Settings, engine: Engine, number: int, recipients: Iterable[str], *,
              subscriber_email: str | None = None, make_transport: TransportFactory | None = None,
              actor: Account | None = None) -> list[SendResult]:
    """Send the full edition (or `subscriber_email`'s) to each staff address; the ledger is untouched.

    Returns one SendResult per recipient (a refusal, the sender's too, is a failed result, not an
    exception). LookupError for an unknown issue or subscriber. A staff account (`actor`) sends
    tests to its own address or the staff list (`schedule.staff`) only: NotAllowed otherwise.
    """
    recipients, like = list(recipients), None
    if actor is not None and actor.email:
        test_recipients_allowed(settings, actor, recipients)
    if subscriber_email is not None:
        like = get_subscriber(engine, subscriber_email)
        if like is None:
            raise LookupError(f"no subscriber {subscriber_email!r}; `digest subscribers list` shows them")
    # Marked as a test: "[Test]" in the subject, a banner, no reader-only links (see Issue.test).
    messages = edition_messages(settings, replace(require_issue(engine, number), test=True))
    outgoing = [messages(staff_subscriber(settings, address, like)) for address in recipients]
    if any(m is None for m in outgoing):
        raise LookupError(f"{subscriber_email}'s preferences select nothing in issue {number}: nothing to send")
    results = deliver_now(settings, outgoing, make_transport)
    record(engine, actor, "issue.test_send", issue_number=number,
           detail={"to": list(recipients), "edition of": subscriber_email or "everyone",
                   "sent": sum(r.ok for r in results)})
    return results


@uses_current_settings
def send_now(settings: Settings, engine: Engine, number: int, now: datetime, reason: str,
             actor: Account | None = None) -> SendReport:
    """Send (or resume sending) one issue and note the outcome in the run log; re-raises a failure."""
    log.info("sending issue %s (%s)", number, reason)
    try:
        report = send_issue(settings, engine, number, actor=actor)
    except Exception as exc:
        record_run(engine, JOB_SEND, "error", f"issue {number}: {describe(exc)}", issue_number=number, now=now)
        raise
    record_run(engine, JOB_SEND, "sent", f"issue {number} ({reason}): {_summary(report)}",
               issue_number=number, now=datetime.now(UTC))
    return report


def check_signing(settings: Settings) -> None:
    """Read the DKIM keys now: DkimError (a ConfigError naming the setting) rather than a failure at the first message.

    For processes that send later, as they start (`digest serve` sends confirmations, `digest run`
    sends issues and staff notes); `digest send` and `digest worker` find out before their first message.
    """
    signer_from_settings(settings)


def check_sendable(engine: Engine, number: int) -> None:
    """Refuse (IssueStateError) to start sending an issue that is not approved or already sending."""
    issue = require_issue(engine, number)
    if issue.status not in (IssueStatus.APPROVED, IssueStatus.SENDING):
        raise IssueStateError(f"issue {number} is {issue.status.value}: only an approved issue can be sent; approve it first")


@uses_current_settings
def send_due_issues(settings: Settings, engine: Engine, now: datetime) -> list[int]:
    """Send every approved issue whose send time has come; hold the stale ones for a fresh approval.

    With `delivery.late_subscribers = "current"`, also the rows queued for readers who confirmed
    after an issue went out.
    """
    sent = []
    for timing in issue_timings(engine, (IssueStatus.APPROVED,)):
        outlook = send_outlook(settings, timing, now)
        if outlook.when == SendWhen.AFTER_FRESH_APPROVAL:
            reason = (f"issue {timing.number} missed its send time {local_time(settings, outlook.due)} by "
                      f"{hours(outlook.late)}, more than stale_after_hours={settings.schedule.stale_after_hours}; "
                      "approve it again to send it")
            if hold_for_approval(engine, timing.number, reason, now=now):
                log.warning("%s", reason)
            continue
        if outlook.when != SendWhen.AT_ONCE:
            continue
        try:
            send_now(settings, engine, timing.number, now, reason=f"due {local_time(settings, outlook.due)}",
                     actor=SCHEDULER)
        except Exception:  # noted in the run log; the next issue still goes
            log.exception("sending issue %s failed", timing.number)
            continue
        sent.append(timing.number)
    if settings.delivery.late_subscribers == "current":
        sent += send_to_late_readers(settings, engine, now)
    return sent


@uses_current_settings
def send_now_noted(settings: Settings, engine: Engine, number: int, by: Account) -> None:
    """Send now for a front door whose answer is gone (a background task): a failure is in the run log only."""
    try:
        send_now(settings, engine, number, datetime.now(UTC), reason=f"send now by {by.label}", actor=by)
    except Exception:  # noqa: BLE001 - send_now noted it in the run log, which the report page shows
        log.debug("send now of issue %s by %s failed (noted in the run log)", number, by)


@uses_current_settings
def send_to_late_readers(settings: Settings, engine: Engine, now: datetime,
                         make_transport: TransportFactory | None = None) -> list[int]:
    """Send the rows queued on sent issues for readers who confirmed after them; returns those issues.

    Such rows come from `delivery.late_subscribers = "current"` (see signup.confirm_subscription).
    Another sender holding the lock (SQLite) takes them in its pass, or the next minute's pass does;
    any other failure is noted in the run log, not raised.
    """
    sent = []
    for number in issues_with_late_readers(engine):
        try:
            report = send_issue(settings, engine, number, make_transport=make_transport)
        except SenderBusy:
            continue
        except Exception as exc:  # noted; the rows stay queued for the next pass
            log.exception("sending issue %s to late readers failed", number)
            record_run(engine, JOB_SEND, "error", f"issue {number}, late readers: {describe(exc)}",
                       issue_number=number, now=now)
            continue
        record_run(engine, JOB_SEND, "sent", f"issue {number} (readers who confirmed since): {_summary(report)}",
                   issue_number=number, now=datetime.now(UTC))
        sent.append(number)
    return sent


@uses_current_settings
def resume_interrupted_sends(settings: Settings, engine: Engine, now: datetime) -> None:
    """Send on every issue left `sending` (a process stopped mid-send); each failure is noted, not raised."""
    for timing in issue_timings(engine, (IssueStatus.SENDING,)):
        try:
            send_now(settings, engine, timing.number, now, reason="resuming an interrupted send", actor=SCHEDULER)
        except Exception:  # already in the run log; the other issues still go
            log.exception("resuming issue %s failed", timing.number)


@uses_current_settings
def notify_staff(settings: Settings, engine: Engine, number: int, now: datetime) -> None:
    """Email the staff list that draft `number` is ready, with its admin preview link.

    Never raises for a refusal or a transport setting: the build is done either way, and a
    "notify-failed" note says what went wrong.
    """
    if not settings.schedule.staff:
        return
    link = f"{settings.web.base_url.rstrip('/')}/admin/issues/{number}"
    messages, failed = [], []
    for address in settings.schedule.staff:
        try:
            messages.append(staff_note_message(settings, address, number, link))
        except (HeaderError, DkimError) as exc:  # an unusable address or DKIM key: a setting to fix, noted below
            failed.append(f"{address}: {exc}")
    try:
        failed += [r.error for r in deliver_now(settings, messages) if not r.ok] if messages else []
    except TransportError as exc:  # e.g. the password variable empty, the login refused
        failed.append(str(exc))
    outcome, detail = ("notified", f"staff told draft {number} is ready") if not failed else \
        ("notify-failed", f"telling staff about draft {number} failed: {'; '.join(failed)}")
    record_run(engine, JOB_NOTIFY, outcome, detail, issue_number=number, now=now)


def _summary(report: SendReport) -> str:
    fields = ("sent", "failed", "skipped", "queued")
    parts = [f"{name} {getattr(report, name)}" for name in fields if isinstance(getattr(report, name, None), int)]
    return ", ".join(parts) or "done"


def _segment_label(settings: Settings, issue: Issue) -> Callable[[Subscriber], str]:
    """subscriber → their segment, as the report of messages too large names it."""
    def label(subscriber: Subscriber) -> str:
        segment = segment_for(issue, subscriber, settings.site.language)
        if segment is None:
            return "no segment"
        return f"the {segment.language} edition with {', '.join(segment.section_ids)}"
    return label


@contextlib.contextmanager
def _store_failures(engine: Engine, then: str) -> Iterator[None]:
    """Turn a database error during a send into StoreFailed: which store, what happened, what to do.

    The send loop has stopped by then: every message the server accepted is recorded `sent` except,
    at most, the one each SMTP connection had in hand, which goes again (at least once, never lost).
    """
    try:
        yield
    except (DBAPIError, PoolTimeout, engine.dialect.dbapi.Error) as exc:
        cause = exc.orig if isinstance(exc, DBAPIError) else exc
        reason = (str(cause).strip().splitlines() or [cause.__class__.__name__])[0]
        if engine.dialect.name == "sqlite":
            where = (f"Another process may hold the SQLite database locked (a long write, a backup, an open "
                     f"`sqlite3` shell), or the disk under {engine.url.database} may be full: stop that process "
                     "or free some space")
        else:
            where = "Check that the PostgreSQL server is up, reachable and has disk space"
        raise StoreFailed(
            f"the store ({engine.url.render_as_string(hide_password=True)}, store.url) failed during the send: "
            f"{reason}. {where}, then {then}. Unsent messages stay queued; a message that was going out "
            "as the store failed may be sent twice (at most one per SMTP connection), none is lost") from None


def _send_options(settings: Settings, batch_size: int | None = None) -> SendOptions:
    connections = settings.delivery.smtp.connections if settings.delivery.transport == "smtp" else 1
    return SendOptions(connections=connections, batch_size=batch_size or settings.delivery.batch_size,
                       policy=RetryPolicy.from_settings(settings), nice=settings.delivery.nice)


def _connection_transport(settings: Settings) -> TransportFactory:
    """A factory of one-connection transports: the send loop runs one per connection, each
    recording its message as sent before it takes the next (the rate limit is shared out)."""
    smtp = settings.delivery.smtp
    share = replace(smtp, connections=1, rate_limit=smtp.rate_limit / smtp.connections)
    one = replace(settings, delivery=replace(settings.delivery, smtp=share))
    return lambda: transport_from_settings(one)


# --- the worker loop and the server check ----------------------------------------------------------

class ServerUnreachable(Exception):
    """The SMTP server takes no connection (the message names it); nothing was sent, rows stay queued."""


def run_worker(settings: Settings, engine: Engine, *, once: bool = False, batch_size: int | None = None,
               interval: float = 10.0, on_pass: Callable[[list[SendReport]], None] | None = None,
               on_busy: Callable[[SenderBusy], None] | None = None,
               stop: threading.Event | None = None) -> list[SendReport]:
    """Work pending sends pass after pass as one worker (`digest worker`), until `stop` is set.

    Each pass is work_pending under this worker's one holder name, with the settings in force at that
    pass (a series or branding edit reaches a running worker at its next pass); `on_pass` gets its reports, and
    an idle worker rests `interval` seconds between passes. On SQLite another sender holding the
    lock is waited out (`on_busy` is told each time). With `once`: one pass, whose reports are
    returned; SenderBusy rather than waiting, and ServerUnreachable when the SMTP server takes no
    connection (a looping worker waits an outage out). SendStopped and setup errors (TransportError,
    EditionError, RenderError, DkimError) end the loop: every pass would stop the same way.
    """
    holder = lock_holder("worker")
    stop = stop or threading.Event()
    reports: list[SendReport] = []
    while not stop.is_set():
        try:
            reports = work_pending(settings, engine, holder, batch_size=batch_size, check_server=once)
        except SenderBusy as exc:
            if once:
                raise
            if on_busy:
                on_busy(exc)
            reports = []
        if on_pass:
            on_pass(reports)
        if once:
            break
        stop.wait(interval)
    return reports


def _refuse_unreachable(settings: Settings) -> None:
    """ServerUnreachable when delivery goes over SMTP and the server takes no connection.

    TransportError for unusable settings (e.g. the password variable empty).
    """
    if settings.delivery.transport != "smtp":
        return
    with transport_from_settings(settings) as transport:
        problem = transport.check_connection() if isinstance(transport, SmtpTransport) else None
    if problem:
        raise ServerUnreachable(problem)
