"""Use case: ingest. Fetch, parse and store every configured feed; report each feed's health.

The feeds are read at each fetch (`feeds_to_fetch`): the [[feeds]] of digest.toml when it lists
any, else the store's feeds that are not paused (digest.pipeline.feeds manages them). So an edit
made in the admin or with `digest feeds …` reaches every running process at its next fetch.

Feeds download concurrently and are parsed as they land, each in a worker process under a CPU-time
limit (digest.parse_workers; the workers stay for the process's next fetch, except after a scheduled
one), then stored one at a time. One broken or hostile feed costs only its own report.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ..config import Settings
from ..defuse import ERROR_HTML
from ..feed_discovery import discover_feeds, suggested_feed, with_suggestion
from ..fetch import FetchJob, FetchOutcome, Validators, feed_location, fetch_feeds
from ..models import Feed, FeedStatus, FetchReport, ItemKind
from ..parse import ParseResult
from ..parse_workers import ParseWorkers, stop_idle_workers
from ..store import relaxed_durability
from ..store.feed_sources import StoredFeed, stored_feeds
from ..store.feeds import all_feed_states, get_feed_states, record_fetch
from ..store.items import save_items
from ..store.runs import record_run
from .managed import uses_current_settings
from .runs import JOB_FETCH, describe

Progress = Callable[[FetchReport], None]
NO_FEEDS = ("no feeds configured: add [[feeds]] tables (name, url, kind) to the config file, or add feeds to "
            "the store with `digest feeds add URL --name NAME --kind KIND` or on the admin's Feeds page "
            "(paused feeds are not fetched)")


def feeds_to_fetch(settings: Settings, engine: Engine) -> list[Feed]:
    """The feeds a fetch takes now: digest.toml's [[feeds]] if it lists any, else the store's unpaused ones."""
    if settings.feeds:
        return list(settings.feeds)
    return [stored_feed_as_feed(f) for f in stored_feeds(engine) if not f.paused]


def stored_feed_as_feed(stored: StoredFeed) -> Feed:
    return Feed(name=stored.name, url=stored.url, kind=ItemKind(stored.kind), language=stored.language)


@uses_current_settings
def fetch_all(settings: Settings, engine: Engine, progress: Progress | None = None,
              started: Callable[[int], None] | None = None) -> list[FetchReport]:
    """Fetch, parse and store every feed of `feeds_to_fetch`; returns one FetchReport per feed, in its order.

    `started(count)` is called once the feeds are known (none: an empty list comes back; NO_FEEDS
    says what to do), `progress(report)` once per feed as it finishes. Writes skip the wait for the
    disk (store.relaxed_durability): a power loss can only make the next run fetch some feeds again.
    """
    feeds = feeds_to_fetch(settings, engine)
    if started is not None:
        started(len(feeds))
    with relaxed_durability(engine) as writes:
        return _fetch_all(settings, feeds, writes, progress)


@uses_current_settings
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
    detail = f"{len(reports)} feeds, {len(errors)} with errors" if reports else "no feeds to fetch (" + NO_FEEDS + ")"
    record_run(engine, JOB_FETCH, "error" if errors and len(errors) == len(reports) else "fetched", detail)
    return reports


def feed_health(settings: Settings, engine: Engine) -> tuple[FetchReport, ...]:
    """Each feed's last fetch outcome, in `feeds_to_fetch` order ("not fetched yet" is a warning)."""
    states = {s.name: s for s in all_feed_states(engine)}
    reports = []
    for feed in feeds_to_fetch(settings, engine):
        state = states.get(feed.name)
        if state is None or not state.last_status:
            reports.append(FetchReport(feed=feed.name, url=feed.url, status=FeedStatus.WARNING, message="not fetched yet"))
        else:
            reports.append(FetchReport(feed=feed.name, url=feed.url, status=FeedStatus(state.last_status),
                                       message=state.last_message))
    return tuple(reports)


def _fetch_all(settings: Settings, feeds: list[Feed], engine: Engine, progress: Progress | None) -> list[FetchReport]:
    now = datetime.now(UTC)
    reports: dict[int, FetchReport] = {}
    jobs: list[tuple[int, FetchJob]] = []
    states = get_feed_states(engine, [(feed.name, feed.url) for feed in feeds])
    for index, (feed, state) in enumerate(zip(feeds, states, strict=True)):
        if state.retry_after and state.retry_after > now:
            reports[index] = _report_waiting(feed, state.retry_after)
            _notify(progress, reports[index])
            continue
        location = feed_location(feed.url, settings.resolve_path)
        jobs.append((index, FetchJob(location, Validators(state.etag, state.last_modified))))
    feed_order = tuple(feed.name for feed in feeds)
    # At most one parse worker per feed download that can run at once (and per CPU); none starts
    # before the first body lands.
    workers = min(len(jobs), settings.fetch.concurrency)
    with ParseWorkers(settings.fetch.parse_cpu_seconds, workers) as parse_workers:
        # A feed without validators is certain to be downloaded and parsed: the workers' fork
        # server starts now, while the bodies download. A run of 304s starts nothing.
        if any(not (job.validators.etag or job.validators.last_modified) for _, job in jobs):
            parse_workers.prepare()

        def parse(job_index: int, outcome: FetchOutcome) -> ParseResult | None:
            return _parse_outcome(parse_workers, settings, feeds[jobs[job_index][0]], outcome)

        for job_index, outcome, parsed in fetch_feeds([job for _, job in jobs], settings.fetch, then=parse):
            index = jobs[job_index][0]
            reports[index] = _store_outcome_safely(engine, feeds[index], outcome, parsed, feed_order)
            _notify(progress, reports[index])
    return [reports[i] for i in range(len(feeds))]


@dataclass(frozen=True)
class Trial:
    """What a test fetch of one feed found, stored nowhere: what adding it would store."""

    feed: Feed
    ok: bool
    reason: str = ""  # why it failed (fetch or parse error); empty when ok
    title: str = ""
    items: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    series: dict[str, int] = field(default_factory=dict)  # series name → items matched
    unmatched: int = 0  # items in no series
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    samples: tuple[str, ...] = ()  # the first item titles
    suggestion: str = ""  # the feed a web page announces ("did you mean …/feed/?"), when the URL is a page


def trial_fetch(settings: Settings, feed: Feed) -> Trial:
    """Fetch and parse `feed` once, as a real fetch would (same limits, a parse worker), storing nothing.

    The worker is stopped afterwards: tests are rare, and the web process should not keep it.
    """
    location = feed_location(feed.url, settings.resolve_path)
    try:
        with ParseWorkers(settings.fetch.parse_cpu_seconds, 1) as parse_workers:
            def parse(job_index: int, outcome: FetchOutcome) -> ParseResult | None:
                return _parse_outcome(parse_workers, settings, feed, outcome)

            ((_, outcome, parsed),) = list(fetch_feeds([FetchJob(location, Validators(None, None))], settings.fetch,
                                                       then=parse))
    finally:
        stop_idle_workers()
    if parsed is None:
        reason = outcome.error.message if outcome.error else "the server sent nothing"
        return Trial(feed=feed, ok=False, reason=reason)
    if parsed.error:
        return Trial(feed=feed, ok=False, reason=parsed.error, suggestion=suggested_feed(parsed.error) or "")
    names = {s.id: s.name for s in settings.series}
    series = Counter(names.get(s, s) for item in parsed.items for s in item.series)
    return Trial(feed=feed, ok=parsed.error is None and bool(parsed.items),
                 reason=parsed.error or ("" if parsed.items else "the feed holds no items"),
                 title=parsed.title, items=len(parsed.items),
                 kinds=dict(Counter(item.kind.value for item in parsed.items)), series=dict(series),
                 unmatched=sum(1 for item in parsed.items if not item.series),
                 warnings=tuple(parsed.warnings), notes=tuple(parsed.notes),
                 samples=tuple(item.title for item in parsed.items[:5]))


def _parse_outcome(parse_workers: ParseWorkers, settings: Settings, feed: Feed,
                   outcome: FetchOutcome) -> ParseResult | None:
    """The feed's ParseResult when bytes arrived (None otherwise); never raises."""
    if not outcome.ok:
        return None
    try:
        parsed = parse_workers.parse(outcome.body, feed, settings.series, content_location=outcome.content_location,
                                     content_type=outcome.content_type)
    except Exception as exc:  # noqa: BLE001 - a parser bug must cost this feed only
        return ParseResult([], [], f"the parser failed unexpectedly ({type(exc).__name__}: {exc}); please report this feed")
    if parsed.error == ERROR_HTML:  # a web page: the feed it announces is what staff meant, most likely
        return replace(parsed, error=with_suggestion(parsed.error, discover_feeds(outcome.body, outcome.url)))
    return parsed


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
