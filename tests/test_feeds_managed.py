"""Feeds from one source of truth, on SQLite and PostgreSQL: digest.toml's [[feeds]] (provisioned, read-only)
or the store's (managed with `digest feeds …`, the admin, OPML). Real feeds over loopback, the real CLI."""

from __future__ import annotations

import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from admin_fixtures import PASSWORD_HASH, csrf_of, log_in
from click.testing import CliRunner
from conftest import make_settings
from http_feed_server import FeedServer, static, status
from sqlalchemy import select
from starlette.testclient import TestClient

from digest.cli import main
from digest.config import load_settings, settings_from_dict
from digest.models import Feed, FeedStatus, ItemKind
from digest.pipeline import feeds as use_cases
from digest.pipeline.ingest import feed_health, fetch_all, scheduled_fetch
from digest.pipeline.issues import build_issue, get_issue
from digest.pipeline.status import collect_status
from digest.store import open_store
from digest.store.feeds import all_feed_states
from digest.store.items import count_items
from digest.store.schema import feed_sources, items
from digest.web.app import create_app

FEEDS = Path(__file__).resolve().parent / "data" / "feeds"
OPML = Path(__file__).resolve().parent / "data" / "opml"
FAST = {"retries": 0, "deadline": 5, "read_timeout": 2, "connect_timeout": 2}
NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


@pytest.fixture
def server():
    srv = FeedServer().start()
    srv.routes["/publications"] = static((FEEDS / "wordpress-rss.xml").read_bytes())
    srv.routes["/events"] = static((FEEDS / "events-mod-event.xml").read_bytes())
    srv.routes["/gone"] = status(404)
    yield srv
    srv.stop()


def write_config(tmp_path: Path, store_url: str, feeds: list[dict] = ()) -> str:
    lines = [f'[store]\nurl = "{store_url}"\n', '[fetch]\nretries = 0\ndeadline = 5\n']
    for f in feeds:
        lines.append("[[feeds]]\n" + "".join(f'{k} = "{v}"\n' for k, v in f.items()))
    path = tmp_path / "digest.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return str(path)


def cli(config: str, *args: str):
    return CliRunner().invoke(main, ["--config", config, *args])


def names(engine) -> list[str]:
    with engine.connect() as conn:
        return [r.name for r in conn.execute(select(feed_sources.c.name).order_by(feed_sources.c.position))]


# --- the CLI on a store-managed site --------------------------------------------------------------

def test_the_cli_manages_store_feeds(tmp_path, store_url):
    config = write_config(tmp_path, store_url)
    assert cli(config, "feeds", "list").exit_code == 0
    added = cli(config, "feeds", "add", "https://www.example.org/feed/", "--name", "Publications", "--kind", "article",
                "--language", "de")
    assert added.exit_code == 0, added.output
    assert "added Publications (article)" in added.stdout
    assert cli(config, "feeds", "add", "https://events.example.org/rss", "--name", "Events", "--kind", "event").exit_code == 0
    assert cli(config, "feeds", "pause", "Events").stdout.startswith("paused Events")
    assert "unchanged" in cli(config, "feeds", "pause", "Events").stdout
    renamed = cli(config, "feeds", "rename", "Publications", "Our publications")
    assert renamed.exit_code == 0, renamed.output
    listed = json.loads(cli(config, "feeds", "list", "--json").stdout)
    assert listed == [
        {"name": "Our publications", "url": "https://www.example.org/feed/", "kind": "article", "language": "de",
         "paused": False, "source": "store"},
        {"name": "Events", "url": "https://events.example.org/rss", "kind": "event", "language": None,
         "paused": True, "source": "store"},
    ]
    assert cli(config, "feeds", "resume", "Events").stdout.startswith("resumed Events")
    removed = cli(config, "feeds", "remove", "Events")
    assert removed.exit_code == 0 and "items and past issues stay" in removed.stdout
    engine = open_store(load_settings(config).store.url)
    assert names(engine) == ["Our publications"]
    engine.dispose()


@pytest.mark.parametrize("args, words", [
    (["add", "https://other.example.org/feed/", "--name", "Publications"], "already a feed named 'Publications'"),
    (["add", "https://www.example.org/feed/", "--name", "Copy"], "already fetched as the feed 'Publications'"),
    (["add", "ftp://www.example.org/feed/", "--name", "FTP"], "not an http(s) URL"),
    (["add", "https://x.example.org/", "--name", "  "], "needs a name"),
    (["add", "https://x.example.org/", "--name", "X", "--language", "english"], "two-letter code"),
    (["pause", "Nobody"], "no feed named 'Nobody'"),
    (["rename", "Publications", "Publications\x1b[31m"], "control characters"),
    (["remove", "Nobody"], "no feed named 'Nobody'"),
])
def test_bad_or_duplicate_feeds_are_refused_and_nothing_is_saved(tmp_path, store_url, args, words):
    config = write_config(tmp_path, store_url)
    assert cli(config, "feeds", "add", "https://www.example.org/feed/", "--name", "Publications").exit_code == 0
    result = cli(config, "feeds", *args)
    assert result.exit_code == 2, result.output
    assert words in result.output
    assert json.loads(cli(config, "feeds", "list", "--json").stdout) == [
        {"name": "Publications", "url": "https://www.example.org/feed/", "kind": "brief", "language": None,
         "paused": False, "source": "store"}]


def test_add_check_fetches_first_and_saves_only_a_working_feed(tmp_path, store_url, server):
    config = write_config(tmp_path, store_url)
    failed = cli(config, "feeds", "add", server.url("/gone"), "--name", "Gone", "--check")
    assert failed.exit_code == 1 and "HTTP 404" in failed.output and "nothing was saved" in failed.output
    worked = cli(config, "feeds", "add", server.url("/publications"), "--name", "Publications", "--check")
    assert worked.exit_code == 0, worked.output
    assert re.search(r"test fetch: [1-9][0-9]* items", worked.output)
    assert [e["name"] for e in json.loads(cli(config, "feeds", "list", "--json").stdout)] == ["Publications"]


# --- provisioned: digest.toml lists the feeds ------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["add", "https://x.example.org/feed/", "--name", "X"], ["pause", "Publications"], ["resume", "Publications"],
    ["rename", "Publications", "Y"], ["remove", "Publications"], ["import", str(OPML / "good.opml")],
])
def test_a_provisioned_site_refuses_every_change(tmp_path, store_url, args):
    config = write_config(tmp_path, store_url, [{"name": "Publications", "url": "https://www.example.org/feed/",
                                                  "kind": "article"}])
    result = cli(config, "feeds", *args)
    assert result.exit_code == 2, result.output
    assert "managed in digest.toml" in result.output
    engine = open_store(load_settings(config).store.url)
    assert names(engine) == []
    engine.dispose()


def test_a_provisioned_site_lists_and_exports_its_toml_feeds(tmp_path, store_url):
    config = write_config(tmp_path, store_url, [{"name": "Publications", "url": "https://www.example.org/feed/",
                                                  "kind": "article"}])
    listed = json.loads(cli(config, "feeds", "list", "--json").stdout)
    assert listed == [{"name": "Publications", "url": "https://www.example.org/feed/", "kind": "article",
                       "language": None, "paused": False, "source": "digest.toml"}]
    assert "managed in digest.toml" in cli(config, "feeds", "list").stdout
    assert 'xmlUrl="https://www.example.org/feed/"' in cli(config, "feeds", "export").stdout
    exported = cli(config, "config", "export").stdout
    assert "# Feeds are managed in digest.toml" in exported and "\n[[feeds]]" not in exported
    assert "[schedule]" in exported and "[branding]" in exported  # not in this digest.toml: the store's defaults


def test_toml_feeds_win_over_stored_ones(tmp_path, store_url, server):
    """A site that moves to [[feeds]] fetches exactly those, whatever the store still holds."""
    settings = make_settings(tmp_path, store_url, fetch=FAST)
    engine = open_store(settings.store.url)
    use_cases.add_feed(settings, engine, "Stored", server.url("/events"), "event", None, NOW)
    provisioned = make_settings(tmp_path, store_url, fetch=FAST,
                                feeds=[{"name": "Toml", "url": server.url("/publications"), "kind": "article"}])
    assert [r.feed for r in fetch_all(provisioned, engine)] == ["Toml"]
    assert server.hits("/events") == 0
    assert [r.feed for r in feed_health(provisioned, engine)] == ["Toml"]
    engine.dispose()


# --- fetching follows the store, without a restart --------------------------------------------------

def test_a_running_process_fetches_the_store_feeds_as_they_are_now(tmp_path, store_url, server):
    settings = make_settings(tmp_path, store_url, fetch=FAST)  # loaded once, as `digest run` does
    engine = open_store(settings.store.url)
    assert fetch_all(settings, engine) == []
    use_cases.add_feed(settings, engine, "Publications", server.url("/publications"), "article", None, NOW)
    (report,) = fetch_all(settings, engine)
    assert (report.feed, report.status) == ("Publications", FeedStatus.OK)
    assert report.new == report.items == count_items(engine) > 0
    use_cases.add_feed(settings, engine, "Events", server.url("/events"), "event", None, NOW)  # e.g. from the admin
    use_cases.pause_feed(settings, engine, "Publications")
    hits = server.hits("/publications")
    assert [r.feed for r in scheduled_fetch(settings, engine)] == ["Events"]
    assert server.hits("/publications") == hits  # paused: not asked
    assert [f.name for f in collect_status(settings, engine, NOW).feeds] == ["Events"]
    health = {r.entry.feed.name: r.health for r in use_cases.feeds_overview(settings, engine, datetime.now(UTC))}
    assert health["Publications"].level == "paused" and health["Events"].words == "Up to date"
    engine.dispose()


def test_the_fetch_command_says_where_to_add_feeds_when_there_are_none(tmp_path, store_url):
    config = write_config(tmp_path, store_url)
    result = cli(config, "fetch")
    assert result.exit_code == 2
    assert "no feeds configured" in result.output and "digest feeds add" in result.output


def test_removing_a_feed_keeps_its_items_and_past_issues(tmp_path, store_url, server):
    settings = make_settings(tmp_path, store_url, fetch=FAST)
    engine = open_store(settings.store.url)
    use_cases.add_feed(settings, engine, "Publications", server.url("/publications"), "article", None, NOW)
    fetch_all(settings, engine)
    issue = build_issue(settings, engine, now=NOW, since=NOW - timedelta(days=7), until=NOW)
    stored = count_items(engine)
    assert issue is not None and stored > 0
    use_cases.remove_feed(settings, engine, "Publications")
    assert count_items(engine) == stored
    assert all_feed_states(engine) == []  # its fetch state went with it
    kept = get_issue(engine, issue.number)
    assert sum(len(s.entries) for s in kept.sections) == sum(len(s.entries) for s in issue.sections) > 0
    assert fetch_all(settings, engine) == []
    engine.dispose()


def test_renaming_moves_the_fetch_state_and_the_items(tmp_path, store_url, server):
    settings = make_settings(tmp_path, store_url, fetch=FAST)
    engine = open_store(settings.store.url)
    use_cases.add_feed(settings, engine, "Publications", server.url("/publications"), "article", None, NOW)
    fetch_all(settings, engine)
    assert use_cases.rename_feed(settings, engine, "Publications", "  Our   papers ") == "Our papers"
    (state,) = all_feed_states(engine)
    assert state.name == "Our papers" and state.etag  # the validators survive: the next fetch is a 304
    with engine.connect() as conn:
        assert {r.feed for r in conn.execute(select(items.c.feed))} == {"Our papers"}
    (report,) = fetch_all(settings, engine)
    assert report.status == FeedStatus.NOT_MODIFIED
    with pytest.raises(use_cases.DuplicateFeed):
        use_cases.add_feed(settings, engine, "Other", server.url("/events"), "event", None, NOW)
        use_cases.rename_feed(settings, engine, "Other", "Our papers")
    engine.dispose()


# --- OPML and config export through the store -----------------------------------------------------

def test_opml_import_adds_the_good_outlines_and_lists_the_rest_by_line(tmp_path, store_url):
    config = write_config(tmp_path, store_url)
    assert cli(config, "feeds", "add", "https://second.example.org/feed/", "--name", "Already here").exit_code == 0
    result = cli(config, "feeds", "import", str(OPML / "bad-lines.opml"))
    assert result.exit_code == 1, result.output
    skipped = [line.split("skipped ", 1)[1] for line in result.output.splitlines() if line.startswith("skipped ")]
    assert [s.split(":")[0] for s in skipped] == ["line 6", "line 7", "line 8", "line 9", "line 10", "line 11",
                                                  "line 12", "line 13"]
    assert "already fetched as the feed 'Already here'" in skipped[5]
    assert "taken by line 5" in skipped[6]
    assert "1 added, 8 skipped" in result.stdout
    engine = open_store(load_settings(config).store.url)
    assert names(engine) == ["Already here", "Good one"]
    engine.dispose()


@pytest.mark.parametrize("name", ["billion-laughs.opml", "external-entity.opml", "not-opml.xml", "malformed.opml"])
def test_a_hostile_or_broken_opml_file_imports_nothing(tmp_path, store_url, name):
    config = write_config(tmp_path, store_url)
    result = cli(config, "feeds", "import", str(OPML / name))
    assert result.exit_code == 2 and "error:" in result.output
    assert json.loads(cli(config, "feeds", "list", "--json").stdout) == []


def test_opml_export_and_import_round_trip_through_the_store(tmp_path, store_url):
    config = write_config(tmp_path, store_url)
    assert cli(config, "feeds", "import", str(OPML / "good.opml")).exit_code == 0
    before = json.loads(cli(config, "feeds", "list", "--json").stdout)
    assert len(before) == 5 and [e["paused"] for e in before] == [False, False, False, True, False]
    exported = tmp_path / "out.opml"
    assert cli(config, "feeds", "export", "--output", str(exported)).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    fresh = write_config(other, f"sqlite:///{other / 'fresh.db'}")
    assert cli(fresh, "feeds", "import", str(exported)).exit_code == 0
    assert json.loads(cli(fresh, "feeds", "list", "--json").stdout) == before


def test_config_export_is_toml_that_digest_toml_accepts(tmp_path, store_url):
    settings = make_settings(tmp_path, store_url)
    engine = open_store(settings.store.url)
    use_cases.add_feed(settings, engine, 'Quotes "and" \\ back', "https://q.example.org/feed/", "news", "fr", NOW)
    use_cases.add_feed(settings, engine, "Events", "https://e.example.org/feed/", "event", None, NOW)
    use_cases.add_feed(settings, engine, "Paused one", "https://p.example.org/feed/", "brief", None, NOW)
    use_cases.pause_feed(settings, engine, "Paused one")
    config = write_config(tmp_path, store_url)
    text = cli(config, "config", "export").stdout
    loaded = settings_from_dict(tomllib.loads(text), base_dir=tmp_path)
    assert loaded.feeds == [Feed('Quotes "and" \\ back', "https://q.example.org/feed/", ItemKind.NEWS, "fr"),
                            Feed("Events", "https://e.example.org/feed/", ItemKind.EVENT)]
    assert "# url = \"https://p.example.org/feed/\"" in text  # paused: written, commented out
    engine.dispose()


# --- the admin's forms (the browser flow is tests/test_browser_feeds.py) -----------------------------

def admin_client(tmp_path, store_url, monkeypatch, **sections):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    monkeypatch.setenv("DIGEST_SECRET", "feeds-test-secret")
    settings = make_settings(tmp_path, store_url, web={"admin_password_hash": PASSWORD_HASH}, fetch=FAST, **sections)
    engine = open_store(settings.store.url)
    client = TestClient(create_app(settings, engine), base_url="https://testserver")
    assert log_in(client).status_code == 303
    return settings, engine, client, csrf_of(client.get("/admin/feeds").text)


def test_a_provisioned_admin_page_is_read_only(tmp_path, store_url, monkeypatch):
    settings, engine, client, csrf = admin_client(
        tmp_path, store_url, monkeypatch,
        feeds=[{"name": "Publications", "url": "https://www.example.org/feed/", "kind": "article"}])
    html = client.get("/admin/feeds").text
    assert "Managed in digest.toml" in html and "managed in digest.toml" in html and "Publications" in html
    assert 'action="/admin/feeds/add"' not in html and 'action="/admin/feeds/pause"' not in html
    assert 'action="/admin/feeds/import"' not in html
    for path, data in (("/admin/feeds/add", {"name": "X", "url": "https://x.example.org/", "confirm_failed": "yes"}),
                       ("/admin/feeds/pause", {"name": "Publications"}),
                       ("/admin/feeds/remove", {"name": "Publications", "confirm": "yes"})):
        answer = client.post(path, data={"csrf_token": csrf, **data}, follow_redirects=False)
        assert answer.status_code == 409 and "managed in digest.toml" in answer.text, path
    answer = client.post("/admin/feeds/import", data={"csrf_token": csrf},
                         files={"file": ("good.opml", (OPML / "good.opml").read_bytes(), "text/x-opml")})
    assert answer.status_code == 409
    assert client.get("/admin/feeds/new", params={"name": "X", "url": "https://x.example.org/"}).status_code == 409
    assert names(engine) == []
    client.close()
    engine.dispose()


def test_admin_forms_need_the_token_and_a_passed_test_or_an_explicit_confirmation(tmp_path, store_url, monkeypatch,
                                                                                  server):
    settings, engine, client, csrf = admin_client(tmp_path, store_url, monkeypatch)
    fields = {"name": "Publications", "url": server.url("/publications"), "kind": "article", "language": ""}
    assert client.post("/admin/feeds/add", data={**fields, "confirm_failed": "yes"}).status_code == 403
    upload = {"file": ("good.opml", (OPML / "good.opml").read_bytes(), "text/x-opml")}
    assert client.post("/admin/feeds/import", data={"csrf_token": "forged"}, files=upload).status_code == 403
    assert client.post("/admin/feeds/import", data={"csrf_token": csrf}, files=upload,
                       headers={"origin": "https://evil.example"}).status_code == 403
    untested = client.post("/admin/feeds/add", data={**fields, "csrf_token": csrf})
    assert untested.status_code == 400 and "test the feed first" in untested.text
    forged = client.post("/admin/feeds/add", data={**fields, "csrf_token": csrf, "passed": "0" * 64})
    assert forged.status_code == 400
    assert names(engine) == []
    tested = client.get("/admin/feeds/new", params=fields)
    assert tested.status_code == 200 and "The test fetch worked" in tested.text
    passed = re.search(r'name="passed" value="([0-9a-f]{64})"', tested.text).group(1)
    other = {**fields, "url": server.url("/gone")}  # the token is for the tested fields only
    assert client.post("/admin/feeds/add", data={**other, "csrf_token": csrf, "passed": passed}).status_code == 400
    saved = client.post("/admin/feeds/add", data={**fields, "csrf_token": csrf, "passed": passed},
                        follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == "/admin/feeds?done=feed-added"
    again = client.post("/admin/feeds/add", data={**fields, "csrf_token": csrf, "passed": passed})
    assert again.status_code == 400 and "already a feed named" in again.text
    assert names(engine) == ["Publications"]
    # The import's skipped lines come back signed: a crafted query shows nothing.
    crafted = client.get("/admin/feeds", params={"added": "9", "more": "0", "p000": "line 1: call 555-0100",
                                                  "sig": "0" * 64})
    assert "555-0100" not in crafted.text and "OPML import" not in crafted.text
    client.close()
    engine.dispose()


def test_health_in_plain_words(tmp_path, store_url, server):
    settings = make_settings(tmp_path, store_url, fetch=FAST)
    engine = open_store(settings.store.url)
    use_cases.add_feed(settings, engine, "Gone", server.url("/gone"), "brief", None, NOW)
    use_cases.add_feed(settings, engine, "Publications", server.url("/publications"), "article", None, NOW)
    rows = {r.entry.feed.name: r.health for r in use_cases.feeds_overview(settings, engine, datetime.now(UTC))}
    assert rows["Gone"].level == rows["Publications"].level == "attention"  # not fetched yet
    fetch_all(settings, engine)
    now = datetime.now(UTC)
    rows = {r.entry.feed.name: r.health for r in use_cases.feeds_overview(settings, engine, now)}
    assert (rows["Publications"].level, rows["Publications"].words) == ("fine", "Up to date")
    gone = rows["Gone"]
    assert gone.level == "failing" and "HTTP 404" in gone.detail
    assert gone.words.startswith("The server says this address does not exist — next try at ")
    engine.dispose()


@pytest.mark.parametrize("tail", ["", " [...]"], ids=["as given", "cleaned at ingest"])
def test_renaming_keeps_items_without_guid_or_link_as_they_were(tmp_path, store_url, server, tail):
    """Such items are keyed by their feed's name too (digest.item_keys): a rename must not make them new copies,
    also when cleaning changed their text ("[...]" stored as "…": the key comes from the text as the feed gave it)."""
    body = (FEEDS / "description-only.xml").read_bytes().replace(b".</description>", f".{tail}</description>".encode())
    server.routes["/notices"] = status(200, {"Content-Type": "application/rss+xml"}, body)  # no validators: parsed again
    settings = make_settings(tmp_path, store_url, fetch=FAST)
    engine = open_store(settings.store.url)
    use_cases.add_feed(settings, engine, "Notices", server.url("/notices"), "news", None, NOW)
    (first,) = fetch_all(settings, engine)
    assert first.new == 3 == count_items(engine)
    use_cases.rename_feed(settings, engine, "Notices", "Front desk")
    (again,) = fetch_all(settings, engine)
    assert (again.feed, again.new, again.items) == ("Front desk", 0, 3)
    assert count_items(engine) == 3
    engine.dispose()
