"""The issue lifecycle on SQLite and PostgreSQL: build, refresh, editorial choices, approval, statuses, CLI."""

from __future__ import annotations

import json
import math
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from compose_fixtures import BRUSSELS, FIRST_SEEN, NOW, SEC, WINDOW, feeds_config, fixture_items, p
from conftest import ROOT, make_settings
from sqlalchemy import func, select

from digest.cli import main
from digest.compose import EditorialError
from digest.models import IssueStatus, Window
from digest.pipeline.issues import build_issue, edit_issue
from digest.store import open_store
from digest.store.issues import (
    ConcurrentChange,
    IssueNotFound,
    IssueStateError,
    StaleVersion,
    WindowConflict,
    approve_issue,
    get_issue,
    latest_sent_issue,
    list_issues,
    refuse_window_conflict,
    set_status,
)
from digest.store.items import save_items
from digest.store.schema import issues as issues_table


@pytest.fixture
def settings(tmp_path, store_url):
    return make_settings(tmp_path, store_url, feeds=feeds_config())


@pytest.fixture
def stored(settings, engine):
    """The fixture feeds saved in the store."""
    save_items(engine, fixture_items(settings), now=FIRST_SEEN)
    return engine


def build(settings, engine, now=NOW, **kwargs):
    return build_issue(settings, engine, now, **kwargs)


def issue_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(issues_table)).scalar_one()


def send(engine, number):
    issue = get_issue(engine, number)
    approve_issue(engine, number, "editor", issue.version)
    set_status(engine, number, IssueStatus.SENDING)
    return set_status(engine, number, IssueStatus.SENT)


def test_build_creates_a_draft_and_building_again_is_idempotent(settings, stored):
    first = build(settings, stored)
    assert (first.number, first.status) == (1, IssueStatus.DRAFT)
    assert first.window == WINDOW  # first issue: window_days back from now
    again = build(settings, stored)
    assert (again.number, again.version) == (1, first.version)
    assert issue_count(stored) == 1
    assert get_issue(stored, 1) == first


def test_refresh_later_keeps_the_draft_and_extends_its_end(settings, stored):
    first = build(settings, stored, now=NOW - timedelta(hours=2))
    later = build(settings, stored, now=NOW - timedelta(hours=1))
    assert later.number == 1 and later.window == Window(first.window.start, NOW - timedelta(hours=1))
    assert issue_count(stored) == 1
    assert later.version == first.version  # nothing new for readers: an approval would still hold
    latest = build(settings, stored, now=NOW + timedelta(hours=1))  # now p1007 (Monday 00:00) is in
    assert latest.number == 1 and latest.version != first.version
    assert p(1007) in [e.item.key for s in latest.sections for e in s.entries]


def test_nothing_new_builds_no_issue_unless_allowed(settings, engine):
    assert build(settings, engine) is None
    assert issue_count(engine) == 0
    empty = build(settings, engine, allow_empty=True)
    assert empty.number == 1 and all(not s.entries for s in empty.sections)


def test_editorial_choices_survive_a_refresh(settings, stored):
    build(settings, stored)
    edit_issue(settings, stored, 1, NOW, intro="Welcome", subject="Our week", pin=[p(1001)], drop=[p(1003)])
    save_items(stored, [replace(fixture_items(settings)[0], key=p(1999), title="A late brief",
                                url="https://www.example.org/publications/late/")], now=FIRST_SEEN)
    refreshed = build(settings, stored)
    assert refreshed.editorial.intro == "Welcome" and refreshed.editorial.subject == "Our week"
    security = next(s for s in refreshed.sections if s.id == SEC)
    assert security.entries[0].item.key == p(1001) and security.entries[0].pinned
    keys = [e.item.key for s in refreshed.sections for e in s.entries]
    assert p(1003) not in keys and p(1999) in keys
    stored_issue = get_issue(stored, 1)
    assert stored_issue.editorial.dropped == (p(1003),) and stored_issue == refreshed


def test_edit_errors_name_the_problem(settings, stored):
    build(settings, stored)
    with pytest.raises(EditorialError, match="no item with key"):
        edit_issue(settings, stored, 1, NOW, drop=["https://nowhere.example/"])
    with pytest.raises(IssueNotFound, match="no issue 7"):
        edit_issue(settings, stored, 7, NOW, intro="x")


def test_approval_is_for_one_version(settings, stored):
    draft = build(settings, stored)
    with pytest.raises(StaleVersion, match="preview it again"):
        approve_issue(stored, 1, "editor", "0" * 32)
    approved = approve_issue(stored, 1, "editor", draft.version)
    assert approved.status == IssueStatus.APPROVED
    summary = list_issues(stored)[0]
    assert (summary.approved_by, summary.approved_version) == ("editor", draft.version)
    assert build(settings, stored).status == IssueStatus.APPROVED  # a refresh with no change keeps approval
    edited = edit_issue(settings, stored, 1, NOW, intro="One more thing")
    assert edited.status == IssueStatus.DRAFT and edited.version != draft.version
    assert list_issues(stored)[0].approved_by is None
    with pytest.raises(StaleVersion):
        approve_issue(stored, 1, "editor", draft.version)


def test_sent_issues_never_change_and_the_next_window_starts_at_their_end(settings, stored):
    build(settings, stored)
    sent = send(stored, 1)
    assert sent.status == IssueStatus.SENT and latest_sent_issue(stored).number == 1
    with pytest.raises(IssueStateError, match="only a draft or approved"):
        edit_issue(settings, stored, 1, NOW, intro="too late")
    with pytest.raises(IssueStateError, match="never changes"):
        build(settings, stored, since=WINDOW.start, until=WINDOW.end)
    with pytest.raises(IssueStateError, match="cannot become"):
        set_status(stored, 1, IssueStatus.DRAFT)
    nxt = build(settings, stored, now=NOW + timedelta(days=7))
    assert nxt.number == 2 and nxt.window == Window(WINDOW.end, NOW + timedelta(days=7))
    # Published exactly at the old end: left out of issue 1, first item of issue 2.
    assert [e.item.key for s in nxt.sections if s.id != "events" for e in s.entries] == [p(1007)]
    assert get_issue(stored, 1).status == IssueStatus.SENT


def test_status_transitions_are_checked(settings, stored):
    build(settings, stored)
    with pytest.raises(IssueStateError, match="approve"):
        set_status(stored, 1, IssueStatus.APPROVED)
    with pytest.raises(IssueStateError, match="cannot become sending"):
        set_status(stored, 1, IssueStatus.SENDING)
    with pytest.raises(IssueNotFound):
        set_status(stored, 9, IssueStatus.CANCELLED)


def test_a_stale_read_never_overwrites_a_newer_write(settings, stored):
    from digest.manifest import issue_to_manifest
    from digest.store.issues import ConcurrentChange, refresh_issue

    seen = build(settings, stored)
    edit_issue(settings, stored, 1, NOW, intro="written meanwhile")
    stale = replace(seen, editorial=replace(seen.editorial, intro="stale"), version="f" * 32)
    with pytest.raises(ConcurrentChange, match="try again"):
        refresh_issue(stored, seen, stale, issue_to_manifest(stale, settings), NOW)
    assert get_issue(stored, 1).editorial.intro == "written meanwhile"
    set_status(stored, 1, IssueStatus.CANCELLED)
    with pytest.raises(IssueStateError, match="only a draft can be approved"):
        approve_issue(stored, 1, "editor", get_issue(stored, 1).version)


def test_numbers_are_consecutive_and_a_cancelled_window_reopens(settings, stored):
    first = build(settings, stored)
    set_status(stored, 1, IssueStatus.CANCELLED)
    second = build(settings, stored, now=NOW + timedelta(hours=1))
    assert second.number == 2 and second.editorial == first.editorial
    set_status(stored, 2, IssueStatus.CANCELLED)
    reopened = build(settings, stored, since=WINDOW.start, until=WINDOW.end)
    assert (reopened.number, reopened.status) == (1, IssueStatus.DRAFT)
    assert [s.number for s in list_issues(stored)] == [2, 1]


def test_a_window_overlapping_a_sent_issue_is_refused(settings, stored):
    build(settings, stored, since=WINDOW.start, until=WINDOW.end)
    send(stored, 1)
    later = WINDOW.end + timedelta(days=7)
    with pytest.raises(WindowConflict, match=r"overlaps issue 1 \(sent, 2026-11-16 00:00 → 2026-11-23 00:00\).*"
                                             r"--since 2026-11-23T00:00:00\+01:00"):
        build(settings, stored, since=WINDOW.start + timedelta(days=2), until=later)
    assert issue_count(stored) == 1
    # Touching is not overlapping: the next window may start exactly where the sent one ended.
    nxt = build(settings, stored, since=WINDOW.end, until=later)
    assert nxt.number == 2 and p(1001) not in [e.item.key for s in nxt.sections for e in s.entries]


def test_a_window_overlapping_another_open_issue_is_refused(settings, stored):
    build(settings, stored, since=WINDOW.start, until=WINDOW.end)
    set_status(stored, 1, IssueStatus.CANCELLED)
    second = build(settings, stored, since=WINDOW.start, until=WINDOW.end + timedelta(days=1))
    assert second.number == 2  # a cancelled issue's window is free again
    with pytest.raises(WindowConflict, match=r"overlaps issue 2 \(draft, .*digest issue cancel 2"):
        build(settings, stored, since=WINDOW.start, until=WINDOW.end)  # would reopen issue 1 with the same items
    assert get_issue(stored, 1).status == IssueStatus.CANCELLED
    assert [i.number for i in list_issues(stored, [IssueStatus.DRAFT])] == [2]


def test_a_cancelled_issue_is_not_reopened_while_another_is_open(settings, stored):
    build(settings, stored, since=WINDOW.start, until=WINDOW.end)
    set_status(stored, 1, IssueStatus.CANCELLED)
    nxt = build(settings, stored, since=WINDOW.end, until=WINDOW.end + timedelta(days=7))
    assert nxt.number == 2
    with pytest.raises(WindowConflict, match=r"would reopen cancelled issue 1 while issue 2 is draft"):
        build(settings, stored, since=WINDOW.start, until=WINDOW.end)
    assert get_issue(stored, 1).status == IssueStatus.CANCELLED
    set_status(stored, 2, IssueStatus.CANCELLED)
    assert build(settings, stored, since=WINDOW.start, until=WINDOW.end).number == 1  # now it may reopen


def test_the_first_window_counts_wall_clock_days_across_daylight_saving(settings, engine):
    # Monday 26 October 2026 09:00 in Brussels (CET); a week back is Monday 19 October 09:00 (CEST).
    issue = build(settings, engine, now=datetime(2026, 10, 26, 8, tzinfo=UTC), allow_empty=True)
    assert issue.window.start == datetime(2026, 10, 19, 9, tzinfo=BRUSSELS)
    assert get_issue(engine, 1).window.start == datetime(2026, 10, 19, 7, tzinfo=UTC)


def test_explicit_window_and_bad_windows(settings, stored):
    issue = build(settings, stored, since=WINDOW.start + timedelta(days=3), until=WINDOW.end)
    assert p(1001) not in [e.item.key for s in issue.sections for e in s.entries]  # 18 Nov, before the window
    with pytest.raises(ValueError, match="--since must be before --until"):
        build(settings, stored, since=WINDOW.end, until=WINDOW.start)


def test_concurrent_builders_make_one_issue(settings, stored, store_url):
    results, errors = [], []

    engines = [open_store(store_url, migrate=False) for _ in range(4)]  # one connection pool per "process"

    def builder(engine):
        try:
            results.append(build(settings, engine))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=builder, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert not errors and len(results) == 4
    assert {r.number for r in results} == {1} and len({r.version for r in results}) == 1
    assert issue_count(stored) == 1


def test_a_builder_that_finds_its_window_just_created_by_another_retries_rather_than_refuses(settings, stored):
    """The race behind concurrent builders: issue 1 appeared with this very window after the builder looked."""
    first = build(settings, stored)
    with pytest.raises(ConcurrentChange):  # _retry_on_race reads again and refreshes issue 1
        refuse_window_conflict(stored, first.window, None, settings.site.tz)
    overlapping = Window(first.window.start + timedelta(hours=1), first.window.end + timedelta(hours=1))
    with pytest.raises(WindowConflict):  # a different window that overlaps is still a conflict
        refuse_window_conflict(stored, overlapping, None, settings.site.tz)


# --- the command line -----------------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, sqlite_url):
    """`digest …` against a SQLite store holding the fixture feeds (the store code is shared with the tests above)."""
    settings = make_settings(tmp_path, sqlite_url)
    engine = open_store(sqlite_url)
    save_items(engine, fixture_items(settings), now=FIRST_SEEN)
    engine.dispose()
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "{sqlite_url}"\n' + "".join(
        f'[[series]]\nid = "{s.id}"\nname = "{s.name}"\nurl = "{s.url}"\n' for s in settings.series), encoding="utf-8")

    def run(*args):
        return CliRunner().invoke(main, ["--config", str(config), *args])

    return run


def test_cli_build_json_prints_the_manifest(cli):
    result = cli("build", "--since", "2026-11-16", "--until", "2026-11-23", "--json", "-")
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["issue"]["number"] == 1
    assert manifest["issue"]["window"] == {"start": "2026-11-16T00:00:00+01:00", "end": "2026-11-23T00:00:00+01:00"}
    assert [s["id"] for s in manifest["sections"]] == [SEC, "esa-digital-technology", "events", "media", "more"]
    assert set(manifest) >= {"issue", "sections", "feeds", "segments"}


def test_cli_editorial_commands_and_approval(cli):
    assert cli("build", "--since", "2026-11-16", "--until", "2026-11-23").exit_code == 0
    assert cli("issue", "pin", "1", p(1001)).exit_code == 0
    assert cli("issue", "intro", "1", "Hello readers").exit_code == 0
    shown = cli("issue", "show", "1")
    assert "* Rearming Europe without the US" in shown.stdout and p(1001) in shown.stdout
    shown_json = json.loads(cli("issue", "show", "1", "--json").stdout)
    assert shown_json["issue"]["intro"] == "Hello readers"
    assert cli("issue", "intro", "1", "Bonjour", "--language", "fr").exit_code == 0
    assert cli("issue", "lead", "1", "Our pick", "--language", "en").exit_code == 0  # the site's own
    assert cli("issue", "subject", "1", "Sujet", "--language", "xx").exit_code == 2  # no such language
    editorial = json.loads(cli("issue", "show", "1", "--json").stdout)["issue"]["editorial"]
    assert editorial["texts"] == {"fr": {"subject": "", "intro": "Bonjour", "lead": ""}} and editorial["lead"] == "Our pick"
    approved = cli("approve", "1", "--by", "editor")
    assert approved.exit_code == 0 and "approved" in approved.stdout
    assert json.loads(cli("issue", "list", "--json").stdout)[0]["approved_by"] == "editor"
    assert cli("approve", "1", "--version", "stale").exit_code == 1
    assert cli("issue", "drop", "1", "https://nowhere.example/").exit_code == 2
    assert cli("issue", "show", "5").exit_code == 2
    assert cli("issue", "cancel", "1").exit_code == 0
    assert cli("issue", "cancel", "1").exit_code == 1


def test_cli_nothing_new_exits_zero(cli):
    result = cli("build", "--since", "2025-01-01", "--until", "2025-01-08", "--json", "-")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["issue"] is None and "Nothing new" in result.stderr
    assert cli("build", "--since", "yesterday").exit_code == 2


def test_cli_an_empty_window_leaves_the_open_draft_alone(cli):
    assert cli("build", "--since", "2026-11-16", "--until", "2026-11-23").exit_code == 0
    result = cli("build", "--since", "2025-01-01", "--until", "2025-01-08", "--json", "-")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["issue"] is None and "Nothing new" in result.stderr
    shown = json.loads(cli("build", "--since", "2026-11-16", "--until", "2026-11-23", "--json", "-").stdout)
    assert shown["issue"]["number"] == 1
    assert shown["issue"]["window"]["start"] == "2026-11-16T00:00:00+01:00"
    assert sum(len(s["items"]) for s in shown["sections"]) > 0


def test_items_in_series_matches_the_exact_id(settings, engine):
    from digest.store.items import items_in_series, latest_items

    base = fixture_items(settings)[0]
    save_items(engine, [replace(base, key="u", url="https://www.example.org/u/", series=("a_b",)),
                        replace(base, key="x", url="https://www.example.org/x/", series=("axb", "a_b2")),
                        replace(base, key="late", url="https://www.example.org/late/", series=("a_b",),
                                published=NOW + timedelta(days=1))], now=FIRST_SEEN)
    assert [i.key for i in items_in_series(engine, "a_b", 10)] == ["late", "u"]
    assert [i.key for i in items_in_series(engine, "a_b", 10, before=NOW)] == ["u"]
    assert [i.key for i in latest_items(engine, 2)] == ["late", "x"]


def test_cli_reports_an_unwritable_manifest_path(cli, tmp_path):
    result = cli("build", "--since", "2026-11-16", "--until", "2026-11-23", "--json", str(tmp_path / "no" / "such" / "dir.json"))
    assert result.exit_code == 1 and "cannot write the manifest" in result.stderr


def test_cli_build_says_when_the_edition_is_shortened(cli, tmp_path):
    with (tmp_path / "digest.toml").open("a", encoding="utf-8") as config:
        config.write("[digest]\nmax_html_kib = 12\n")
    result = cli("build", "--since", "2026-11-16", "--until", "2026-11-23")
    assert result.exit_code == 0, result.output
    assert "note:" in result.stderr and "KiB" in result.stderr


def test_cli_build_is_quiet_about_size_when_the_edition_fits(cli):
    result = cli("build", "--since", "2026-11-16", "--until", "2026-11-23")
    assert result.exit_code == 0, result.output
    assert "note:" not in result.stderr


def test_cli_an_overlapping_window_exits_2_and_names_the_other_issue(cli):
    assert cli("build", "--since", "2026-11-16", "--until", "2026-11-23").exit_code == 0
    assert cli("issue", "cancel", "1").exit_code == 0
    assert cli("build", "--since", "2026-11-16", "--until", "2026-11-24").exit_code == 0
    result = cli("build", "--since", "2026-11-16", "--until", "2026-11-23")
    assert result.exit_code == 2, result.output
    assert "overlaps issue 2 (draft, 2026-11-16 00:00 → 2026-11-24 00:00)" in result.stderr
    assert json.loads(cli("issue", "list", "--json").stdout)[-1]["status"] == "cancelled"


def test_cli_build_template_error_names_file_and_line_and_still_writes_the_manifest(cli, tmp_path):
    mine = tmp_path / "mine" / "partials"
    mine.mkdir(parents=True)
    bundled = (ROOT / "templates" / "partials" / "item.mjml.j2").read_text()
    (mine / "item.mjml.j2").write_text(bundled.replace("{{ m.title(item) }}", "{{ m.title(item) }"))
    config = tmp_path / "digest.toml"
    config.write_text('templates_dir = "mine"\n' + config.read_text())  # a top-level key goes first
    manifest = tmp_path / "manifest.json"
    result = cli("build", "--since", "2026-11-16", "--until", "2026-11-23", "--json", str(manifest))
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert f"error: template error: {mine / 'item.mjml.j2'}:4: " in result.stderr
    assert "Traceback" not in result.output
    assert json.loads(manifest.read_text())["issue"]["number"] == 1
    assert json.loads(cli("issue", "list", "--json").stdout)[0]["number"] == 1


def test_cli_build_checks_the_size_in_every_language_subscribers_read(cli, tmp_path, sqlite_url):
    from digest.models import Subscriber, SubscriberStatus
    from digest.render import TOKEN_RESERVE_BYTES, full_segment, render_edition
    from digest.store.subscribers import add_subscriber

    engine = open_store(sqlite_url)
    add_subscriber(engine, Subscriber(email="marie@example.com", language="fr", status=SubscriberStatus.CONFIRMED))
    add_subscriber(engine, Subscriber(email="jonas@example.com", language="de", status=SubscriberStatus.PENDING))
    assert cli("build", "--since", "2026-11-16", "--until", "2026-11-23").exit_code == 0
    # A budget the English edition fits and the (longer) French one does not.
    settings = make_settings(tmp_path, sqlite_url)
    issue = get_issue(engine, 1)
    engine.dispose()
    en, fr = (render_edition(issue, full_segment(issue, lang), settings).html_bytes for lang in ("en", "fr"))
    max_kib = math.ceil((en + TOKEN_RESERVE_BYTES) / 1024)
    assert fr > max_kib * 1024 - TOKEN_RESERVE_BYTES, (en, fr)  # the case this test is about
    with (tmp_path / "digest.toml").open("a", encoding="utf-8") as config:
        config.write(f"[digest]\nmax_html_kib = {max_kib}\n")
    result = cli("build", "--since", "2026-11-16", "--until", "2026-11-23")
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes and all("edition all (fr)" in n for n in notes), notes  # en fits; nobody confirmed reads de


def test_cli_a_sent_issues_manifest_has_no_segments_from_todays_subscribers(cli, sqlite_url):
    assert cli("build", "--since", "2026-11-16", "--until", "2026-11-23").exit_code == 0
    assert "segments" in json.loads(cli("issue", "show", "1", "--json").stdout)
    engine = open_store(sqlite_url)
    send(engine, 1)
    with engine.connect() as conn:
        stored = conn.execute(select(issues_table.c.manifest)).scalar_one()
    engine.dispose()
    shown = json.loads(cli("issue", "show", "1", "--json").stdout)
    assert "segments" not in shown and shown["sections"] == stored["sections"]
    assert shown["issue"]["status"] == "sent"
