"""Every stored item is offered to exactly one issue (late items, too old ones), and items settle before
they are sent: end to end on SQLite and PostgreSQL, feeds fetched from a real HTTP server on 127.0.0.1.

The feeds are tests/data/feeds/late-items-*.xml and settling-*.xml (see the README there). Windows are
fixed (Monday 09:00 builds in Brussels); the stabilisation tests build at the real clock, since the
fetch stamps content changes with it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from compose_fixtures import COMPOSE_DATA
from conftest import FEEDS, make_settings
from http_feed_server import FeedServer, static, status
from sqlalchemy import select, update

from digest.models import IssueStatus, Subscriber, SubscriberStatus
from digest.pipeline import issues as pipeline_issues
from digest.pipeline import weekly
from digest.pipeline.ingest import fetch_all
from digest.pipeline.issues import (
    approve_issue,
    build_issue,
    build_notes,
    edit_issue,
    get_issue,
)
from digest.pipeline.sending import send_now
from digest.pipeline.weekly import build_for_week
from digest.store.items import get_item
from digest.store.runs import recent_runs
from digest.store.schema import items as items_table
from digest.store.subscribers import add_subscriber

BRUSSELS = ZoneInfo("Europe/Brussels")
MONDAY_1 = datetime(2026, 11, 30, 9, tzinfo=BRUSSELS)  # the first issue's build: window 23 Nov 09:00 → 30 Nov 09:00
MONDAY_2 = MONDAY_1 + timedelta(days=7)
MONDAY_3 = MONDAY_2 + timedelta(days=7)
FAST = {"retries": 0, "deadline": 5, "read_timeout": 2, "connect_timeout": 2}


def p(n: int) -> str:
    return f"https://www.example.org/?p={n}"


IN_FIRST_WINDOW, BEFORE_FIRST, LATE, TOO_OLD, NEXT_WEEK, LATE_DROPPED = (p(n) for n in (2101, 2102, 2103, 2104,
                                                                                        2105, 2106))
EDITED, UNCHANGED = p(3101), p(3102)


@pytest.fixture
def server():
    srv = FeedServer().start()
    yield srv
    srv.stop()


def serve(server: FeedServer, name: str, path: str = "/feed") -> None:
    server.routes[path] = static((FEEDS / name).read_bytes())


def settings_for(tmp_path: Path, store_url: str, server: FeedServer, kind: str = "brief", **sections):
    feeds = [{"name": "Publications", "url": server.url("/feed"), "kind": kind}]
    return make_settings(tmp_path, store_url, feeds=feeds, fetch={**FAST, **sections.pop("fetch", {})}, **sections)


def keys(issue) -> list[str]:
    return [e.item.key for s in issue.sections for e in s.entries]


def send(settings, engine, number: int, now: datetime) -> None:
    """Approve the issue as it is and send it through the ledger (one reader, the outbox transport)."""
    approve_issue(settings, engine, number, "editor", get_issue(engine, number).version, now)
    send_now(settings, engine, number, now, reason="test")
    assert get_issue(engine, number).status == IssueStatus.SENT


def outbox_mentions(settings, text: str) -> int:
    return sum(text in path.read_text(encoding="utf-8", errors="replace")
               for path in Path(settings.resolve_path(settings.delivery.outbox_dir)).rglob("*.eml"))


def reader(engine) -> None:
    add_subscriber(engine, Subscriber(email="reader@example.org", status=SubscriberStatus.CONFIRMED), now=MONDAY_1)


# --- late items ------------------------------------------------------------------------------------

def test_an_item_fetched_after_its_issue_was_built_goes_into_the_next_one_only(tmp_path, store_url, engine, server):
    settings = settings_for(tmp_path, store_url, server, fetch={"stabilise_minutes": 0})
    reader(engine)
    serve(server, "late-items-before.xml")
    fetch_all(settings, engine)
    first = build_issue(settings, engine, now=MONDAY_1)
    assert keys(first) == [IN_FIRST_WINDOW]  # a first issue cuts by date: the older post is not offered
    assert build_notes(settings, engine, first) == []
    send(settings, engine, first.number, MONDAY_1 + timedelta(hours=2))

    serve(server, "late-items-after.xml")  # fetched at 13:00: one post dated 08:30 appears only now
    fetch_all(settings, engine)
    second = build_issue(settings, engine, now=MONDAY_2)
    assert second.window.start == MONDAY_1
    assert sorted(keys(second)) == sorted([NEXT_WEEK, LATE, LATE_DROPPED])
    notes = build_notes(settings, engine, second)
    assert any(n.startswith("Came in late, included: 2 item(s)") and "Published at 08:30" in n for n in notes)
    (too_old,) = [n for n in notes if n.startswith("Too old, not sent")]
    assert "1 item(s)" in too_old and "Back-dated by a month" in too_old and "14 days" in too_old
    assert "older post" not in " ".join(notes)  # stored before the first issue was built: passed over, not late

    # Edits and rebuilds of the draft keep its late items.
    edit_issue(settings, engine, second.number, MONDAY_2, drop=[LATE_DROPPED])
    rebuilt = pipeline_issues.rebuild_issue(settings, engine, second.number, MONDAY_2 + timedelta(minutes=5))
    assert sorted(keys(rebuilt)) == sorted([NEXT_WEEK, LATE])
    assert rebuilt.editorial.dropped == (LATE_DROPPED,)
    send(settings, engine, second.number, MONDAY_2 + timedelta(hours=2))

    third = build_issue(settings, engine, now=MONDAY_3, allow_empty=True)
    assert keys(third) == []  # the dropped one counts as offered, the too old one was reported once
    assert build_notes(settings, engine, third) == []
    offered = {key: get_item(engine, key) and _offered_in(engine, key) for key in
               (IN_FIRST_WINDOW, BEFORE_FIRST, LATE, TOO_OLD, NEXT_WEEK, LATE_DROPPED)}
    assert offered == {IN_FIRST_WINDOW: 1, BEFORE_FIRST: 1, LATE: 2, TOO_OLD: 2, NEXT_WEEK: 2, LATE_DROPPED: 2}
    assert outbox_mentions(settings, "Published at 08:30") == 1  # in exactly one email: issue 2's
    assert outbox_mentions(settings, "Defence procurement after the summit") == 1
    assert all(TOO_OLD not in keys(get_issue(engine, n)) for n in (1, 2))  # (it may be a related link)


def test_an_edit_after_sending_is_not_sent_again_even_when_its_date_moves(tmp_path, store_url, engine, server):
    settings = settings_for(tmp_path, store_url, server, fetch={"stabilise_minutes": 0})
    reader(engine)
    serve(server, "late-items-before.xml")
    fetch_all(settings, engine)
    build_issue(settings, engine, now=MONDAY_1)
    send(settings, engine, 1, MONDAY_1 + timedelta(hours=2))
    moved = (FEEDS / "late-items-before.xml").read_bytes().replace(
        b"Wed, 25 Nov 2026 10:00:00", b"Wed, 02 Dec 2026 10:00:00").replace(b"joint procurement.", b"joint buying.")
    server.routes["/feed"] = static(moved)
    (report,) = fetch_all(settings, engine)
    assert report.updated == 1
    assert build_issue(settings, engine, now=MONDAY_2) is None  # nothing new: the moved post was sent


def test_late_item_days_zero_sends_nothing_late(tmp_path, store_url, engine, server):
    settings = settings_for(tmp_path, store_url, server, fetch={"stabilise_minutes": 0},
                            digest={"late_item_days": 0})
    reader(engine)
    serve(server, "late-items-before.xml")
    fetch_all(settings, engine)
    build_issue(settings, engine, now=MONDAY_1)
    send(settings, engine, 1, MONDAY_1 + timedelta(hours=2))
    serve(server, "late-items-after.xml")
    fetch_all(settings, engine)
    second = build_issue(settings, engine, now=MONDAY_2)
    assert keys(second) == [NEXT_WEEK]
    (too_old,) = [n for n in build_notes(settings, engine, second) if n.startswith("Too old")]
    assert "3 item(s)" in too_old and "0 days" in too_old


def test_the_first_issue_window_edge_is_unchanged(tmp_path, store_url, engine):
    """The compose fixture's items one minute before, at and after the window start/end, as before."""
    feeds = [{"name": "Publications", "url": str(COMPOSE_DATA / "briefs.rss"), "kind": "brief"}]
    settings = make_settings(tmp_path, store_url, feeds=feeds)
    reader(engine)
    fetch_all(settings, engine)
    start, end = datetime(2026, 11, 16, tzinfo=BRUSSELS), datetime(2026, 11, 23, tzinfo=BRUSSELS)
    first = build_issue(settings, engine, now=end, since=start, until=end)
    placed = keys(first)
    assert p(1005) in placed and p(1004) in placed  # at the start, 30 minutes after it
    assert p(1006) not in placed and p(1007) not in placed  # a minute before the start; exactly at the end
    send(settings, engine, first.number, end + timedelta(hours=1))
    second = build_issue(settings, engine, now=end + timedelta(days=7))
    assert p(1007) in keys(second) and p(1006) not in keys(second)  # stored before the first build: not late


# --- the scheduled build fetches first ------------------------------------------------------------------

def test_the_scheduled_build_fetches_first(tmp_path, store_url, engine, server):
    settings = settings_for(tmp_path, store_url, server, fetch={"stabilise_minutes": 0})
    serve(server, "late-items-before.xml")
    fire = MONDAY_1.astimezone(UTC)
    assert build_for_week(settings, engine, fire, MONDAY_1 + timedelta(minutes=1)) == 1  # nothing was fetched before
    assert keys(get_issue(engine, 1)) == [IN_FIRST_WINDOW]
    assert server.hits("/feed") == 1
    (note,) = recent_runs(engine, 10, job="build")
    assert (note.outcome, note.detail) == ("built", "draft 1 built (fetched 1 feeds first)")


def test_a_failed_fetch_does_not_stop_the_scheduled_build(tmp_path, store_url, engine, server, monkeypatch):
    settings = settings_for(tmp_path, store_url, server, fetch={"stabilise_minutes": 0})
    serve(server, "late-items-before.xml")
    fetch_all(settings, engine)
    server.routes["/feed"] = status(503)  # every feed fails: said in the build's note, the build goes on
    assert build_for_week(settings, engine, MONDAY_1.astimezone(UTC), MONDAY_1) == 1
    assert server.hits("/feed") == 2
    (note,) = recent_runs(engine, 10, job="build")
    assert note.detail == ("draft 1 built (fetched 1 feeds first; 1 failed: Publications: their new items go "
                           "into the next issue, late)")

    def broken(*args, **kwargs):
        raise RuntimeError("no worker could start")

    monkeypatch.setattr(weekly, "fetch_all", broken)  # the fetch itself raising
    fire = MONDAY_2.astimezone(UTC)
    assert build_for_week(settings, engine, fire, MONDAY_2) == 1  # the open draft, refreshed up to the fire time
    (note,) = [r for r in recent_runs(engine, 10) if r.job == "build" and r.scheduled_for == fire]
    assert note.outcome == "built" and "the fetch before it failed: RuntimeError: no worker could start" in note.detail


# --- stabilisation ---------------------------------------------------------------------------------------

WINDOW_START, WINDOW_END = MONDAY_1 - timedelta(days=7), MONDAY_1


def an_hour_passes(engine) -> None:
    """Everything stored so far was stored an hour earlier (the fetch stamps the real clock)."""
    with engine.begin() as conn:
        for key, changed in conn.execute(select(items_table.c.key, items_table.c.content_changed_at)).all():
            conn.execute(update(items_table).where(items_table.c.key == key)
                         .values(content_changed_at=changed - timedelta(hours=1)))


def edited_while_building(tmp_path, store_url, engine, server, **sections):
    settings = settings_for(tmp_path, store_url, server, kind="news", **sections)
    reader(engine)
    serve(server, "settling-first.xml")
    fetch_all(settings, engine)
    an_hour_passes(engine)
    serve(server, "settling-edited.xml")
    (report,) = fetch_all(settings, engine)
    assert report.updated == 1
    return settings


def test_an_item_still_changing_waits_for_the_next_build(tmp_path, store_url, engine, server):
    settings = edited_while_building(tmp_path, store_url, engine, server)
    now = datetime.now(UTC)
    draft = build_issue(settings, engine, now=now, since=WINDOW_START, until=WINDOW_END)
    assert keys(draft) == [UNCHANGED]
    (held,) = build_notes(settings, engine, draft)
    assert held.startswith("Held back: “Statement on the EU–Mercosur trade agreement” changed at")
    assert "30 minutes (fetch.stabilise_minutes)" in held and "rebuild after" in held

    later = pipeline_issues.rebuild_issue(settings, engine, draft.number, now + timedelta(minutes=31))
    assert sorted(keys(later)) == sorted([EDITED, UNCHANGED])  # settled: in, as it stands now
    statement = next(e.item for s in later.sections for e in s.entries if e.item.key == EDITED)
    assert statement.title == "Statement on the EU–Mercosur trade agreement"
    assert build_notes(settings, engine, later) == []


def test_an_item_held_back_from_a_sent_issue_goes_into_the_next_one(tmp_path, store_url, engine, server):
    settings = edited_while_building(tmp_path, store_url, engine, server)
    now = datetime.now(UTC)
    build_issue(settings, engine, now=now, since=WINDOW_START, until=WINDOW_END)
    send(settings, engine, 1, now)
    assert outbox_mentions(settings, "Mercosur") == 0
    second = build_issue(settings, engine, now=now + timedelta(minutes=31), until=MONDAY_2)
    assert keys(second) == [EDITED]
    assert any(n.startswith("Came in late, included: 1 item(s)") for n in build_notes(settings, engine, second))
    send(settings, engine, 2, now + timedelta(minutes=32))
    assert outbox_mentions(settings, "Mercosur") == 1


def test_an_item_that_could_not_wait_goes_as_it_stands_and_the_report_says_so(tmp_path, store_url, engine, server):
    # Published 28 Nov; the next issue (from 30 Nov) would take it late only from 29 Nov on.
    settings = edited_while_building(tmp_path, store_url, engine, server, digest={"late_item_days": 1})
    draft = build_issue(settings, engine, now=datetime.now(UTC), since=WINDOW_START, until=WINDOW_END)
    assert sorted(keys(draft)) == sorted([EDITED, UNCHANGED])
    (note,) = build_notes(settings, engine, draft)
    assert note.startswith("Included while still changing: “Statement on the EU–Mercosur trade agreement”")
    assert "1 days (digest.late_item_days)" in note


def test_stabilise_minutes_zero_offers_everything_as_it_stands(tmp_path, store_url, engine, server):
    settings = edited_while_building(tmp_path, store_url, engine, server, fetch={"stabilise_minutes": 0})
    draft = build_issue(settings, engine, now=datetime.now(UTC), since=WINDOW_START, until=WINDOW_END)
    assert sorted(keys(draft)) == sorted([EDITED, UNCHANGED])
    assert build_notes(settings, engine, draft) == []


def test_negative_settings_are_refused_naming_the_key(tmp_path):
    from digest.config import ConfigError

    with pytest.raises(ConfigError, match="'digest.late_item_days' is -1: use 0"):
        make_settings(tmp_path, digest={"late_item_days": -1})
    with pytest.raises(ConfigError, match="'fetch.stabilise_minutes' is -5: use 0"):
        make_settings(tmp_path, fetch={"stabilise_minutes": -5})
    with pytest.raises(ConfigError, match="'fetch.stabilise_minutes' must be a whole number"):
        make_settings(tmp_path, fetch={"stabilise_minutes": "30"})


def _offered_in(engine, key: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(select(items_table.c.offered_in).where(items_table.c.key == key)).scalar()


def test_digest_build_and_the_admin_issue_page_show_the_build_report(tmp_path, store_url, engine, server):
    from admin_fixtures import PASSWORD_HASH, log_in
    from click.testing import CliRunner
    from starlette.testclient import TestClient

    from digest.cli import main
    from digest.web.app import create_app

    settings = edited_while_building(tmp_path, store_url, engine, server, web={"admin_password_hash": PASSWORD_HASH})
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n[web]\nadmin_password_hash = "{PASSWORD_HASH}"\n'
                      f'[[feeds]]\nname = "Publications"\nurl = "{server.url("/feed")}"\nkind = "news"\n',
                      encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "build", "--since", WINDOW_START.isoformat(),
                                       "--until", WINDOW_END.isoformat()])
    assert result.exit_code == 0, result.output
    (line,) = [x for x in result.output.splitlines() if x.startswith("build: ")]
    assert line.startswith("build: Held back: “Statement on the EU–Mercosur trade agreement” changed at")

    with TestClient(create_app(settings, engine), base_url="https://testserver") as client:
        assert log_in(client).status_code == 303
        page = client.get("/admin/issues/1")
    assert page.status_code == 200
    assert "Build report" in page.text and "Held back: “Statement on the EU–Mercosur trade agreement”" in page.text


def test_the_migration_marks_what_was_published_before_the_last_sent_issue_as_offered(tmp_path, store_url, engine,
                                                                                    server):
    """Upgrading a store with sent issues offers nothing stored before it late: nothing is sent twice."""
    from alembic import command

    from digest.store import open_store
    from digest.store.migrate import alembic_config

    settings = settings_for(tmp_path, store_url, server, fetch={"stabilise_minutes": 0})
    reader(engine)
    serve(server, "late-items-before.xml")
    fetch_all(settings, engine)
    build_issue(settings, engine, now=MONDAY_1)
    send(settings, engine, 1, MONDAY_1 + timedelta(hours=2))
    serve(server, "late-items-after.xml")
    fetch_all(settings, engine)  # the late post is stored before the upgrade: as digest 0004 would, it stays unsent
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    engine.dispose()
    upgraded = open_store(store_url)
    try:
        offered = {key: _offered_in(upgraded, key) for key in (IN_FIRST_WINDOW, BEFORE_FIRST, LATE, TOO_OLD, NEXT_WEEK)}
        assert offered == {IN_FIRST_WINDOW: 1, BEFORE_FIRST: 1, LATE: 1, TOO_OLD: 1, NEXT_WEEK: None}
        with upgraded.connect() as conn:
            rows = conn.execute(select(items_table.c.first_seen, items_table.c.content_changed_at)).all()
        assert rows and all(first == changed for first, changed in rows)
        second = build_issue(settings, upgraded, now=MONDAY_2)
        assert keys(second) == [NEXT_WEEK] and build_notes(settings, upgraded, second) == []
    finally:
        upgraded.dispose()


# --- the rule itself (digest.offers, pure) ------------------------------------------------------------

def _item(key: str, published: datetime, kind: str = "news"):
    from digest.models import Item, ItemKind

    return Item(key=key, feed="News", kind=ItemKind(kind), title=key, url=f"https://www.example.org/{key}/",
                published=published)


@pytest.mark.parametrize("published, changed_minutes_after_build, held", [
    (WINDOW_END - timedelta(days=14), -10, True),  # exactly at the next issue's late limit: it can wait
    (WINDOW_END - timedelta(days=14, seconds=1), -10, False),  # a second older: waiting would lose it
    (WINDOW_END - timedelta(days=1), -31, False),  # changed 31 minutes before: settled
    (WINDOW_END - timedelta(days=1), 10, True),  # stored while the build ran
    (WINDOW_END - timedelta(days=1), 60 * 24, False),  # stamped a day after a build run for a past moment
])
def test_the_stabilisation_rule(published, changed_minutes_after_build, held):
    from digest.models import Window
    from digest.offers import choose_offers

    now = WINDOW_END + timedelta(hours=1)
    item = _item("a", published)
    offers = choose_offers([item], [], Window(WINDOW_END - timedelta(days=30), WINDOW_END), now,
                           {"a": now + timedelta(minutes=changed_minutes_after_build)},
                           first_issue=True, late_item_days=14, stabilise_minutes=30)
    assert (offers.window_items == ()) is held
    assert [n.key for n in offers.report.held_back] == (["a"] if held else [])
    assert [n.key for n in offers.report.unsettled] == (["a"] if not held and abs(changed_minutes_after_build) < 30 else [])


def test_events_are_never_late_held_back_or_offered():
    from digest.models import Window
    from digest.offers import choose_offers

    window = Window(WINDOW_START, WINDOW_END)
    event = _item("event", WINDOW_START + timedelta(days=1), kind="event")
    late_event = _item("late-event", WINDOW_START - timedelta(days=1), kind="event")
    late_brief = _item("late-brief", WINDOW_START - timedelta(days=1), kind="brief")
    offers = choose_offers([event], [late_event, late_brief], window, WINDOW_END, {"event": WINDOW_END},
                           first_issue=False, late_item_days=14, stabilise_minutes=30)
    assert offers.window_items == (event,) and offers.late_items == (late_brief,)
    assert offers.report.offered == ("late-brief",) and offers.report.held_back == ()
    first = choose_offers([event], [late_brief], window, WINDOW_END, {}, first_issue=True, late_item_days=14,
                          stabilise_minutes=30)
    assert first.late_items == () and first.report.cutoff == WINDOW_START  # a first issue cuts by date


def test_a_new_item_counts_as_changed_when_its_feed_dates_it_not_when_it_is_fetched(tmp_path, store_url, engine,
                                                                                    server):
    from dataclasses import replace

    settings = settings_for(tmp_path, store_url, server, kind="news")
    serve(server, "settling-first.xml")
    fetch_all(settings, engine)  # a first fetch, built at once: its posts are days old, so settled
    now = datetime.now(UTC)
    draft = build_issue(settings, engine, now=now, since=WINDOW_START, until=WINDOW_END)
    assert sorted(keys(draft)) == sorted([EDITED, UNCHANGED]) and build_notes(settings, engine, draft) == []

    from digest.store.items import save_items

    fresh = replace(get_item(engine, UNCHANGED), key=p(3199), url="https://www.example.org/news/fresh/",
                    title="Posted five minutes ago", published=now - timedelta(minutes=5), first_seen=None)
    save_items(engine, [fresh], now=now)
    later = build_issue(settings, engine, now=now + timedelta(minutes=1), until=now + timedelta(minutes=1),
                        since=WINDOW_START, allow_empty=True)
    assert p(3199) not in keys(later)
    assert any(n.startswith("Held back: “Posted five minutes ago”") for n in build_notes(settings, engine, later))
