"""Use case: ingest. Fetch, parse and store every configured feed; report each feed's health.

Feeds download concurrently and are parsed as they land, each in a worker process under a CPU-time
limit (digest.parse_workers; the workers stay for the process's next fetch, except after a scheduled
one), then stored one at a time. One broken or hostile feed costs only its own report.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..config import Settings
from ..fetch import FetchJob, FetchOutcome, Validators, feed_location, fetch_feeds
from ..models import Feed, FeedStatus, FetchReport
from ..parse import ParseResult
from ..parse_workers import ParseWorkers, stop_idle_workers
from ..store import relaxed_durability
from ..store.feeds import all_feed_states, get_feed_states, record_fetch
from ..store.items import save_items
from ..store.runs import record_run
from .runs import JOB_FETCH, describe

Progress = Callable[[FetchReport], None]


def fetch_all(settings: Settings, engine: Engine, progress: Progress | None = None) -> list[FetchReport]:
    """Fetch, parse and store every configured feed; returns one FetchReport per feed, in config order.

    `progress(report)` is called once per feed as it finishes. Writes skip the wait for the disk
    (store.relaxed_durability): a power loss can only make the next run fetch some feeds again.
    """
    with relaxed_durability(engine) as writes:
        return _fetch_all(settings, writes, progress)


def scheduled_fetch(settings: Settings, engine: Engine) -> list[FetchReport]:
    """fetch_all as the scheduler runs it: the outcome goes into the run log ("error" only when every feed failed).

    The parse workers are stopped afterwards: scheduled fetches are hours apart, and an idle worker
    holds tens of MB.
    """
    try:
        reports = fetch_all(settings, engine)
    except Exception as exc:
        record_run(engine, JOB_FETCH, "error", describe(exc))
        raise
    finally:
        stop_idle_workers()
    errors = [r for r in reports if r.status == FeedStatus.ERROR]
    record_run(engine, JOB_FETCH, "error" if errors and len(errors) == len(reports) else "fetched",
               f"{len(reports)} feeds, {len(errors)} with errors")
    return reports


def feed_health(settings: Settings, engine: Engine) -> tuple[FetchReport, ...]:
    """Each configured feed's last fetch outcome, in config order ("not fetched yet" is a warning)."""
    states = {s.name: s for s in all_feed_states(engine)}
    reports = []
    for feed in settings.feeds:
        state = states.get(feed.name)
        if state is None or not state.last_status:
            reports.append(FetchReport(feed=feed.name, url=feed.url, status=FeedStatus.WARNING, message="not fetched yet"))
        else:
            reports.append(FetchReport(feed=feed.name, url=feed.url, status=FeedStatus(state.last_status),
                                       message=state.last_message))
    return tuple(reports)


def _fetch_all(settings: Settings, engine: Engine, progress: Progress | None) -> list[FetchReport]:
    now = datetime.now(UTC)
    reports: dict[int, FetchReport] = {}
    jobs: list[tuple[int, FetchJob]] = []
    states = get_feed_states(engine, [(feed.name, feed.url) for feed in settings.feeds])
    for index, (feed, state) in enumerate(zip(settings.feeds, states, strict=True)):
        if state.retry_after and state.retry_after > now:
            reports[index] = _report_waiting(feed, state.retry_after)
            _notify(progress, reports[index])
            continue
        location = feed_location(feed.url, settings.resolve_path)
        jobs.append((index, FetchJob(location, Validators(state.etag, state.last_modified))))
    feed_order = tuple(feed.name for feed in settings.feeds)
    # At most one parse worker per feed download that can run at once (and per CPU); none starts
    # before the first body lands.
    workers = min(len(jobs), settings.fetch.concurrency)
    with ParseWorkers(settings.fetch.parse_cpu_seconds, workers) as parse_workers:
        # A feed without validators is certain to be downloaded and parsed: the workers' fork
        # server starts now, while the bodies download. A run of 304s starts nothing.
        if any(not (job.validators.etag or job.validators.last_modified) for _, job in jobs):
            parse_workers.prepare()

        def parse(job_index: int, outcome: FetchOutcome) -> ParseResult | None:
            return _parse_outcome(parse_workers, settings, settings.feeds[jobs[job_index][0]], outcome)

        for job_index, outcome, parsed in fetch_feeds([job for _, job in jobs], settings.fetch, then=parse):
            index = jobs[job_index][0]
            reports[index] = _store_outcome_safely(engine, settings.feeds[index], outcome, parsed, feed_order)
            _notify(progress, reports[index])
    return [reports[i] for i in range(len(settings.feeds))]


def _parse_outcome(parse_workers: ParseWorkers, settings: Settings, feed: Feed,
                   outcome: FetchOutcome) -> ParseResult | None:
    """The feed's ParseResult when bytes arrived (None otherwise); never raises."""
    if not outcome.ok:
        return None
    try:
        return parse_workers.parse(outcome.body, feed, settings.series, content_location=outcome.content_location)
    except Exception as exc:  # noqa: BLE001 - a parser bug must cost this feed only
        return ParseResult([], [], f"the parser failed unexpectedly ({type(exc).__name__}: {exc}); please report this feed")


def _store_outcome_safely(engine: Engine, feed: Feed, outcome: FetchOutcome, parsed: ParseResult | None,
                          feed_order: tuple[str, ...]) -> FetchReport:
    """_store_outcome, or an ERROR report for this feed when storing fails in any way; never raises.

    Whatever goes wrong here (the store refusing a value, a lost connection, a bug) costs this
    feed's report only: the other feeds are still fetched, stored and reported.
    """
    try:
        return _store_outcome(engine, feed, outcome, parsed, feed_order)
    except Exception as exc:  # noqa: BLE001 - one feed's outcome must never stop the run
        detail = (str(exc).splitlines() or [""])[0][:300]
        message = f"could not store this feed's outcome: {type(exc).__name__}: {detail}"
        return FetchReport(feed=feed.name, url=feed.url, status=FeedStatus.ERROR, message=message)


def _store_outcome(engine: Engine, feed: Feed, outcome: FetchOutcome, parsed: ParseResult | None,
                   feed_order: tuple[str, ...] = ()) -> FetchReport:
    """Store one feed's items and record how its fetch went; the FetchReport for it."""
    if parsed is None:
        status = FeedStatus.ERROR if outcome.error else FeedStatus.NOT_MODIFIED
        message = outcome.error.message if outcome.error else "not modified since the last fetch"
        record_fetch(engine, feed.name, feed.url, status, message, etag=outcome.etag,
                     last_modified=outcome.last_modified, retry_after=outcome.retry_after)
        return FetchReport(feed=feed.name, url=feed.url, status=status, message=message)
    try:
        counts = save_items(engine, parsed.items, feed_order=feed_order)
    except SQLAlchemyError as exc:
        message = f"could not store the items: {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        record_fetch(engine, feed.name, feed.url, FeedStatus.ERROR, message)
        return FetchReport(feed=feed.name, url=feed.url, status=FeedStatus.ERROR, message=message)
    status = FeedStatus.ERROR if parsed.error else FeedStatus.WARNING if parsed.warnings else FeedStatus.OK
    message = "; ".join(m for m in [parsed.error or "", *parsed.warnings, *parsed.notes] if m)
    # After a parse error keep the old validators, so the next run downloads the feed again;
    # otherwise store exactly what the server sent ("" clears a validator it no longer sends).
    keep_old = status == FeedStatus.ERROR
    record_fetch(engine, feed.name, feed.url, status, message,
                 etag=None if keep_old else outcome.etag or "",
                 last_modified=None if keep_old else outcome.last_modified or "")
    return FetchReport(feed=feed.name, url=feed.url, status=status, message=message,
                       items=len(parsed.items), new=counts.new, updated=counts.updated)


def _report_waiting(feed: Feed, until: datetime) -> FetchReport:
    message = f"skipped: the server asked us to wait until {until:%Y-%m-%d %H:%M} UTC (Retry-After)"
    return FetchReport(feed=feed.name, url=feed.url, status=FeedStatus.NOT_MODIFIED, message=message)


def _notify(progress: Progress | None, report: FetchReport) -> None:
    if progress is not None:
        progress(report)
