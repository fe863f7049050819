"""The only place that knows the order of the stages. Front doors (cli, web, schedule) call these.

fetch_all → build_issue → render_issue → send_issue; each a recipe of explicit calls (after Pelican's run()).
Each function below has one owner; keep them short recipes that call stage modules.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from .config import Settings
from .store import relaxed_durability


# --- ingest (owner: fetch) ------------------------------------------------------------------------
def fetch_all(settings: Settings, engine: Engine, progress=None):  # noqa: ANN001, ANN201
    """Fetch, parse and store every configured feed; returns one FetchReport per feed, in config order.

    Feeds download concurrently and are parsed (one worker per CPU) as they land, then stored one
    at a time. One broken or hostile feed costs only its own report. `progress(report)` is called
    once per feed as it finishes. Writes skip the wait for the disk (store.relaxed_durability): a
    power loss can only make the next run fetch some feeds again.
    """
    with relaxed_durability(engine) as writes:
        return _fetch_all(settings, writes, progress)


def prepare_fetch(settings: Settings):  # noqa: ANN201 - a threading.Thread
    """Do a fetch's one-time set-up now, in a background thread; returns the thread (joining is optional).

    Starts the parse workers' fork server and loads the HTTP stack (httpcore, its async backend,
    the TLS context), so that the first fetch of a long-lived process (`digest run`) costs what
    every later one does. Never raises: a failure here only means the fetch does it itself.
    """
    import threading

    def prepare() -> None:
        from .fetch import warm_up
        from .parse import start_parse_server

        try:
            start_parse_server(settings.fetch.parse_cpu_seconds)
            warm_up(settings.fetch)
        except Exception:  # noqa: BLE001, S110 - only a head start: the fetch repeats whatever failed
            pass

    thread = threading.Thread(target=prepare, name="digest-prepare-fetch", daemon=True)
    thread.start()
    return thread


def _fetch_all(settings: Settings, engine: Engine, progress=None):  # noqa: ANN001, ANN202
    from datetime import UTC

    from .fetch import FetchJob, Validators, feed_location, fetch_feeds
    from .store.feeds import get_feed_states

    now = datetime.now(UTC)
    reports: dict[int, object] = {}
    jobs: list[tuple[int, FetchJob]] = []
    states = get_feed_states(engine, [(feed.name, feed.url) for feed in settings.feeds])
    for index, (feed, state) in enumerate(zip(settings.feeds, states, strict=True)):
        if state.retry_after and state.retry_after > now:
            reports[index] = _report_waiting(feed, state.retry_after)
            _notify(progress, reports[index])
            continue
        location = feed_location(feed.url, settings.resolve_path)
        jobs.append((index, FetchJob(location, Validators(state.etag, state.last_modified))))
    # A feed without validators is certain to be downloaded and parsed: start the parse workers'
    # fork server now (if it is not running yet), while the first bodies download. A run where
    # every feed answers 304 starts nothing.
    if any(not (job.validators.etag or job.validators.last_modified) for _, job in jobs):
        from .parse import start_parse_server

        start_parse_server(settings.fetch.parse_cpu_seconds)

    feed_order = tuple(feed.name for feed in settings.feeds)

    def parse(job_index: int, outcome):  # noqa: ANN001, ANN202
        return _parse_outcome(settings, settings.feeds[jobs[job_index][0]], outcome)

    for job_index, outcome, parsed in fetch_feeds([job for _, job in jobs], settings.fetch, then=parse):
        index = jobs[job_index][0]
        reports[index] = _store_outcome_safely(engine, settings.feeds[index], outcome, parsed, feed_order)
        _notify(progress, reports[index])
    return [reports[i] for i in range(len(settings.feeds))]


def _parse_outcome(settings: Settings, feed, outcome):  # noqa: ANN001, ANN202
    """The feed's ParseResult when bytes arrived (None otherwise); never raises."""
    if not outcome.ok:
        return None
    from .parse import ParseResult, parse_feed_limited  # only now: a run of 304s never needs the parser
    try:
        return parse_feed_limited(outcome.body, feed, settings.series, settings.fetch.parse_cpu_seconds,
                                  content_location=outcome.content_location)
    except Exception as exc:  # noqa: BLE001 - a parser bug must cost this feed only
        return ParseResult([], [], f"the parser failed unexpectedly ({type(exc).__name__}: {exc}); please report this feed")


def _store_outcome_safely(engine: Engine, feed, outcome, parsed, feed_order):  # noqa: ANN001, ANN202
    """_store_outcome, or an ERROR report for this feed when storing fails in any way; never raises.

    Whatever goes wrong here (the store refusing a value, a lost connection, a bug) costs this
    feed's report only: the other feeds are still fetched, stored and reported.
    """
    try:
        return _store_outcome(engine, feed, outcome, parsed, feed_order)
    except Exception as exc:  # noqa: BLE001 - one feed's outcome must never stop the run
        from .models import FeedStatus, FetchReport

        detail = (str(exc).splitlines() or [""])[0][:300]
        message = f"could not store this feed's outcome: {type(exc).__name__}: {detail}"
        return FetchReport(feed=feed.name, url=feed.url, status=FeedStatus.ERROR, message=message)


def _store_outcome(engine: Engine, feed, outcome, parsed, feed_order=()):  # noqa: ANN001, ANN202
    """Store one feed's items and record how its fetch went; the FetchReport for it."""
    from sqlalchemy.exc import SQLAlchemyError

    from .models import FeedStatus, FetchReport
    from .store.feeds import record_fetch
    from .store.items import save_items

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
    message = "; ".join(m for m in [parsed.error or "", *parsed.warnings] if m)
    # After a parse error keep the old validators, so the next run downloads the feed again;
    # otherwise store exactly what the server sent ("" clears a validator it no longer sends).
    keep_old = status == FeedStatus.ERROR
    record_fetch(engine, feed.name, feed.url, status, message,
                 etag=None if keep_old else outcome.etag or "",
                 last_modified=None if keep_old else outcome.last_modified or "")
    return FetchReport(feed=feed.name, url=feed.url, status=status, message=message,
                       items=len(parsed.items), new=counts.new, updated=counts.updated)


def _report_waiting(feed, until: datetime):  # noqa: ANN001, ANN202
    from .models import FeedStatus, FetchReport

    message = f"skipped: the server asked us to wait until {until:%Y-%m-%d %H:%M} UTC (Retry-After)"
    return FetchReport(feed=feed.name, url=feed.url, status=FeedStatus.NOT_MODIFIED, message=message)


def _notify(progress, report) -> None:  # noqa: ANN001
    if progress is not None:
        progress(report)


# --- subscribers ----------------------------------------------------------------------------------
def import_subscribers(settings: Settings, engine: Engine, path):  # noqa: ANN001, ANN201
    """Sync a subscriber list file into the store; returns its ImportReport (never re-adds the suppressed).

    Raises ListFileError when the file cannot be read as a list, SuppressionKeyMissing (before
    anything is stored) when an erasure's key is missing; adopts pre-0002 erasures on the way.
    """
    from datetime import UTC

    from .store.subscribers import import_rows
    from .subscribers import read_list_file
    from .tokens import checked_suppression_keys

    keys = checked_suppression_keys(settings, engine)
    report, rows = read_list_file(path, settings, consent_at=datetime.now(UTC))
    import_rows(engine, rows, keys, report, source=f"import:{path.name}"[:200])
    return report


# --- compose (owner: compose) ---------------------------------------------------------------------
def build_issue(settings: Settings, engine: Engine, now: datetime, since: datetime | None = None,
                until: datetime | None = None, allow_empty: bool = False):  # noqa: ANN201
    """Compose the draft issue for a window (creating or refreshing it); None when nothing is new.

    Default window: the open draft's start (else the end of the last sent issue, else
    `window_days` back on the site's clock) to `now`. The open draft, or the issue with exactly
    this window, is refreshed, keeping its editorial choices; otherwise a new draft gets the next
    number. Raises ValueError for an empty window, IssueStateError when the window's issue was
    sent, WindowConflict when the window overlaps another issue that is not cancelled or would
    reopen a cancelled issue while another is open (a reader must never get an item twice).
    """
    from .store.issues import last_sent_end, open_issue

    now = now.replace(microsecond=0)  # windows to the second read better and match across refreshes

    def attempt():  # noqa: ANN202
        from .compose import default_window, has_news
        from .models import Editorial, Window
        from .store.issues import issue_for_window, refuse_window_conflict

        current = open_issue(engine)
        start = since or (current.window.start if current else None) or last_sent_end(engine)
        window = default_window(until or now, start, settings.digest.window_days, settings.site.tz)
        if not window.start < window.end:
            raise ValueError(f"the window {window.start.isoformat()} .. {window.end.isoformat()} is empty; "
                             "--since must be before --until (and before now)")
        target = issue_for_window(engine, Window(window.start, window.end)) or current
        refuse_window_conflict(engine, window, target, settings.site.tz)
        issue = _compose_window(settings, engine, window, now, target.editorial if target else Editorial())
        # Nothing new is no issue, and never a reason to move or empty an open draft of another window.
        if not (allow_empty or has_news(issue)) and (target is None or target.window != window):
            return None
        return _save_issue(settings, engine, target, issue, now)

    return _retry_on_race(attempt)


def edit_issue(settings: Settings, engine: Engine, number: int, now: datetime, **changes):  # noqa: ANN003, ANN201
    """Change a draft's editorial choices (intro, subject, drop, undrop, pin, unpin) and recompose it.

    The admin web app and `digest issue …` call this. An approved issue returns to draft when its
    version changes. Raises IssueNotFound, IssueStateError (not a draft/approved issue) or
    EditorialError (e.g. an unknown item key, a subject too long).
    """
    def attempt():  # noqa: ANN202
        from .compose import edit_editorial
        from .store.issues import OPEN_STATUSES, IssueStateError, require_issue

        current = require_issue(engine, number)
        if current.status not in OPEN_STATUSES:
            raise IssueStateError(f"issue {number} is {current.status.value}; only a draft or approved issue can be edited")
        editorial = edit_editorial(current, **changes)
        return _save_issue(settings, engine, current, _compose_window(settings, engine, current.window, now, editorial), now)

    return _retry_on_race(attempt)


def _compose_window(settings: Settings, engine: Engine, window, now: datetime, editorial):  # noqa: ANN001, ANN202
    """Read what the window needs from the store and compose it (pure compose_issue does the work)."""
    from dataclasses import replace
    from datetime import timedelta

    from .compose import compose_issue
    from .related import POOL_PER_SERIES, POOL_RECENT
    from .store.items import events_starting_between, items_between, items_in_series, latest_items

    items = items_between(engine, window.start, window.end)
    horizon = window.end + timedelta(days=settings.digest.upcoming_events_days)
    events = events_starting_between(engine, window.end, horizon)
    present = {sid for item in [*items, *events] for sid in item.series}
    candidates = latest_items(engine, POOL_RECENT, before=window.end)
    for series in settings.series:
        if series.id in present:
            candidates += items_in_series(engine, series.id, POOL_PER_SERIES, before=window.end)
    issue = compose_issue(items, window, settings.series, settings, now, editorial, events, candidates)
    return replace(issue, feeds=_feed_health(settings, engine))


def _feed_health(settings: Settings, engine: Engine):  # noqa: ANN202
    """Each configured feed's last fetch outcome, for the manifest's `feeds`."""
    from .models import FeedStatus, FetchReport
    from .store.feeds import all_feed_states

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


def _save_issue(settings: Settings, engine: Engine, target, issue, now: datetime):  # noqa: ANN001, ANN202
    """Store a composed issue: refresh `target` (keeping its number and creation time) or create a draft."""
    from dataclasses import replace

    from .manifest import issue_to_manifest, issue_version
    from .store.issues import create_issue, refresh_issue

    if target is not None:
        issue = replace(issue, number=target.number, created_at=target.created_at)
    manifest = issue_to_manifest(issue, settings)
    version = issue_version(manifest)
    manifest["issue"]["version"] = version
    issue = replace(issue, version=version)
    return refresh_issue(engine, target, issue, manifest, now) if target else create_issue(engine, issue, manifest, now)


def _retry_on_race(attempt, tries: int = 5):  # noqa: ANN001, ANN202
    """Run `attempt` again when a concurrent builder changed or numbered an issue first."""
    from sqlalchemy.exc import IntegrityError

    from .store.issues import ConcurrentChange

    for n in range(tries):
        try:
            return attempt()
        except (ConcurrentChange, IntegrityError):
            if n == tries - 1:
                raise
    return None  # pragma: no cover - the loop returns or raises


# --- render (owner: render) -----------------------------------------------------------------------
def render_issue(settings: Settings, engine: Engine, number: int, subscriber_email: str | None = None):  # noqa: ANN201
    """The full edition of an issue, or one subscriber's personalised edition, as a RenderedIssue.

    Raises IssueNotFound, LookupError (no such subscriber), ValueError (their preferences select
    nothing in this issue) and RenderError (a template problem, naming file and line).
    """
    from .deliver.editions import view_url
    from .deliver.message import MessageTemplate
    from .render import (
        RenderedIssue,
        full_segment,
        personalise,
        preview_values,
        reader_values,
        render_edition,
    )
    from .store.issues import require_issue

    issue = require_issue(engine, number)
    if subscriber_email is None:
        segment = full_segment(issue, settings.site.language)
        values = preview_values(settings, segment.language, view_url(settings, number))
        name = ""
    else:
        subscriber, segment, links = _subscriber_segment(settings, engine, issue, subscriber_email)
        values = reader_values(subscriber.name, subscriber.email, segment.language, links.unsubscribe_url,
                               links.preferences_url, view_url(settings, number))
        name = subscriber.name
    edition = render_edition(issue, segment, settings)
    html, text = personalise(edition, values)
    message = MessageTemplate.from_settings(settings, edition).build_for(values["email"], name, values)
    return RenderedIssue(edition=edition, html=html, text=text, eml=message.data, recipient=values["email"])


def _subscriber_segment(settings: Settings, engine: Engine, issue, email: str):  # noqa: ANN001, ANN202
    """(subscriber, the segment their preferences select, their signed links) for `digest render --subscriber`."""
    from .config import LANGUAGES
    from .models import Segment
    from .segments import sections_for, segment_id
    from .store.subscribers import get_subscriber
    from .tokens import subscriber_links

    subscriber = get_subscriber(engine, email)
    if subscriber is None:
        raise LookupError(f"there is no subscriber {email!r}; see `digest subscribers list`")
    ids = sections_for(issue, subscriber.series, subscriber.want_events, subscriber.want_media)
    if not ids:
        raise ValueError(f"{subscriber.email} receives nothing from issue {issue.number}: their preferences select no section")
    language = subscriber.language if subscriber.language in LANGUAGES else settings.site.language
    segment = Segment(id=segment_id(ids, language), section_ids=ids, language=language)
    return subscriber, segment, subscriber_links(settings, subscriber)


# --- deliver (owner: deliver) ---------------------------------------------------------------------
def send_issue(settings: Settings, engine: Engine, number: int, progress=None, *,  # noqa: ANN001, ANN201
               late: bool = False, make_transport=None, wait: float = 0.0):  # noqa: ANN001
    """Fill the ledger for an approved issue and send until every row is done; returns a SendReport.

    Only approved (or already sending) issues are sent: LedgerError otherwise. A sent issue sends
    nothing again unless `late` (subscribers confirmed since then get it). On SQLite one sender runs
    at a time: SenderBusy if another holds the lock after `wait` seconds. `progress(done, total)`.
    EditionError (rows still queued) when a segment's message cannot be built; SendStopped (rows
    queued again) when messages fail for everyone alike, or the server refuses the sender.
    """
    from datetime import UTC

    from .deliver.editions import edition_messages, load_issue
    from .deliver.sender import deliver_issue, sender_slot
    from .store.ledger import start_sending
    from .store.locks import lock_holder

    holder = lock_holder("send")
    with sender_slot(engine, holder, wait) as keep_alive:
        start_sending(engine, number, datetime.now(UTC), late=late)
        messages = edition_messages(settings, load_issue(engine, number))
        return deliver_issue(engine, number, holder=holder, make_message=messages,
                             make_transport=make_transport or _connection_transport(settings),
                             options=_send_options(settings), keep_alive=keep_alive, progress=progress)


def work_pending(settings: Settings, engine: Engine, holder: str, progress=None, *,  # noqa: ANN001, ANN201
                 batch_size: int | None = None, make_transport=None, wait: float = 0.0):  # noqa: ANN001
    """One worker pass: send the claimable rows of every issue in `sending`; returns a SendReport each.

    Does not wait for retries that are not due yet (the next pass takes them). Safe to run in any
    number of processes on PostgreSQL; SenderBusy on SQLite when another sender holds the lock.
    """
    from dataclasses import replace

    from .deliver.editions import edition_messages, load_issue
    from .deliver.sender import deliver_issue, sender_slot
    from .store.ledger import issues_being_sent

    options = replace(_send_options(settings, batch_size), wait_for_retries=False)
    reports = []
    with sender_slot(engine, holder, wait) as keep_alive:
        for number in issues_being_sent(engine):
            messages = edition_messages(settings, load_issue(engine, number))
            reports.append(deliver_issue(engine, number, holder=holder, make_message=messages,
                                         make_transport=make_transport or _connection_transport(settings),
                                         options=options, keep_alive=keep_alive, progress=progress))
    return reports


def send_test(settings: Settings, engine: Engine, number: int, recipients, *,  # noqa: ANN001, ANN201
              subscriber_email: str | None = None, make_transport=None):  # noqa: ANN001
    """Send the full edition (or `subscriber_email`'s) to each staff address; the ledger is untouched.

    Returns one SendResult per recipient (a refusal, the sender's too, is a failed result, not an
    exception). LookupError for an unknown issue or subscriber.
    """
    from .deliver.editions import edition_messages, load_issue, staff_subscriber
    from .deliver.transports import transport_from_settings
    from .store.subscribers import get_subscriber

    like = None
    if subscriber_email is not None:
        like = get_subscriber(engine, subscriber_email)
        if like is None:
            raise LookupError(f"no subscriber {subscriber_email!r}; `digest subscribers list` shows them")
    messages = edition_messages(settings, load_issue(engine, number))
    outgoing = [messages(staff_subscriber(settings, address, like)) for address in recipients]
    if any(m is None for m in outgoing):
        raise LookupError(f"{subscriber_email}'s preferences select nothing in issue {number}: nothing to send")
    transport = (make_transport or (lambda: transport_from_settings(settings)))()
    try:
        return transport.send_messages(outgoing)
    finally:
        transport.close()


def _send_options(settings: Settings, batch_size: int | None = None):  # noqa: ANN202
    from .deliver.sender import RetryPolicy, SendOptions

    connections = settings.delivery.smtp.connections if settings.delivery.transport == "smtp" else 1
    return SendOptions(connections=connections, batch_size=batch_size or settings.delivery.batch_size,
                       policy=RetryPolicy.from_settings(settings))


def _connection_transport(settings: Settings):  # noqa: ANN202
    """A factory of one-connection transports: the send loop runs one per connection, each
    recording its message as sent before it takes the next (the rate limit is shared out)."""
    from dataclasses import replace

    from .deliver.transports import transport_from_settings

    smtp = settings.delivery.smtp
    share = replace(smtp, connections=1, rate_limit=smtp.rate_limit / smtp.connections)
    one = replace(settings, delivery=replace(settings.delivery, smtp=share))
    return lambda: transport_from_settings(one)
