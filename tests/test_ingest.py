"""End to end: fetch → parse → store, on SQLite and PostgreSQL, against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from conftest import FEEDS, make_settings
from http_feed_server import FeedServer, gzip_bomb, static, status
from sqlalchemy import update

from digest.cli import main
from digest.models import FeedStatus
from digest.pipeline.ingest import fetch_all
from digest.store.feeds import get_feed_state
from digest.store.items import count_items, get_item
from digest.store.schema import feeds as feeds_table

FAST = {"retries": 0, "deadline": 5, "read_timeout": 2, "connect_timeout": 2, "max_bytes": 2_000_000}


def rss(prefix: str, count: int, title_suffix: str = "") -> bytes:
    """A small RSS 2.0 feed with `count` items keyed https://example.org/{prefix}/{n}."""
    items = "".join(
        f"<item><title>{prefix} item {n}{title_suffix}</title><link>https://example.org/{prefix}/{n}</link>"
        f"<guid>https://example.org/{prefix}/{n}</guid><pubDate>Mon, 16 Nov 2026 10:00:00 +0000</pubDate>"
        f"<description>Summary {n}</description></item>"
        for n in range(count)
    )
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{prefix}</title>'
            f"<link>https://example.org/</link>{items}</channel></rss>").encode()


@pytest.fixture
def server():
    srv = FeedServer().start()
    yield srv
    srv.stop()


def settings_for(tmp_path, store_url, feeds, **fetch):
    return make_settings(tmp_path, store_url, feeds=feeds, fetch={**FAST, **fetch})


def feed(name: str, url: str) -> dict:
    return {"name": name, "url": url, "kind": "brief"}


def test_one_broken_feed_never_stops_the_others(tmp_path, store_url, engine, server):
    for name in ("a", "b", "c"):
        server.routes[f"/{name}"] = static(rss(name, 5))
    server.routes["/boom"] = status(500)
    server.routes["/bomb"] = gzip_bomb(20_000_000)
    feeds = [feed("A", server.url("/a")), feed("Broken", server.url("/boom")), feed("B", server.url("/b")),
             feed("Bomb", server.url("/bomb")), feed("Gone", "missing/feed.xml"), feed("C", server.url("/c"))]
    reports = fetch_all(settings_for(tmp_path, store_url, feeds, concurrency=3), engine)
    assert [r.feed for r in reports] == ["A", "Broken", "B", "Bomb", "Gone", "C"]
    by_name = {r.feed: r for r in reports}
    for name in "ABC":
        assert by_name[name].status == FeedStatus.OK
        assert (by_name[name].items, by_name[name].new, by_name[name].updated) == (5, 5, 0)
    assert by_name["Broken"].status == FeedStatus.ERROR and "HTTP 500" in by_name["Broken"].message
    assert by_name["Bomb"].status == FeedStatus.ERROR and "larger than" in by_name["Bomb"].message
    assert by_name["Gone"].status == FeedStatus.ERROR and "no such file" in by_name["Gone"].message
    assert count_items(engine) == 15
    assert get_item(engine, "https://example.org/b/4").title == "b item 4"
    assert get_feed_state(engine, "Broken", server.url("/boom")).consecutive_failures == 1


REFUSED = {"billion-laughs", "external-entity", "html-page", "empty"}
# Two versions of one feed (tests/test_late_items.py), same guids: fetched together, whichever is
# stored second finds nothing new.
VERSIONS = (("late-items-before", "late-items-after"), ("settling-first", "settling-edited"))


def test_every_fixture_over_http_hostile_ones_fail_alone(tmp_path, store_url, engine, server):
    # hostile-slow-author included: its 60 KB author is cut before feedparser reads it
    fixtures = [p for p in sorted(FEEDS.iterdir()) if p.suffix in (".xml", ".rdf", ".html")]
    feeds = []
    for i, path in enumerate(fixtures):
        server.routes[f"/{path.name}"] = static(path.read_bytes(), gzip_it=i % 2 == 0)
        kind = "media" if "google" in path.stem else "event" if "event" in path.stem else "brief"
        feeds.append({"name": path.stem, "url": server.url(f"/{path.name}"), "kind": kind})
    reports = {r.feed: r for r in fetch_all(settings_for(tmp_path, store_url, feeds), engine)}
    assert {name for name, r in reports.items() if r.status == FeedStatus.ERROR} == REFUSED
    assert all(reports[name].message for name in REFUSED)
    assert (reports["malformed"].status, reports["malformed"].items) == (FeedStatus.WARNING, 2)
    assert reports["empty-channel"].status == FeedStatus.OK and reports["empty-channel"].items == 0
    # A guid repeated inside the feed (WordPress sticky posts) is a note in the details, not a warning.
    wordpress = reports["wordpress-rss"]
    assert wordpress.status == FeedStatus.OK and "repeats the key" in wordpress.message
    versions = {name for pair in VERSIONS for name in pair}
    good = [r for name, r in reports.items() if name not in REFUSED and name != "empty-channel"]
    assert all(r.items > 0 and (r.new > 0 or r.feed in versions) for r in good)
    assert all(reports[first].new + reports[second].new > 0 for first, second in VERSIONS)
    assert count_items(engine) == sum(r.new for r in reports.values())


@pytest.mark.slow  # a real worker process burns its CPU allowance
def test_a_feed_that_stalls_the_parser_is_abandoned_and_the_rest_stored(tmp_path, store_url, engine, server):
    # 1,500 authors of 1 KB each: trimmed, each still costs feedparser ~3 ms (seconds in all)
    slow = rss("s", 0).replace(b"</channel>", "".join(
        f"<item><title>{n}</title><link>https://example.org/s/{n}</link><author>{'a' * 1024}</author></item>"
        for n in range(1500)).encode() + b"</channel>")
    server.routes["/slow"] = static(slow)
    server.routes["/wp"] = static((FEEDS / "wordpress-rss.xml").read_bytes())
    feeds = [feed("Slow", server.url("/slow")), feed("WordPress", server.url("/wp"))]
    slow, wordpress = fetch_all(settings_for(tmp_path, store_url, feeds, parse_cpu_seconds=1), engine)
    assert slow.status == FeedStatus.ERROR and "CPU" in slow.message
    assert wordpress.status != FeedStatus.ERROR and wordpress.new == count_items(engine) > 0


def test_the_slow_author_fixture_is_stored_with_the_default_settings(tmp_path, store_url, engine):
    settings = make_settings(tmp_path, store_url, feeds=[feed("Slow", str(FEEDS / "hostile-slow-author.xml"))])
    assert settings.fetch.parse_cpu_seconds == 20
    (report,) = fetch_all(settings, engine)
    assert (report.status, report.new, report.message) == (FeedStatus.OK, 1, "")
    assert len(get_item(engine, "slow-1").authors[0]) == 200


def test_a_long_non_ascii_guid_never_costs_the_good_items(tmp_path, store_url, engine):
    # 1,990 varied CJK characters (5,970 bytes; PostgreSQL compresses a repeated one below its index limit)
    guid = "".join(chr(0x4E00 + (n * 7919) % 20000) for n in range(1990))
    items = (f"<item><title>CJK</title><link>https://example.org/cjk</link><guid>{guid}</guid></item>"
             "<item><title>Good</title><link>https://example.org/good</link><guid>https://example.org/good</guid></item>")
    (tmp_path / "cjk.xml").write_bytes(rss("c", 0).replace(b"</channel>", items.encode() + b"</channel>"))
    (report,) = fetch_all(settings_for(tmp_path, store_url, [feed("CJK", "cjk.xml")]), engine)
    assert (report.status, report.new) == (FeedStatus.OK, 2), report.message
    assert get_item(engine, "https://example.org/good").title == "Good"


def test_two_feeds_with_one_guid_the_earlier_feed_owns_it(tmp_path, store_url, engine):
    shared = "<item><title>Shared</title><link>https://example.org/shared</link><guid>shared-1</guid></item>"
    for name in ("first", "second"):
        (tmp_path / f"{name}.xml").write_bytes(rss(name, 1).replace(b"</channel>", shared.encode() + b"</channel>"))
    feeds = [feed("First", "first.xml"), {"name": "Second", "url": "second.xml", "kind": "news"}]
    settings = settings_for(tmp_path, store_url, feeds, concurrency=1)  # one at a time: Second is stored last
    first, second = fetch_all(settings, engine)
    assert (first.new, second.new) == (2, 1)
    stored = get_item(engine, "shared-1")
    assert (stored.feed, stored.kind.value) == ("First", "brief")


def add_refusing_trigger(engine, table: str, column: str, value: str) -> None:
    """Make the real store refuse inserts of one value, as a database constraint would."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN NEW.{column} = '{value}' "
                                 "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        else:
            conn.exec_driver_sql(f"CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS "
                                 "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$")
            conn.exec_driver_sql(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} FOR EACH ROW "
                                 f"WHEN (NEW.{column} = '{value}') EXECUTE FUNCTION refuse_{table}()")


def test_items_the_store_refuses_are_an_error_for_that_feed_only(tmp_path, store_url, engine):
    add_refusing_trigger(engine, "items", "feed", "Refused")
    for name in ("refused", "fine"):
        (tmp_path / f"{name}.xml").write_bytes(rss(name, 2))
    refused, fine = fetch_all(settings_for(tmp_path, store_url, [feed("Refused", "refused.xml"), feed("Fine", "fine.xml")]),
                              engine)
    assert refused.status == FeedStatus.ERROR and refused.message.startswith("could not store the items: ")
    assert "refused by the test" in refused.message
    assert (fine.status, fine.new) == (FeedStatus.OK, 2) and count_items(engine) == 2
    assert get_feed_state(engine, "Refused", "refused.xml").last_message == refused.message


def test_a_feed_whose_outcome_cannot_be_stored_is_reported_and_the_run_goes_on(tmp_path, store_url, engine):
    """The store refuses both the items and the error record (as PostgreSQL refused a 201-character name)."""
    add_refusing_trigger(engine, "items", "feed", "Refused")
    add_refusing_trigger(engine, "feeds", "name", "Refused")
    for name in ("refused", "fine"):
        (tmp_path / f"{name}.xml").write_bytes(rss(name, 2))
    feeds = [feed("Refused", "refused.xml"), feed("Fine", "fine.xml"), feed("Missing", "missing.xml")]
    refused, fine, missing = fetch_all(settings_for(tmp_path, store_url, feeds, concurrency=1), engine)
    assert refused.status == FeedStatus.ERROR
    assert refused.message.startswith("could not store this feed's outcome: ") and "refused by the test" in refused.message
    assert (fine.status, fine.new) == (FeedStatus.OK, 2)
    assert missing.status == FeedStatus.ERROR and "no such file" in missing.message


@pytest.mark.postgres
def test_a_feed_name_postgresql_cannot_store_costs_only_that_feed(tmp_path, postgres_url):
    """Config refuses names over 200 characters; should one get through, the run still ends with a report."""
    from dataclasses import replace as replaced

    from digest.models import Feed, ItemKind
    from digest.store import open_store

    engine = open_store(postgres_url)
    for name in ("long", "fine"):
        (tmp_path / f"{name}.xml").write_bytes(rss(name, 2))
    settings = settings_for(tmp_path, postgres_url, [feed("Fine", "fine.xml")])
    settings = replaced(settings, feeds=[Feed("n" * 201, "long.xml", ItemKind.BRIEF), *settings.feeds])
    try:
        long_name, fine = fetch_all(settings, engine)
        assert long_name.status == FeedStatus.ERROR and "character varying(200)" in long_name.message
        assert (fine.status, fine.new) == (FeedStatus.OK, 2)
    finally:
        engine.dispose()


def test_unchanged_feeds_get_304_and_validators_survive_every_run(tmp_path, store_url, engine, server):
    server.routes["/feed"] = static(rss("p", 3), etag='"v1"')
    settings = settings_for(tmp_path, store_url, [feed("P", server.url("/feed"))])

    first = fetch_all(settings, engine)[0]
    assert (first.status, first.new) == (FeedStatus.OK, 3)
    second = fetch_all(settings, engine)[0]
    assert second.status == FeedStatus.NOT_MODIFIED and second.new == 0
    third = fetch_all(settings, engine)[0]
    assert third.status == FeedStatus.NOT_MODIFIED
    assert server.statuses[304] == 2
    sent = server.headers_of("/feed")
    assert "If-None-Match" not in sent[0]
    assert sent[1]["If-None-Match"] == sent[2]["If-None-Match"] == '"v1"'
    state = get_feed_state(engine, "P", server.url("/feed"))
    assert state.etag == '"v1"' and state.last_modified and state.last_status == "not_modified"

    server.routes["/feed"] = static(rss("p", 4, " (revised)"), etag='"v2"')
    fourth = fetch_all(settings, engine)[0]
    assert (fourth.status, fourth.items, fourth.new, fourth.updated) == (FeedStatus.OK, 4, 1, 3)
    assert get_feed_state(engine, "P", server.url("/feed")).etag == '"v2"'
    assert count_items(engine) == 4

    # A server that stops sending validators gets no stale ones back.
    server.routes["/feed"] = status(200, {}, rss("p", 4, " (again)"))
    assert fetch_all(settings, engine)[0].updated == 4
    fetch_all(settings, engine)
    assert "If-None-Match" not in server.headers_of("/feed")[-1]


def test_retry_after_skips_the_feed_until_then_without_asking_again(tmp_path, store_url, engine, server):
    server.routes["/feed"] = static(rss("r", 2), etag='"r1"')
    settings = settings_for(tmp_path, store_url, [feed("R", server.url("/feed"))])
    fetch_all(settings, engine)
    server.routes["/feed"] = status(429, {"Retry-After": "3600"})

    limited = fetch_all(settings, engine)[0]
    assert limited.status == FeedStatus.ERROR and "Retry-After" in limited.message
    skipped = fetch_all(settings, engine)[0]
    assert skipped.status == FeedStatus.NOT_MODIFIED and skipped.message.startswith("skipped")
    assert server.hits("/feed") == 2  # the skipped run never asked
    state = get_feed_state(engine, "R", server.url("/feed"))
    assert state.etag == '"r1"' and state.retry_after > datetime.now(UTC) + timedelta(minutes=50)

    with engine.begin() as conn:  # an hour later
        conn.execute(update(feeds_table).values(retry_after=datetime.now(UTC) - timedelta(seconds=1)))
    server.routes["/feed"] = static(rss("r", 2), etag='"r1"')
    later = fetch_all(settings, engine)[0]
    assert later.status == FeedStatus.NOT_MODIFIED and not later.message.startswith("skipped")
    assert server.headers_of("/feed")[-1]["If-None-Match"] == '"r1"'
    assert get_feed_state(engine, "R", server.url("/feed")).retry_after is None


def test_local_feed_paths_are_relative_to_the_config_file(tmp_path, store_url, engine):
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "local.xml").write_bytes(rss("l", 2))
    settings = settings_for(tmp_path, store_url, [feed("Local", "feeds/local.xml")])
    progress = []
    report = fetch_all(settings, engine, progress=progress.append)[0]
    assert (report.status, report.new) == (FeedStatus.OK, 2)
    assert progress == [report]
    assert fetch_all(settings, engine)[0].status == FeedStatus.NOT_MODIFIED


def test_an_unparsable_document_is_an_error_and_is_fetched_again_next_time(tmp_path, store_url, engine, server):
    server.routes["/feed"] = static(b"\x00\x01 definitely not a feed", content_type="application/octet-stream",
                                    etag='"junk"')
    settings = settings_for(tmp_path, store_url, [feed("Junk", server.url("/feed"))])
    report = fetch_all(settings, engine)[0]
    assert report.status == FeedStatus.ERROR and report.message and report.items == 0
    assert get_feed_state(engine, "Junk", server.url("/feed")).etag is None
    assert fetch_all(settings, engine)[0].status == FeedStatus.ERROR
    assert server.statuses[304] == 0


# --- the command line ------------------------------------------------------------------------------

def write_config(tmp_path, feeds: list[tuple[str, str]]) -> str:
    lines = [f'[store]\nurl = "sqlite:///{tmp_path / "cli.db"}"\n', "[fetch]\nretries = 0\ndeadline = 5\n"]
    for name, url in feeds:
        lines.append(f'[[feeds]]\nname = "{name}"\nurl = "{url}"\nkind = "brief"\n')
    path = tmp_path / "digest.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def test_cli_json_lines_and_exit_1_when_a_feed_failed(tmp_path, server):
    server.routes["/ok"] = static(rss("ok", 2))
    config = write_config(tmp_path, [("Good", server.url("/ok")), ("Bad", server.url("/nope"))])
    result = CliRunner().invoke(main, ["--config", config, "fetch", "--json"])
    assert result.exit_code == 1, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["name"] for line in lines] == ["Good", "Bad"]
    assert set(lines[0]) == {"name", "url", "status", "items", "new", "updated", "message"}
    assert (lines[0]["status"], lines[0]["items"], lines[0]["new"]) == ("ok", 2, 2)
    assert lines[1]["status"] == "error" and "404" in lines[1]["message"]


def test_cli_table_and_exit_0_when_nothing_failed(tmp_path, server):
    server.routes["/ok"] = static(rss("ok", 2))
    config = write_config(tmp_path, [("Good [bold]feed[/]", server.url("/ok"))])
    runner = CliRunner()
    assert runner.invoke(main, ["--config", config, "fetch"]).exit_code == 0
    result = runner.invoke(main, ["--config", config, "fetch"])
    assert result.exit_code == 0, result.output
    assert "Good [bold]feed[/]" in result.stdout and "not_modified" in result.stdout


def test_cli_configuration_errors_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[fetch]\ndeadline = 'soon'\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(bad), "fetch"])
    assert result.exit_code == 2 and "fetch.deadline" in result.output
    empty = write_config(tmp_path, [])
    result = CliRunner().invoke(main, ["--config", empty, "fetch"])
    assert result.exit_code == 2 and "no feeds configured" in result.output
