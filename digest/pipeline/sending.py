"""Use case: sending. An approved issue to every eligible subscriber exactly once; workers; tests; due sends.

Rules that live here and nowhere else:
- only an approved (or already sending) issue is sent, and the ledger sends each row once;
- a test send goes to staff addresses and never touches the ledger;
- an approved issue goes out at its send time (digest.timing.send_outlook); one more than
  `schedule.stale_after_hours` late waits for a fresh approval;
- every scheduled or "send now" send leaves a note in the run log, as does the staff note.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from sqlalchemy import Engine

from ..config import Settings
from ..deliver.editions import edition_messages, staff_subscriber
from ..deliver.outcomes import ProgressFn, RetryPolicy
from ..deliver.sender import SendOptions, SendReport, deliver_issue, sender_slot
from ..deliver.transport import OutgoingMessage, SendResult, Transport
from ..deliver.transports import TransportError, transport_from_settings
from ..models import IssueStatus
from ..store.issues import IssueStateError, require_issue
from ..store.ledger import issues_being_sent, start_sending
from ..store.locks import lock_holder
from ..store.runs import hold_for_approval, issue_timings, record_run
from ..store.subscribers import get_subscriber
from ..timing import SendWhen, send_outlook
from .runs import JOB_NOTIFY, JOB_SEND, describe, hours, local_time

log = logging.getLogger("digest.pipeline")

TransportFactory = Callable[[], Transport]


def send_issue(settings: Settings, engine: Engine, number: int, progress: ProgressFn | None = None, *,
               late: bool = False, make_transport: TransportFactory | None = None, wait: float = 0.0) -> SendReport:
    """Fill the ledger for an approved issue and send until every row is done; returns a SendReport.

    Only approved (or already sending) issues are sent: LedgerError otherwise. A sent issue sends
    nothing again unless `late` (subscribers confirmed since then get it). On SQLite one sender runs
    at a time: SenderBusy if another holds the lock after `wait` seconds. `progress(done, total)`.
    EditionError (rows still queued) when a segment's message cannot be built; SendStopped (rows
    queued again) when messages fail for everyone alike, or the server refuses the sender.
    """
    holder = lock_holder("send")
    with sender_slot(engine, holder, wait) as keep_alive:
        start_sending(engine, number, datetime.now(UTC), late=late)
        messages = edition_messages(settings, require_issue(engine, number))
        return deliver_issue(engine, number, holder=holder, make_message=messages,
                             make_transport=make_transport or _connection_transport(settings),
                             options=_send_options(settings), keep_alive=keep_alive, progress=progress)


def work_pending(settings: Settings, engine: Engine, holder: str, progress: ProgressFn | None = None, *,
                 batch_size: int | None = None, make_transport: TransportFactory | None = None,
                 wait: float = 0.0) -> list[SendReport]:
    """One worker pass: send the claimable rows of every issue in `sending`; returns a SendReport each.

    Does not wait for retries that are not due yet (the next pass takes them). Safe to run in any
    number of processes on PostgreSQL; SenderBusy on SQLite when another sender holds the lock.
    """
    options = replace(_send_options(settings, batch_size), wait_for_retries=False)
    reports = []
    with sender_slot(engine, holder, wait) as keep_alive:
        for number in issues_being_sent(engine):
            messages = edition_messages(settings, require_issue(engine, number))
            reports.append(deliver_issue(engine, number, holder=holder, make_message=messages,
                                         make_transport=make_transport or _connection_transport(settings),
                                         options=options, keep_alive=keep_alive, progress=progress))
    return reports


def send_test(settings: Settings, engine: Engine, number: int, recipients: Iterable[str], *,
              subscriber_email: str | None = None, make_transport: TransportFactory | None = None) -> list[SendResult]:
    """Send the full edition (or `subscriber_email`'s) to each staff address; the ledger is untouched.

    Returns one SendResult per recipient (a refusal, the sender's too, is a failed result, not an
    exception). LookupError for an unknown issue or subscriber.
    """
    like = None
    if subscriber_email is not None:
        like = get_subscriber(engine, subscriber_email)
        if like is None:
            raise LookupError(f"no subscriber {subscriber_email!r}; `digest subscribers list` shows them")
    messages = edition_messages(settings, require_issue(engine, number))
    outgoing = [messages(staff_subscriber(settings, address, like)) for address in recipients]
    if any(m is None for m in outgoing):
        raise LookupError(f"{subscriber_email}'s preferences select nothing in issue {number}: nothing to send")
    return deliver_now(settings, outgoing, make_transport)


def send_now(settings: Settings, engine: Engine, number: int, now: datetime, reason: str) -> SendReport:
    """Send (or resume sending) one issue and note the outcome in the run log; re-raises a failure."""
    log.info("sending issue %s (%s)", number, reason)
    try:
        report = send_issue(settings, engine, number)
    except Exception as exc:
        record_run(engine, JOB_SEND, "error", f"issue {number}: {describe(exc)}", issue_number=number, now=now)
        raise
    record_run(engine, JOB_SEND, "sent", f"issue {number} ({reason}): {_summary(report)}",
               issue_number=number, now=datetime.now(UTC))
    return report


def check_sendable(engine: Engine, number: int) -> None:
    """Refuse (IssueStateError) to start sending an issue that is not approved or already sending."""
    issue = require_issue(engine, number)
    if issue.status not in (IssueStatus.APPROVED, IssueStatus.SENDING):
        raise IssueStateError(f"issue {number} is {issue.status.value}: only an approved issue can be sent; approve it first")


def send_due_issues(settings: Settings, engine: Engine, now: datetime) -> list[int]:
    """Send every approved issue whose send time has come; hold the stale ones for a fresh approval."""
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
            send_now(settings, engine, timing.number, now, reason=f"due {local_time(settings, outlook.due)}")
        except Exception:  # noted in the run log; the next issue still goes
            log.exception("sending issue %s failed", timing.number)
            continue
        sent.append(timing.number)
    return sent


def resume_interrupted_sends(settings: Settings, engine: Engine, now: datetime) -> None:
    """Send on every issue left `sending` (a process stopped mid-send); each failure is noted, not raised."""
    for timing in issue_timings(engine, (IssueStatus.SENDING,)):
        try:
            send_now(settings, engine, timing.number, now, reason="resuming an interrupted send")
        except Exception:  # already in the run log; the other issues still go
            log.exception("resuming issue %s failed", timing.number)


def notify_staff(settings: Settings, engine: Engine, number: int, now: datetime) -> None:
    """Email the staff list that draft `number` is ready, with its admin preview link.

    Never raises for a refusal or a transport setting: the build is done either way, and a
    "notify-failed" note says what went wrong.
    """
    if not settings.schedule.staff:
        return
    link = f"{settings.web.base_url.rstrip('/')}/admin/issues/{number}"
    messages = [_staff_note(settings, address, number, link) for address in settings.schedule.staff]
    try:
        failed = [r.error for r in deliver_now(settings, messages) if not r.ok]
    except TransportError as exc:  # e.g. the password variable empty, the login refused
        failed = [str(exc)]
    outcome, detail = ("notified", f"staff told draft {number} is ready") if not failed else \
        ("notify-failed", f"telling staff about draft {number} failed: {'; '.join(failed)}")
    record_run(engine, JOB_NOTIFY, outcome, detail, issue_number=number, now=now)


def _staff_note(settings: Settings, address: str, number: int, link: str) -> OutgoingMessage:
    msg = EmailMessage()
    msg["From"] = settings.delivery.sender
    msg["To"] = address
    msg["Subject"] = f"{settings.site.name} digest: draft {number} is ready for review"
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain=parseaddr(settings.delivery.sender)[1].rpartition("@")[2] or None)
    approval = "It goes out automatically" if settings.schedule.auto_approve else \
        "It goes out at the next send time once approved (at once if approved after it)"
    msg.set_content(f"Draft {number} of the {settings.site.name} digest is ready.\n\n"
                    f"Preview, edit and approve it here:\n{link}\n\n{approval}.\n")
    return OutgoingMessage(envelope_from=parseaddr(settings.delivery.sender)[1],
                           recipients=(parseaddr(address)[1],), data=msg.as_bytes(), message_id=msg["Message-ID"])


def deliver_now(settings: Settings, messages: list[OutgoingMessage],
                make_transport: TransportFactory | None = None) -> list[SendResult]:
    """Send a few messages outside the ledger (tests, notes) over one transport; one result each."""
    transport = (make_transport or (lambda: transport_from_settings(settings)))()
    try:
        return transport.send_messages(messages)
    finally:
        transport.close()


def _summary(report: SendReport) -> str:
    fields = ("sent", "failed", "skipped", "queued")
    parts = [f"{name} {getattr(report, name)}" for name in fields if isinstance(getattr(report, name, None), int)]
    return ", ".join(parts) or "done"


def _send_options(settings: Settings, batch_size: int | None = None) -> SendOptions:
    connections = settings.delivery.smtp.connections if settings.delivery.transport == "smtp" else 1
    return SendOptions(connections=connections, batch_size=batch_size or settings.delivery.batch_size,
                       policy=RetryPolicy.from_settings(settings))


def _connection_transport(settings: Settings) -> TransportFactory:
    """A factory of one-connection transports: the send loop runs one per connection, each
    recording its message as sent before it takes the next (the rate limit is shared out)."""
    smtp = settings.delivery.smtp
    share = replace(smtp, connections=1, rate_limit=smtp.rate_limit / smtp.connections)
    one = replace(settings, delivery=replace(settings.delivery, smtp=share))
    return lambda: transport_from_settings(one)
