"""`digest send` (one issue to every eligible subscriber, or a test send) and `digest worker`."""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import NoReturn

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeRemainingColumn,
)

from ..config import ConfigError
from ..deliver.dkim import DkimError
from ..deliver.editions import EditionError
from ..deliver.sender import SenderBusy, SendReport, SendStopped
from ..deliver.transport import TransportError
from ..pipeline.sending import ServerUnreachable, StoreFailed, run_worker, send_issue, send_test
from ..render import RenderError
from ..store import StoreError
from ..store.ledger import LedgerError
from .base import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    console,
    fail,
    handle_errors,
    main,
    print_json,
    setup_error,
    state,
)

# Problems of configuration or templates that no retry fixes: exit 2, nothing marked failed.
SETUP_ERRORS = (TransportError, EditionError, RenderError, DkimError)


@main.command("send")
@click.option("--issue", "number", type=int, required=True, metavar="N", help="Number of the approved issue to send.")
@click.option("--late", is_flag=True, help="Also send a sent issue to subscribers confirmed since it went out.")
@click.option("--test", "test_to", multiple=True, metavar="EMAIL",
              help="Send the edition to this staff address only (repeatable); the ledger is not touched.")
@click.option("--subscriber", metavar="EMAIL", help="With --test: send this subscriber's edition instead of the full one.")
@click.option("--wait", type=float, default=0.0, show_default=True, metavar="SECONDS",
              help="SQLite: wait this long for another sender to finish instead of exiting.")
@click.option("--json", "as_json", is_flag=True, help="Print the final report as JSON on stdout.")
@click.argument("more_test_to", nargs=-1, metavar="[EMAIL]...")
@handle_errors
def send_command(number: int, late: bool, test_to: tuple[str, ...], subscriber: str | None, wait: float,
                 as_json: bool, more_test_to: tuple[str, ...]) -> None:
    """Send issue N to every confirmed subscriber once (exit 1 if messages were given up or left open).

    With --test, the edition goes only to the addresses given: `--test a@x --test b@y` or `--test a@x b@y`.
    """
    if more_test_to and not test_to:
        fail(f"unexpected argument {more_test_to[0]!r}: addresses go after --test (a test send)", EXIT_USAGE)
    test_to = (*test_to, *more_test_to)
    if subscriber and not test_to:
        fail("--subscriber only goes with --test EMAIL (a test send of that subscriber's edition)", EXIT_USAGE)
    if test_to:
        _test_send(number, test_to, subscriber, as_json)
        return
    signal.signal(signal.SIGTERM, _interrupt)  # stop like Ctrl-C: unsent rows go back to the queue
    # With --json, stdout carries a report whatever happens (the error in its "error" field).
    failed = _json_failure(number) if as_json else _plain_failure
    try:
        settings, engine = state().settings, state().engine
        with _progress_bar(f"issue {number}") as progress:
            report = send_issue(settings, engine, number, progress, late=late, wait=wait, check_server=True)
    except LedgerError as exc:
        failed(str(exc), EXIT_USAGE)
    except SETUP_ERRORS as exc:
        failed(f"cannot send: {exc}", EXIT_USAGE)
    except ServerUnreachable as exc:
        failed(_unreachable_text(exc, f"run `digest send --issue {number}` again (or let `digest worker` send it)"),
               EXIT_FAILED)
    except SendStopped as exc:
        failed(str(exc), EXIT_FAILED, exc.report)
    except (SenderBusy, StoreFailed) as exc:
        failed(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        failed("interrupted: unsent messages stay queued; run the same command again to continue", EXIT_FAILED)
    except (ConfigError, StoreError) as exc:  # as handle_errors says it, with the JSON report
        failed(setup_error(exc), EXIT_USAGE)
    _print_report(report, as_json)
    sys.exit(report_exit_code(report))


@main.command("worker")
@click.option("--once", is_flag=True, help="One pass over the issues being sent, then exit.")
@click.option("--batch", type=click.IntRange(min=1), metavar="N", help="Rows claimed at a time (default: delivery.batch_size).")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True, metavar="SECONDS",
              help="Pause between passes when there is nothing to send.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON report per issue worked on.")
@handle_errors
def worker_command(once: bool, batch: int | None, interval: float, as_json: bool) -> None:
    """Send queued messages of every issue in `sending`; any number may run against one PostgreSQL."""
    told_busy = False

    def show(reports: list[SendReport]) -> None:
        for report in reports:
            if as_json:  # one object per line: a pass may cover several issues
                click.echo(json.dumps(report.as_json(), ensure_ascii=False))
            elif report.sent or report.failed or report.skipped or report.gave_up or report.possibly_delivered:
                _print_report(report, as_json=False)

    def busy(exc: SenderBusy) -> None:
        nonlocal told_busy
        if not told_busy:  # once is enough: the worker keeps waiting without repeating it
            console.print(f"waiting: {exc}", markup=False, soft_wrap=True)
        told_busy = True

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        reports = run_worker(state().settings, state().engine, once=once, batch_size=batch, interval=interval,
                             on_pass=show, on_busy=busy)
    except SETUP_ERRORS as exc:
        fail(f"cannot send: {exc}", EXIT_USAGE)
    except ServerUnreachable as exc:
        fail(_unreachable_text(exc, "run `digest worker --once` again"), EXIT_FAILED)
    except (SenderBusy, SendStopped, StoreFailed) as exc:  # busy: only with --once; stopped: every pass would stop alike
        fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        console.print("worker stopped; unsent messages stay queued for the next worker")
        sys.exit(EXIT_OK)
    # After one pass: rows waiting for a retry are normal between passes; only given-up messages fail.
    sys.exit(EXIT_FAILED if any(r.gave_up for r in reports) else EXIT_OK)


def _unreachable_text(exc: ServerUnreachable, then: str) -> str:
    """What to say when the SMTP server takes no connection: which server, and what to do next."""
    return (f"{exc}\nNothing was sent; every message stays queued. Check 'delivery.smtp.host' and "
            f"'port', then {then}.")


def _plain_failure(message: str, code: int, report: SendReport | None = None) -> NoReturn:
    fail(message, code)


def _json_failure(number: int) -> Callable[..., NoReturn]:
    """`fail` for --json: the report on stdout (the run's, or an empty one) with the error, then the
    usual error line on stderr and the exit code."""
    def failed(message: str, code: int, report: SendReport | None = None) -> NoReturn:
        report = report or SendReport(issue=number, status="", error=message)
        print_json({**report.as_json(), "error": message, "exit_code": code})
        fail(message, code)
    return failed


def report_exit_code(report: SendReport) -> int:
    """0 when every row reached a final state (bounces are reported, not errors); 1 when messages were
    given up after repeated temporary failures or rows are still open."""
    return EXIT_FAILED if report.gave_up or report.open_rows else EXIT_OK


def _test_send(number: int, recipients: tuple[str, ...], subscriber: str | None, as_json: bool) -> None:
    settings, engine = state().settings, state().engine
    try:
        results = send_test(settings, engine, number, recipients, subscriber_email=subscriber)
    except (LookupError, ValueError) as exc:
        fail(str(exc).strip("'\""), EXIT_USAGE)
    except SETUP_ERRORS as exc:
        fail(f"cannot send: {exc}", EXIT_USAGE)
    rows = [{"to": to, "ok": r.ok, "error": r.error} for to, r in zip(recipients, results, strict=True)]
    if as_json:
        print_json({"issue": number, "test": rows})
    for row in rows:
        if not as_json:
            console.print(f"test send to {row['to']}: " + ("sent" if row["ok"] else f"FAILED {row['error']}"),
                          markup=False, soft_wrap=True)
    sys.exit(EXIT_OK if all(r["ok"] for r in rows) else EXIT_FAILED)


class _progress_bar:  # lower case: used like a function, `with _progress_bar(label) as progress`
    """A rich progress bar on stderr with rate and ETA; yields the `progress(done, total)` callback."""

    # The bar redraws 10 times a second; the send reports every message (over a thousand a second),
    # and rich's update costs about what building a message does: pass on one report per redraw.
    EVERY = 0.1

    def __init__(self, label: str, on: Console | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                            TextColumn("{task.fields[rate]}"),
                            TimeRemainingColumn(), console=on or console, transient=True)
        self.clock = clock
        self.started = self.shown = clock()

    def __enter__(self) -> Callable[[int, int], None]:
        self.bar.start()
        self.task = self.bar.add_task("", total=None, rate="")
        return self.update

    def update(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.shown < self.EVERY and done < total:
            return
        self.shown = now
        elapsed = now - self.started
        rate = f"{done / elapsed:,.0f} msg/s" if elapsed > 0 else ""
        self.bar.update(self.task, completed=done, total=total, rate=rate)

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.bar.stop()


def _print_report(report: SendReport, as_json: bool) -> None:
    if as_json:
        print_json(report.as_json())
        return
    line = (f"issue {report.issue} ({report.status}): {report.sent} sent, {report.failed} failed, "
            f"{report.bounced} bounced, {report.skipped} skipped, {report.retried} to retry, "
            f"{report.gave_up} given up, {report.possibly_delivered} possibly delivered in "
            f"{report.duration:.1f} s ({report.rate:,.0f} messages/s)")
    if report.open_rows:
        line += f"; {report.open_rows} still open"
    elif report.status == "sent" and not (report.sent or report.failed or report.skipped or report.gave_up):
        line = (f"issue {report.issue} was already sent to everyone: nothing to send "
                f"(`--late` sends it to subscribers confirmed since)")
    console.print(line, markup=False, soft_wrap=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt
