"""Use case: the list of feeds, from one source of truth. List, add (after a test fetch), pause, resume,
rename, remove; OPML import and export; the store-managed settings as TOML.

The rule: when digest.toml lists [[feeds]], they are provisioned — read-only here, and every change
is refused with FeedsProvisioned. When it lists none, the feeds live in the store (table
feed_sources) and these use cases change them; digest.pipeline.ingest reads them at each fetch, so
every running process (serve, run, workers) follows an edit without a restart. Removing a feed stops
its fetches; its items and past issues stay. Names and URLs are unique: a duplicate is refused and
nothing is saved (an OPML import lists it by line and saves the others).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine

from ..config import Settings
from ..feed_discovery import suggested_feed
from ..feed_fields import InvalidFeed, feed_name, make_feed
from ..models import Account, Feed, FeedStatus
from ..opml import OpmlError, read_opml, write_opml
from ..store.feed_sources import (
    DuplicateFeed,
    NoSuchFeed,
    delete_feed,
    insert_feeds,
    set_paused,
    stored_feeds,
)
from ..store.feed_sources import rename_feed as rename_stored_feed
from ..store.feeds import FeedState, all_feed_states
from ..toml_text import toml_string
from .audit import record
from .ingest import Trial, stored_feed_as_feed, trial_fetch
from .managed import uses_current_settings
from .series_settings import series_as_toml
from .site_settings import settings_as_toml

SOURCE_TOML, SOURCE_STORE = "digest.toml", "store"
PROVISIONED = ("feeds are managed in digest.toml ([[feeds]] tables): change them there, or remove every "
               "[[feeds]] table from it to manage feeds with `digest feeds …` and the admin")

__all__ = ["DuplicateFeed", "FeedsProvisioned", "InvalidFeed", "NoSuchFeed", "OpmlError", "Trial"]


class FeedsProvisioned(Exception):
    """digest.toml lists the feeds, so they cannot be changed here."""

    def __init__(self) -> None:
        super().__init__(PROVISIONED)


@dataclass(frozen=True)
class FeedEntry:
    feed: Feed
    paused: bool
    source: str  # SOURCE_TOML or SOURCE_STORE


@dataclass(frozen=True)
class Health:
    level: str  # "fine", "attention", "failing" or "paused"
    words: str  # plain words: "Up to date", "Couldn't reach the server — next try at 14:00"
    detail: str = ""  # the last fetch's own message, for those who want it


@dataclass(frozen=True)
class FeedRow:
    entry: FeedEntry
    state: FeedState
    health: Health


@dataclass(frozen=True)
class OpmlImport:
    added: list[Feed]
    problems: list[str]  # "line 12: why", in file order


def provisioned(settings: Settings) -> bool:
    """True when digest.toml lists the feeds (then nothing here may change them)."""
    return bool(settings.feeds)


def list_feeds(settings: Settings, engine: Engine) -> list[FeedEntry]:
    """Every feed, paused ones too, with where it is managed."""
    if provisioned(settings):
        return [FeedEntry(feed, False, SOURCE_TOML) for feed in settings.feeds]
    return [FeedEntry(stored_feed_as_feed(f), f.paused, SOURCE_STORE) for f in stored_feeds(engine)]


@uses_current_settings
def feeds_overview(settings: Settings, engine: Engine, now: datetime) -> list[FeedRow]:
    """The admin's feeds page: each feed, its last fetch state and its health in plain words."""
    states = {s.name: s for s in all_feed_states(engine)}
    rows = []
    for entry in list_feeds(settings, engine):
        state = states.get(entry.feed.name) or FeedState(name=entry.feed.name, url=entry.feed.url)
        rows.append(FeedRow(entry, state, health(settings, state, entry.paused, now)))
    return rows


def health(settings: Settings, state: FeedState, paused: bool, now: datetime) -> Health:
    """A feed's state in plain words: fine, needs attention, or failing (or paused)."""
    tz = settings.site.tz
    next_try = _next_try(settings, state, now)
    at = f"next try at {next_try.astimezone(tz):%H:%M}" if next_try and next_try - now < timedelta(hours=20) else \
        f"next try on {next_try.astimezone(tz):%d %b at %H:%M}" if next_try else "next try at the next fetch"
    detail = state.last_message
    if paused:
        return Health("paused", "Paused — not fetched until resumed", detail)
    if not state.last_status:
        return Health("attention", "Not fetched yet — the next fetch reads it")
    status = FeedStatus(state.last_status)
    if state.retry_after and state.retry_after > now:
        return Health("attention", f"The server asked us to wait — {at}", detail)
    if status in (FeedStatus.OK, FeedStatus.NOT_MODIFIED):
        return Health("fine", "Up to date", detail)
    if status == FeedStatus.WARNING:
        return Health("attention", "Fetched, with problems to look at (see details)", detail)
    failures = f" ({state.consecutive_failures} failed fetches in a row)" if state.consecutive_failures > 1 else ""
    suggestion = suggested_feed(state.last_message)
    if suggestion:  # the page announces its feed: that is the fix, not the next try
        return Health("failing", f"{_failure_words(state.last_message)} — did you mean {suggestion}?", detail)
    return Health("failing", f"{_failure_words(state.last_message)} — {at}{failures}", detail)


def _next_try(settings: Settings, state: FeedState, now: datetime) -> datetime | None:
    if state.retry_after and state.retry_after > now:
        return state.retry_after
    if state.last_fetch_at is None:
        return None
    step = timedelta(hours=settings.schedule.fetch_every_hours)
    nxt = state.last_fetch_at + step
    return nxt if nxt > now else None


_FAILURES = (  # (words in the fetch's message, what staff read), first match wins
    (("looks like an HTML page",), "This address is a web page, not a feed"),
    (("HTTP 404", "HTTP 410"), "The server says this address does not exist"),
    (("HTTP 401", "HTTP 403"), "The server refuses to give us the feed"),
    (("HTTP 5",), "The server had an error"),
    (("timed out", "timeout", "deadline", "connect", "resolve", "Name or service", "TLS", "certificate",
      "network"), "Couldn't reach the server"),
    (("refused:", "not a feed", "parse", "no element found", "not well-formed"), "The feed could not be read"),
)


def _failure_words(message: str) -> str:
    lowered = message.lower()
    for needles, words in _FAILURES:
        if any(needle.lower() in lowered for needle in needles):
            return words
    return "The last fetch failed"


def _refuse_if_provisioned(settings: Settings) -> None:
    if provisioned(settings):
        raise FeedsProvisioned


def check_new_feed(settings: Settings, engine: Engine, name: str, url: str, kind: str | None,
                   language: str | None) -> Feed:
    """The Feed these fields make, or InvalidFeed / DuplicateFeed / FeedsProvisioned; saves nothing."""
    _refuse_if_provisioned(settings)
    feed = make_feed(name, url, kind, language)
    for other in stored_feeds(engine):
        if other.name == feed.name:
            raise DuplicateFeed(f"there is already a feed named {feed.name!r}; choose another name")
        if other.url == feed.url:
            raise DuplicateFeed(f"{feed.url} is already fetched as the feed {other.name!r}")
    return feed


@uses_current_settings
def try_feed(settings: Settings, engine: Engine, name: str, url: str, kind: str | None,
              language: str | None) -> Trial:
    """Check the fields, then fetch and parse the feed once without storing anything: what adding it would store."""
    return trial_fetch(settings, check_new_feed(settings, engine, name, url, kind, language))


def add_feed(settings: Settings, engine: Engine, name: str, url: str, kind: str | None, language: str | None,
             now: datetime, actor: Account | None = None) -> Feed:
    """Store a new feed (fetched from the next fetch on); the fields are checked, duplicates refused.

    `actor` (here and below): who asks, for the audit trail; None is the command line.
    """
    feed = check_new_feed(settings, engine, name, url, kind, language)
    insert_feeds(engine, [(feed.name, feed.url, feed.kind.value, feed.language)], now)
    record(engine, actor, "feed.add", target=feed.name, detail={"url": feed.url, "kind": feed.kind.value}, now=now)
    return feed


def pause_feed(settings: Settings, engine: Engine, name: str, actor: Account | None = None) -> bool:
    """Stop fetching a feed until resumed; False if it was paused already."""
    _refuse_if_provisioned(settings)
    changed = set_paused(engine, name, True)
    if changed:
        record(engine, actor, "feed.pause", target=name)
    return changed


def resume_feed(settings: Settings, engine: Engine, name: str, actor: Account | None = None) -> bool:
    """Fetch a paused feed again; False if it was not paused."""
    _refuse_if_provisioned(settings)
    changed = set_paused(engine, name, False)
    if changed:
        record(engine, actor, "feed.resume", target=name)
    return changed


def rename_feed(settings: Settings, engine: Engine, name: str, new_name: str, actor: Account | None = None) -> str:
    """Give a feed a new name (its fetch state and stored items follow); returns the cleaned new name."""
    _refuse_if_provisioned(settings)
    cleaned = feed_name(new_name)
    if cleaned != name:
        rename_stored_feed(engine, name, cleaned)
        record(engine, actor, "feed.rename", target=cleaned, detail={"from": name})
    return cleaned


def remove_feed(settings: Settings, engine: Engine, name: str, actor: Account | None = None) -> None:
    """Stop fetching a feed for good; its items and the past issues that hold them stay."""
    _refuse_if_provisioned(settings)
    delete_feed(engine, name)
    record(engine, actor, "feed.remove", target=name)


def import_opml(settings: Settings, engine: Engine, data: bytes, now: datetime,
                actor: Account | None = None) -> OpmlImport:
    """Add the feeds of an OPML file; bad or duplicate outlines are listed by line, the others saved together.

    OpmlError (nothing imported) when the file cannot be read at all.
    """
    _refuse_if_provisioned(settings)
    read = read_opml(data)
    existing = stored_feeds(engine)
    names = {f.name: f"the feed {f.name!r}" for f in existing}
    urls = {f.url: f"the feed {f.name!r}" for f in existing}
    problems = list(read.problems)
    added, paused = [], []
    for found in read.feeds:
        feed = found.feed
        if feed.name in names:
            problems.append(f"line {found.line}: the name {feed.name!r} is taken by {names[feed.name]}; rename one")
        elif feed.url in urls:
            problems.append(f"line {found.line}: {feed.url} is already fetched as {urls[feed.url]}")
        else:
            names[feed.name] = urls[feed.url] = f"line {found.line}"
            added.append(feed)
            if found.paused:
                paused.append(feed.name)
    problems.sort(key=_line_number)
    if added:
        insert_feeds(engine, [(f.name, f.url, f.kind.value, f.language) for f in added], now, paused=set(paused))
        record(engine, actor, "feed.import", detail={"added": len(added), "skipped": len(problems)}, now=now)
    return OpmlImport(added, problems)


def _line_number(problem: str) -> int:
    head = problem.split(":", 1)[0].removeprefix("line ")
    return int(head) if head.isdigit() else 0


def export_opml(settings: Settings, engine: Engine, now: datetime) -> str:
    """Every feed (digest.toml's or the store's, paused ones marked) as an OPML 2.0 document."""
    return write_opml([(e.feed, e.paused) for e in list_feeds(settings, engine)], f"{settings.site.name}: feeds", now)


@uses_current_settings
def export_config(settings: Settings, engine: Engine) -> str:
    """The store-managed settings as TOML, in the form digest.toml accepts: feeds, series, schedule, branding.

    Paused feeds are written commented out: in digest.toml every listed feed is fetched. A section
    digest.toml provisions is named in a comment instead.
    """
    lines = ["# Settings managed in the store, as digest.toml takes them (`digest config export`).", ""]
    if provisioned(settings):
        lines.append("# Feeds are managed in digest.toml ([[feeds]]): none are managed in the store.")
    entries = [] if provisioned(settings) else list_feeds(settings, engine)
    if not entries and not provisioned(settings):
        lines.append("# No feeds in the store.")
    for entry in entries:
        feed, prefix = entry.feed, "# " if entry.paused else ""
        if entry.paused:
            lines.append("# paused in the store:")
        lines.append(f"{prefix}[[feeds]]")
        lines.append(f"{prefix}name = {toml_string(feed.name)}")
        lines.append(f"{prefix}url = {toml_string(feed.url)}")
        lines.append(f"{prefix}kind = {toml_string(feed.kind.value)}")
        if feed.language:
            lines.append(f"{prefix}language = {toml_string(feed.language)}")
        lines.append("")
    parts = ["\n".join(lines).rstrip("\n") + "\n", series_as_toml(settings, engine), settings_as_toml(settings, engine)]
    return "\n".join(part for part in parts if part.strip())
