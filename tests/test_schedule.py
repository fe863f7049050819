"""The scheduler's decisions with a controlled clock, on SQLite and PostgreSQL: cron, builds once per
fire time, empty weeks, auto-approve, due and stale sends, the start-up reconciler, the job store,
the scheduler lock, staff notes, `digest status` and the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from admin_fixtures import READERS, admin_store, set_next_run
from click.testing import CliRunner
from compose_fixtures import NOW, feeds_config
from conftest import make_settings

from digest.cli import main
from digest.config import ConfigError
from digest.models import IssueStatus
from digest.passwords import verify_password
from digest.pipeline import issues as pipeline_issues
from digest.pipeline import sending as pipeline_sending
from digest.pipeline import weekly
from digest.pipeline.sending import send_due_issues
from digest.pipeline.status import collect_status, status_as_dict
from digest.pipeline.weekly import build_for_week as build_for
from digest.schedule import ensure_jobs, make_scheduler, reconcile
from digest.store import open_store
from digest.store.issues import approve_issue, get_issue, get_summary, set_status
from digest.store.locks import SchedulerLock
from digest.store.runs import recent_runs, record_run, set_send_time
from digest.timetable import crontab_trigger, last_fire_time

BRUSSELS = ZoneInfo("Europe/Brussels")
MONDAY_9 = datetime(2026, 11, 23, 9, 0, tzinfo=BRUSSELS)  # NOW is the window end, 23 Nov 00:00


def outbox(store) -> list:
    return sorted(store.settings.resolve_path(store.settings.delivery.outbox_dir).glob("*.eml"))


def notes(engine, job=None, outcome=None) -> list:
    return [n for n in recent_runs(engine, limit=500, job=job) if outcome is None or n.outcome == outcome]


# --- cron --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("expr, weekday", [("0 9 * * mon", 0), ("0 9 * * 1", 0), ("0 9 * * 0", 6), ("0 9 * * 7", 6),
                                            ("0 9 * * 5", 4), ("0 9 * * sun", 6)])
def test_crontab_weekdays_count_the_cron_way(expr, weekday):
    fire = crontab_trigger(expr, BRUSSELS).get_next_fire_time(None, datetime(2026, 11, 25, tzinfo=BRUSSELS))
    assert fire.weekday() == weekday and (fire.hour, fire.minute) == (9, 0)


def test_crontab_ranges_and_steps():
    trigger = crontab_trigger("30 7 * * 1-5", BRUSSELS)
    start = datetime(2026, 11, 27, 8, tzinfo=BRUSSELS)  # a Friday, after 07:30
    fires = [trigger.get_next_fire_time(None, start + timedelta(days=d)) for d in range(3)]
    assert [f.weekday() for f in fires] == [0, 0, 0]  # Sat, Sun, Mon all lead to Monday
    assert crontab_trigger("0 9 * * */2", BRUSSELS).get_next_fire_time(
        None, datetime(2026, 11, 23, 10, tzinfo=BRUSSELS)).weekday() == 1  # Tue (cron 2)
    assert crontab_trigger("0 9 * * 0-6", BRUSSELS).get_next_fire_time(
        None, datetime(2026, 11, 23, 10, tzinfo=BRUSSELS)).weekday() == 1


@pytest.mark.parametrize("expr", ["0 9 * *", "61 9 * * mon", "0 9 * * funday", "every monday"])
def test_a_bad_cron_is_a_config_error_naming_the_key(expr):
    with pytest.raises(ConfigError, match="schedule.cron"):
        crontab_trigger(expr, BRUSSELS, "schedule.cron")


def test_cron_follows_the_site_timezone_across_dst():
    trigger = crontab_trigger("0 9 * * mon", BRUSSELS)
    summer = trigger.get_next_fire_time(None, datetime(2026, 7, 1, tzinfo=BRUSSELS))
    winter = trigger.get_next_fire_time(None, datetime(2026, 12, 1, tzinfo=BRUSSELS))
    assert summer.astimezone(UTC).hour == 7 and winter.astimezone(UTC).hour == 8


def test_last_fire_time():
    trigger = crontab_trigger("0 9 * * mon", BRUSSELS)
    assert last_fire_time(trigger, MONDAY_9 + timedelta(days=2)) == MONDAY_9.astimezone(UTC)
    assert last_fire_time(trigger, MONDAY_9) == MONDAY_9.astimezone(UTC)  # at the very instant
    assert last_fire_time(trigger, MONDAY_9 - timedelta(seconds=1)) == (MONDAY_9 - timedelta(days=7)).astimezone(UTC)
    hourly = crontab_trigger("15 * * * *", BRUSSELS)
    assert last_fire_time(hourly, datetime(2026, 11, 23, 10, 20, tzinfo=BRUSSELS)) == \
        datetime(2026, 11, 23, 10, 15, tzinfo=BRUSSELS).astimezone(UTC)


# --- building ----------------------------------------------------------------------------------------

@pytest.fixture
def store(tmp_path, store_url):
    """Fixture feeds ingested, no issue yet, three confirmed readers."""
    return admin_store(tmp_path, store_url, build=False,
                       schedule={"cron": "0 0 * * mon", "send_cron": "0 11 * * mon"})


def test_a_scheduled_build_runs_once_per_fire_time(store):
    fire = NOW.astimezone(UTC)
    number = build_for(store.settings, store.engine, fire, NOW + timedelta(minutes=5))
    assert number == 1
    assert get_issue(store.engine, 1).window.end == NOW
    assert build_for(store.settings, store.engine, fire, NOW + timedelta(hours=1)) is None
    assert len(notes(store.engine, "build", "built")) == 1
    assert get_summary(store.engine, 1).status == IssueStatus.DRAFT


def test_an_empty_week_is_skipped_and_said_so(tmp_path, store_url):
    settings = make_settings(tmp_path, store_url)  # no feeds, nothing stored
    engine = open_store(settings.store.url)
    fire = NOW.astimezone(UTC)
    assert build_for(settings, engine, fire, NOW) is None
    (note,) = notes(engine, "build")
    assert note.outcome == "skipped" and "nothing new" in note.detail and note.scheduled_for == fire
    assert build_for(settings, engine, fire, NOW) is None  # recorded: not tried again
    assert len(notes(engine, "build")) == 1
    status = collect_status(settings, engine, NOW)
    assert status.draft is None and "week skipped" in status.runs[0].detail


def test_a_failed_build_is_noted_and_retried_later(store, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(weekly, "build_issue", broken)
    with pytest.raises(RuntimeError):
        build_for(store.settings, store.engine, NOW.astimezone(UTC), NOW)
    (note,) = notes(store.engine, "build")
    assert note.outcome == "error" and "disk full" in note.detail
    monkeypatch.undo()
    assert build_for(store.settings, store.engine, NOW.astimezone(UTC), NOW) == 1


def test_auto_approve_sends_at_once_and_only_once(tmp_path, store_url):
    store = admin_store(tmp_path, store_url, build=False, schedule={"auto_approve": True})
    build_for(store.settings, store.engine, NOW.astimezone(UTC), NOW)
    summary = get_summary(store.engine, 1)
    assert summary.status == IssueStatus.SENT and summary.approved_by == "auto-approve"
    assert len(outbox(store)) == len(READERS)
    send_due_issues(store.settings, store.engine, NOW + timedelta(days=1))
    assert len(outbox(store)) == len(READERS)


def test_staff_are_told_with_the_preview_link(tmp_path, store_url, smtp_server):
    store = admin_store(tmp_path, store_url, build=False,
                        schedule={"staff": ["comms@example.org", "Editor <ed@example.org>"]},
                        web={"base_url": "https://digest.example.org"},
                        delivery={"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port}})
    build_for(store.settings, store.engine, NOW.astimezone(UTC), NOW)
    (note,) = smtp_server.for_recipient("comms@example.org")
    assert "draft 1 is ready" in note["Subject"]
    assert "https://digest.example.org/admin/issues/1" in note.get_content()
    assert smtp_server.for_recipient("ed@example.org")
    assert notes(store.engine, "notify", "notified")


def test_a_failing_staff_note_does_not_undo_the_build(tmp_path, store_url, smtp_server):
    smtp_server.replies["comms@example.org"] = ["550 no such user"]
    store = admin_store(tmp_path, store_url, build=False, schedule={"staff": ["comms@example.org"]},
                        delivery={"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port}})
    assert build_for(store.settings, store.engine, NOW.astimezone(UTC), NOW) == 1
    (note,) = notes(store.engine, "notify")
    assert note.outcome == "notify-failed" and "550" in note.detail


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_a_server_refusing_the_sender_of_the_staff_note_is_noted(tmp_path, store_url):
    from conftest import start_smtp_server
    from test_transports import authenticator

    server, controller = start_smtp_server(authenticator=authenticator, auth_required=True, auth_require_tls=False)
    try:  # 530 at MAIL FROM: a failed result for the note, not an exception escaping the finished build
        store = admin_store(tmp_path, store_url, build=False, schedule={"staff": ["comms@example.org"]},
                            delivery={"transport": "smtp", "smtp": {"host": server.host, "port": server.port}})
        assert build_for(store.settings, store.engine, NOW.astimezone(UTC), NOW) == 1
    finally:
        controller.stop()
    (note,) = notes(store.engine, "notify")
    assert note.outcome == "notify-failed" and "refuses the sender digest@example.org: 530" in note.detail


def test_smtp_settings_that_cannot_work_are_noted_for_the_staff_note(tmp_path, store_url, smtp_server, monkeypatch):
    monkeypatch.delenv("TEST_SMTP_PASSWORD", raising=False)
    store = admin_store(tmp_path, store_url, build=False, schedule={"staff": ["comms@example.org"]},
                        delivery={"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port,
                                                                "username": "digest",
                                                                "password_env": "TEST_SMTP_PASSWORD"}})
    assert build_for(store.settings, store.engine, NOW.astimezone(UTC), NOW) == 1  # TransportError: noted
    (note,) = notes(store.engine, "notify")
    assert note.outcome == "notify-failed" and "$TEST_SMTP_PASSWORD is empty" in note.detail
    assert smtp_server.received == []


# --- sending -----------------------------------------------------------------------------------------

def approved(store, at: datetime) -> int:
    """Build draft 1 at `at` and approve it then."""
    build_for(store.settings, store.engine, NOW.astimezone(UTC), at)
    issue = get_issue(store.engine, 1)
    approve_issue(store.engine, 1, by="Anna", version=issue.version, now=at)
    return 1


def test_an_approved_issue_goes_at_the_send_time_not_before(store):
    approved(store, NOW + timedelta(hours=1))
    send_time = datetime(2026, 11, 23, 11, tzinfo=BRUSSELS)  # send_cron: Monday 11:00
    assert send_due_issues(store.settings, store.engine, send_time - timedelta(minutes=1)) == []
    assert get_summary(store.engine, 1).status == IssueStatus.APPROVED
    assert send_due_issues(store.settings, store.engine, send_time) == [1]
    assert get_summary(store.engine, 1).status == IssueStatus.SENT
    assert send_due_issues(store.settings, store.engine, send_time + timedelta(minutes=1)) == []
    assert len(outbox(store)) == len(READERS)


def test_a_draft_is_never_sent(store):
    build_for(store.settings, store.engine, NOW.astimezone(UTC), NOW)
    assert send_due_issues(store.settings, store.engine, NOW + timedelta(days=3)) == []
    assert outbox(store) == []


def test_a_stale_send_waits_for_a_fresh_approval(store):
    approved(store, NOW + timedelta(hours=1))
    send_time = datetime(2026, 11, 23, 11, tzinfo=BRUSSELS)
    late = send_time + timedelta(hours=store.settings.schedule.stale_after_hours + 1)
    assert send_due_issues(store.settings, store.engine, late) == []
    summary = get_summary(store.engine, 1)
    assert summary.status == IssueStatus.DRAFT and summary.approved_by is None
    (held,) = notes(store.engine, "send", "held")
    assert "missed its send time" in held.detail and "approve it again" in held.detail
    assert outbox(store) == []
    # approving again is a fresh decision: it goes at once
    approve_issue(store.engine, 1, by="Anna", version=get_issue(store.engine, 1).version, now=late)
    assert send_due_issues(store.settings, store.engine, late + timedelta(minutes=1)) == [1]
    assert len(outbox(store)) == len(READERS)


def test_send_outlook_is_the_one_rule_for_when_an_issue_goes(tmp_path):
    """What the send job, the admin issue page and approval all go by: at its time, at once, or held as stale."""
    from digest.store.runs import IssueTiming
    from digest.timetable import SendWhen, send_outlook

    settings = make_settings(tmp_path)
    built = datetime(2026, 11, 23, 1, tzinfo=BRUSSELS)
    send_time = datetime(2026, 11, 23, 11, tzinfo=BRUSSELS)  # the first send_cron (Monday 11:00) after the build
    stale = timedelta(hours=settings.schedule.stale_after_hours)

    def outlook(status: str, now: datetime, approved_at: datetime | None = None):
        timing = IssueTiming(number=1, status=status, created_at=built.astimezone(UTC), window_end=built,
                             approved_at=approved_at, send_at=None, sent_at=None)
        return send_outlook(settings, timing, now)

    ahead = outlook("draft", send_time - timedelta(minutes=1))
    assert (ahead.when, ahead.due) == (SendWhen.AT_SEND_TIME, send_time)
    assert outlook("approved", send_time, approved_at=built).when == SendWhen.AT_ONCE
    assert outlook("approved", send_time + stale, approved_at=built).when == SendWhen.AT_ONCE  # the limit itself
    held = outlook("approved", send_time + stale + timedelta(minutes=1), approved_at=built)
    assert (held.when, held.due, held.late) == (SendWhen.AFTER_FRESH_APPROVAL, send_time, stale + timedelta(minutes=1))
    # Approving after the send time is a fresh decision: lateness counts from the approval ...
    late_approval = send_time + 2 * stale
    assert outlook("approved", late_approval + timedelta(hours=1), approved_at=late_approval).when == SendWhen.AT_ONCE
    # ... so a draft, approved now however late, goes at once.
    assert outlook("draft", send_time + 10 * stale).when == SendWhen.AT_ONCE


def test_an_explicit_send_time_wins_over_send_cron(store):
    approved(store, NOW + timedelta(hours=1))
    own = datetime(2026, 11, 24, 15, tzinfo=BRUSSELS)
    assert set_send_time(store.engine, 1, own.astimezone(UTC))
    assert send_due_issues(store.settings, store.engine, datetime(2026, 11, 23, 12, tzinfo=BRUSSELS)) == []
    assert send_due_issues(store.settings, store.engine, own) == [1]


def test_a_failing_send_is_noted_and_others_still_go(store, monkeypatch):
    approved(store, NOW + timedelta(hours=1))

    def broken(*args, **kwargs):
        raise OSError("connection refused")

    monkeypatch.setattr(pipeline_sending, "send_issue", broken)
    assert send_due_issues(store.settings, store.engine, datetime(2026, 11, 23, 11, tzinfo=BRUSSELS)) == []
    (note,) = notes(store.engine, "send", "error")
    assert "connection refused" in note.detail


# --- the start-up reconciler ---------------------------------------------------------------------------

def test_reconcile_builds_a_missed_window_once(store):
    store_settings = store.settings
    after = NOW + timedelta(hours=30)  # the machine was down at the build time
    reconcile(store_settings, store.engine, after)
    reconcile(store_settings, store.engine, after + timedelta(minutes=1))
    assert len(notes(store.engine, "build", "built")) == 1
    assert get_issue(store.engine, 1).window.end == NOW


def test_reconcile_leaves_a_build_older_than_the_grace_time(store):
    late = NOW + timedelta(hours=store.settings.schedule.misfire_grace_hours + 1)
    reconcile(store.settings, store.engine, late)
    assert get_issue(store.engine, 1) is None
    (note,) = notes(store.engine, "build")
    assert note.outcome == "missed" and "misfire_grace_hours" in note.detail


def built_by_hand(store, until: datetime, send: bool) -> int:
    """Staff build (and approve, and maybe send) an issue whose window reaches past the cron fire time."""
    issue = pipeline_issues.build_issue(store.settings, store.engine, now=until, until=until)
    approve_issue(store.engine, issue.number, by="Anna", version=issue.version, now=until)
    if send:
        pipeline_sending.send_issue(store.settings, store.engine, issue.number)
    return issue.number


@pytest.mark.parametrize("send", [True, False], ids=["sent", "approved"])
def test_a_start_after_an_issue_built_by_hand_reaches_the_fire_time_builds_nothing(store, send):
    """A manual build ending after the cron fire time: no empty-window error, no shrunk issue, status says why."""
    by_hand = NOW + timedelta(hours=2)
    number = built_by_hand(store, by_hand, send)
    reconcile(store.settings, store.engine, by_hand + timedelta(minutes=10))  # within the grace time
    assert notes(store.engine, "build", "error") == []
    (note,) = notes(store.engine, "build")
    assert note.outcome == "skipped" and f"issue {number}" in note.detail and "already covers" in note.detail
    issue = get_issue(store.engine, number)
    assert issue.window.end == by_hand  # not shrunk back to the fire time
    assert get_summary(store.engine, number).status == (IssueStatus.SENT if send else IssueStatus.APPROVED)
    status = collect_status(store.settings, store.engine, by_hand + timedelta(minutes=10))
    assert status.runs[0].outcome == "skipped" and "already covers" in status.runs[0].detail
    reconcile(store.settings, store.engine, by_hand + timedelta(minutes=20))  # noted once: a done fire time
    assert len(notes(store.engine, "build")) == 1


def test_a_fire_time_past_the_grace_time_covered_by_hand_is_not_called_missed(store):
    by_hand = NOW + timedelta(hours=2)
    number = built_by_hand(store, by_hand, send=True)
    reconcile(store.settings, store.engine, NOW + timedelta(hours=store.settings.schedule.misfire_grace_hours + 1))
    (note,) = notes(store.engine, "build")
    assert note.outcome == "skipped" and f"issue {number}" in note.detail


def test_a_cancelled_issue_covers_nothing(store):
    by_hand = NOW + timedelta(hours=2)
    number = built_by_hand(store, by_hand, send=False)
    pipeline_issues.cancel_issue(store.engine, number)
    reconcile(store.settings, store.engine, by_hand + timedelta(minutes=10))
    assert [n.outcome for n in notes(store.engine, "build")] == ["built"]


def test_reconcile_resumes_an_interrupted_send(store):
    approved(store, NOW + timedelta(hours=1))
    set_status(store.engine, 1, IssueStatus.SENDING)  # the process died after starting to send
    reconcile(store.settings, store.engine, NOW + timedelta(hours=2))
    assert get_summary(store.engine, 1).status == IssueStatus.SENT
    assert len(outbox(store)) == len(READERS)


def test_reconcile_sends_a_due_issue(store):
    approved(store, NOW + timedelta(hours=1))
    reconcile(store.settings, store.engine, datetime(2026, 11, 23, 12, tzinfo=BRUSSELS))
    assert get_summary(store.engine, 1).status == IssueStatus.SENT


# --- the job store and the lock ---------------------------------------------------------------------

def test_a_restart_keeps_a_missed_run_time_in_the_job_store(store):
    config = str(store.settings.base_dir / "digest.toml")
    first = make_scheduler(store.settings, store.engine)
    first.start(paused=True)
    ensure_jobs(first, store.settings, config)
    fetch_at = first.get_job("fetch").next_run_time
    first.shutdown(wait=False)
    missed = datetime.now(UTC) - timedelta(hours=2)
    set_next_run(store.settings, store.engine, "build", missed)
    second = make_scheduler(store.settings, store.engine)
    second.start(paused=True)
    ensure_jobs(second, store.settings, config)
    job = second.get_job("build")
    assert abs(job.next_run_time - missed) < timedelta(seconds=1)  # still due: it runs once on resume
    assert job.coalesce and job.misfire_grace_time == store.settings.schedule.misfire_grace_hours * 3600
    assert {j.id for j in second.get_jobs()} == {"fetch", "build", "send", "send-due"}
    assert second.get_job("fetch").next_run_time == fetch_at  # an interval is not restarted either
    second.shutdown(wait=False)


def test_a_changed_cron_replaces_the_stored_job(store):
    config = str(store.settings.base_dir / "digest.toml")
    first = make_scheduler(store.settings, store.engine)
    first.start(paused=True)
    ensure_jobs(first, store.settings, config)
    first.shutdown(wait=False)
    from dataclasses import replace

    changed = replace(store.settings, schedule=replace(store.settings.schedule, cron="0 7 * * fri"))
    second = make_scheduler(changed, store.engine)
    second.start(paused=True)
    ensure_jobs(second, changed, config)
    fire = second.get_job("build").next_run_time
    assert fire.weekday() == 4 and fire.hour == 7
    second.shutdown(wait=False)


def test_only_one_scheduler_holds_the_lock(store):
    first, second = SchedulerLock(store.engine, 30), SchedulerLock(store.engine, 30)
    assert collect_status(store.settings, store.engine, NOW).scheduler is None
    assert first.acquire()
    assert not second.acquire()
    shown = collect_status(store.settings, store.engine, NOW).scheduler
    assert shown == first.holder or "PostgreSQL session pid" in shown
    assert first.renew()
    first.release()
    assert second.acquire()
    assert not first.acquire()
    second.release()


def test_a_standby_takes_over_an_expired_sqlite_lease(tmp_path, sqlite_url):
    engine = open_store(sqlite_url)
    first, second = SchedulerLock(engine, 0.3), SchedulerLock(engine, 0.3)
    assert first.acquire()  # and then its host vanished: it never renews
    assert not second.acquire()
    import time

    time.sleep(0.4)
    assert second.acquire()
    assert not first.renew()  # the old holder learns it lost the lock and stops acting


# --- status ------------------------------------------------------------------------------------------

def test_status_shows_next_runs_draft_last_sent_feeds_and_notes(store):
    before = collect_status(store.settings, store.engine, NOW)
    assert [r.job for r in before.next_runs] == ["fetch", "build", "send"]
    assert all(r.source == "settings" for r in before.next_runs)
    assert before.draft is None and before.last_sent is None
    assert [f.name for f in before.feeds] == [f.name for f in store.settings.feeds]
    assert before.feeds[0].last_success_at is not None
    approved(store, NOW + timedelta(hours=1))
    send_due_issues(store.settings, store.engine, datetime(2026, 11, 23, 11, tzinfo=BRUSSELS))
    after = collect_status(store.settings, store.engine, NOW + timedelta(days=1))
    assert after.last_sent.issue.number == 1 and after.last_sent.deliveries["sent"] == len(READERS)
    assert after.last_sent.issue.approved_by == "Anna"
    assert after.runs[0].outcome == "sent" and after.runs[0].issue_number == 1
    data = json.loads(json.dumps(status_as_dict(after)))
    assert data["last_sent"]["deliveries"]["sent"] == len(READERS)


def test_a_skipped_week_stays_in_status_when_fetch_notes_pile_up(tmp_path, store_url):
    config = write_config(tmp_path, store_url)
    settings = make_settings(tmp_path, store_url)  # no feeds: the week is empty
    engine = open_store(settings.store.url)
    assert build_for(settings, engine, NOW.astimezone(UTC), NOW) is None
    for n in range(1, 16):  # two and a half days of fetches every 4 hours
        record_run(engine, "fetch", "fetched", "0 feeds, 0 with errors", now=NOW + timedelta(hours=4 * n))
    status = collect_status(settings, engine, NOW + timedelta(days=3))
    assert {note.job for note in status.runs} == {"fetch"}  # the skip has left the recent notes
    assert status.last_build.outcome == "skipped" and "week skipped: nothing new" in status.last_build.detail
    runner = CliRunner()
    data = json.loads(runner.invoke(main, ["--config", config, "status", "--json"]).output)
    assert data["last_build"]["outcome"] == "skipped" and data["last_build"]["scheduled_for"] == NOW.astimezone(
        UTC).isoformat()
    text = runner.invoke(main, ["--config", config, "status"]).output
    assert "last build" in text and "skipped  week skipped: nothing new" in text
    (tmp_path / "new").mkdir()
    fresh = write_config(tmp_path / "new", f"sqlite:///{tmp_path / 'new' / 'digest.db'}")
    assert json.loads(runner.invoke(main, ["--config", fresh, "status", "--json"]).output)["last_build"] is None


def test_status_reads_next_runs_from_the_job_store(store):
    scheduler = make_scheduler(store.settings, store.engine)
    scheduler.start(paused=True)
    ensure_jobs(scheduler, store.settings, "digest.toml")
    scheduler.shutdown(wait=False)
    set_next_run(store.settings, store.engine, "build", datetime.now(UTC) - timedelta(hours=1))
    status = collect_status(store.settings, store.engine, datetime.now(UTC))
    build = next(r for r in status.next_runs if r.job == "build")
    assert build.source == "job store" and build.overdue


def test_feed_failures_show_in_status(tmp_path, store_url):
    feeds = feeds_config() + [{"name": "Broken", "url": str(tmp_path / "missing.xml"), "kind": "news"}]
    settings = make_settings(tmp_path, store_url, feeds=feeds)
    engine = open_store(settings.store.url)
    from digest.pipeline.ingest import fetch_all

    fetch_all(settings, engine)
    fetch_all(settings, engine)
    broken = next(f for f in collect_status(settings, engine, NOW).feeds if f.name == "Broken")
    assert broken.consecutive_failures == 2 and broken.last_error_at and broken.last_success_at is None


# --- the command line -----------------------------------------------------------------------------------

def write_config(tmp_path, store_url: str, extra: str = "") -> str:
    path = tmp_path / "digest.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n{extra}', encoding="utf-8")
    return str(path)


def test_digest_status_json_and_text(tmp_path, store_url):
    config = write_config(tmp_path, store_url)
    runner = CliRunner()
    result = runner.invoke(main, ["--config", config, "status", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {r["job"] for r in data["next_runs"]} == {"fetch", "build", "send"} and data["draft"] is None
    text = runner.invoke(main, ["--config", config, "status"])
    assert text.exit_code == 0 and "next runs" in text.output and "current draft" in text.output


def test_digest_run_refuses_a_bad_cron(tmp_path, sqlite_url):
    config = write_config(tmp_path, sqlite_url, '[schedule]\ncron = "0 25 * * mon"\n')
    result = CliRunner().invoke(main, ["--config", config, "run"])
    assert result.exit_code == 2 and "schedule.cron" in result.output


def test_digest_run_refuses_a_bad_staff_address(tmp_path, sqlite_url):
    config = write_config(tmp_path, sqlite_url, '[schedule]\nstaff = ["not an address"]\n')
    result = CliRunner().invoke(main, ["--config", config, "run"])
    assert result.exit_code == 2 and "schedule.staff" in result.output


def test_hash_password_prints_a_hash_that_verifies():
    result = CliRunner().invoke(main, ["admin", "hash-password", "--stdin"], input="a long passphrase\n")
    assert result.exit_code == 0
    encoded = result.output.strip()
    assert encoded.startswith("scrypt$") and verify_password("a long passphrase", encoded)
    assert not verify_password("another one", encoded)


def test_hash_password_refuses_a_short_password():
    result = CliRunner().invoke(main, ["admin", "hash-password", "--stdin"], input="short\n")
    assert result.exit_code == 2 and "at least 8" in result.output


def test_fetch_every_hours_must_be_positive(tmp_path, sqlite_url):
    config = write_config(tmp_path, sqlite_url, "[schedule]\nfetch_every_hours = 0\n")
    result = CliRunner().invoke(main, ["--config", config, "run"])
    assert result.exit_code == 2 and "schedule.fetch_every_hours" in result.output


def test_status_reports_an_unusable_cron_instead_of_failing(tmp_path, sqlite_url):
    settings = make_settings(tmp_path, sqlite_url, schedule={"send_cron": "0 9 * *"})
    engine = open_store(settings.store.url)
    status = collect_status(settings, engine, NOW)
    assert any("schedule.send_cron" in p for p in status.problems)
    assert next(r for r in status.next_runs if r.job == "send").at is None


@pytest.mark.parametrize("encoded", ["", "plain", "scrypt$15$8$1$!!$AAAA", "scrypt$40$8$1$AAAA$AAAA",
                                     "bcrypt$15$8$1$AAAA$AAAA", "scrypt$15$8$1$AAAA$"])
def test_a_malformed_password_hash_is_an_error_not_a_match(encoded):
    from digest.passwords import PasswordHashError

    with pytest.raises(PasswordHashError):
        verify_password("anything", encoded)
