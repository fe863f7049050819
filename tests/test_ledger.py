"""The delivery ledger and the store locks, on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from conftest import make_settings
from send_helpers import NOW, add_confirmed, add_many, approved_issue, sample_issue
from sqlalchemy import select, update

from digest.models import DeliveryStatus, IssueStatus, SubscriberStatus
from digest.store import open_store
from digest.store.issues import create_issue, get_issue
from digest.store.ledger import (
    LedgerError,
    SentMarks,
    claim_batch,
    finish_if_done,
    ledger_counts,
    mark_failed,
    mark_possibly_delivered,
    mark_sent,
    mark_skipped,
    next_retry_at,
    renew_claims,
    requeue_orphans,
    start_sending,
)
from digest.store.locks import (
    acquire_lock,
    advisory_lock,
    holder_is_dead,
    lock_holder,
    lock_owner,
    process_scope,
    release_lock,
    renew_lock,
)
from digest.store.schema import deliveries
from digest.store.subscribers import set_status


@pytest.fixture
def settings(tmp_path, store_url):
    return make_settings(tmp_path, store_url)


@pytest.fixture
def issue(engine, settings):
    return approved_issue(engine, settings)


def _rows(engine, number):
    with engine.connect() as conn:
        return {r.subscriber_id: r for r in conn.execute(select(deliveries).where(deliveries.c.issue_number == number))}


def test_start_sending_queues_confirmed_subscribers_once(engine, issue):
    confirmed = add_confirmed(engine, "a@example.net")
    add_confirmed(engine, "b@example.net")
    gone = add_confirmed(engine, "c@example.net")
    set_status(engine, gone.id, SubscriberStatus.UNSUBSCRIBED, NOW)
    assert start_sending(engine, issue, NOW) == 2
    assert get_issue(engine, issue).status == IssueStatus.SENDING
    assert start_sending(engine, issue, NOW) == 0  # a second sender adds nothing
    rows = _rows(engine, issue)
    assert set(rows) == {confirmed.id, confirmed.id + 1}
    assert {r.status for r in rows.values()} == {"queued"}


def test_drafts_and_unknown_issues_cannot_be_sent(engine, settings):
    draft = create_issue(engine, sample_issue(), {"issue": {}, "sections": []}, NOW)
    with pytest.raises(LedgerError, match="draft, not approved: approve it first"):
        start_sending(engine, draft.number, NOW)
    with pytest.raises(LedgerError, match="there is no issue 99"):
        start_sending(engine, 99, NOW)


def test_a_sent_issue_gets_rows_only_with_late(engine, issue):
    first = add_confirmed(engine, "early@example.net")
    start_sending(engine, issue, NOW)
    [claim] = claim_batch(engine, issue, "h", 10, NOW, 300)
    assert mark_sent(engine, issue, first.id, "h", "<1@example.org>", NOW)
    assert finish_if_done(engine, issue, NOW)
    assert get_issue(engine, issue).status == IssueStatus.SENT
    late = add_confirmed(engine, "late@example.net")
    assert start_sending(engine, issue, NOW) == 0
    assert start_sending(engine, issue, NOW, late=True) == 1
    assert _rows(engine, issue)[late.id].status == "queued"
    assert get_issue(engine, issue).status == IssueStatus.SENT  # the issue itself stays sent


def test_claims_are_disjoint_and_marked_sending(engine, issue):
    add_many(engine, 30)
    start_sending(engine, issue, NOW)
    first = claim_batch(engine, issue, "one", 10, NOW, 300)
    second = claim_batch(engine, issue, "two", 100, NOW, 300)
    assert len(first) == 10 and len(second) == 20
    assert not {c.subscriber.id for c in first} & {c.subscriber.id for c in second}
    rows = _rows(engine, issue)
    assert {rows[c.subscriber.id].claimed_by for c in first} == {"one"}
    assert {r.status for r in rows.values()} == {"sending"}
    assert claim_batch(engine, issue, "three", 10, NOW, 300) == []
    assert first[0].subscriber.email.endswith("@example.net") and first[0].attempts == 0


def test_concurrent_claims_never_share_a_row(engine, issue):
    add_many(engine, 200)
    start_sending(engine, issue, NOW)
    got: dict[str, list[int]] = {}

    def claim_all(holder: str) -> None:
        ids = []
        while batch := claim_batch(engine, issue, holder, 7, NOW, 300):
            ids += [c.subscriber.id for c in batch]
        got[holder] = ids

    threads = [threading.Thread(target=claim_all, args=(f"h{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [i for ids in got.values() for i in ids]
    assert len(claimed) == len(set(claimed)) == 200


def test_retries_become_due_and_stale_claims_are_taken_over(engine, issue):
    a = add_confirmed(engine, "a@example.net")
    b = add_confirmed(engine, "b@example.net")
    start_sending(engine, issue, NOW)
    claim_batch(engine, issue, "h", 10, NOW, 300)
    retry_at = NOW + timedelta(seconds=60)
    assert mark_failed(engine, issue, a.id, "h", DeliveryStatus.FAILED_TEMPORARY, "451 later", retry_at)
    assert next_retry_at(engine, issue) == retry_at
    assert claim_batch(engine, issue, "h2", 10, NOW + timedelta(seconds=30), 300) == []
    later = claim_batch(engine, issue, "h2", 10, NOW + timedelta(seconds=61), 300)
    assert [c.subscriber.id for c in later] == [a.id] and later[0].attempts == 1
    # b is still `sending` under "h": another sender takes it only once the claim is stale.
    assert claim_batch(engine, issue, "h3", 10, NOW + timedelta(seconds=200), 300) == []
    renew_claims(engine, issue, "h", NOW + timedelta(seconds=250))
    renew_claims(engine, issue, "h2", NOW + timedelta(seconds=250))
    assert claim_batch(engine, issue, "h3", 10, NOW + timedelta(seconds=400), 300) == []
    taken = claim_batch(engine, issue, "h3", 10, NOW + timedelta(seconds=600), 300)
    assert sorted(c.subscriber.id for c in taken) == [a.id, b.id]
    assert not mark_sent(engine, issue, b.id, "h", "<late@x.org>", NOW)  # the old holder lost it


def test_outcomes_and_finishing(engine, issue):
    subs = [add_confirmed(engine, f"s{i}@example.net") for i in range(4)]
    start_sending(engine, issue, NOW)
    claim_batch(engine, issue, "h", 10, NOW, 300)
    mark_sent(engine, issue, subs[0].id, "h", "<a@example.org>", NOW)
    mark_failed(engine, issue, subs[1].id, "h", DeliveryStatus.FAILED_PERMANENT, "550 no such user")
    mark_skipped(engine, issue, [subs[2].id], "h", "unsubscribed")
    assert not finish_if_done(engine, issue, NOW)
    assert requeue_orphans(engine, issue, lambda holder: holder == "h") == 1
    assert _rows(engine, issue)[subs[3].id].status == "queued"
    claim_batch(engine, issue, "h", 10, NOW, 300)
    mark_sent(engine, issue, subs[3].id, "h", "<d@example.org>", NOW)
    assert finish_if_done(engine, issue, NOW)
    counts = ledger_counts(engine, issue)
    assert counts["sent"] == 2 and counts["failed_permanent"] == 1 and counts["skipped"] == 1
    rows = _rows(engine, issue)
    assert rows[subs[0].id].attempts == 1 and rows[subs[0].id].message_id == "<a@example.org>"
    assert rows[subs[1].id].last_error == "550 no such user"


def test_sent_marks_write_what_mark_sent_writes_and_only_for_the_holder(engine, issue):
    subs = [add_confirmed(engine, f"m{i}@example.net") for i in range(3)]
    start_sending(engine, issue, NOW)
    claim_batch(engine, issue, "h", 10, NOW, 300)
    mark_sent(engine, issue, subs[0].id, "h", "<a@example.org>", NOW)
    with engine.connect() as conn:  # a sending thread's own connection
        marks = SentMarks(conn)
        try:
            assert marks.mark_sent(issue, subs[1].id, "h", "<b@example.org>", NOW)
            assert not marks.mark_sent(issue, subs[1].id, "h", "<b@example.org>", NOW)  # already sent
            assert not marks.mark_sent(issue, subs[2].id, "other", "<c@example.org>", NOW)  # not its claim
        finally:
            marks.close()
    rows = _rows(engine, issue)
    by_function, by_marks = rows[subs[0].id], rows[subs[1].id]
    assert by_marks.status == "sent" and by_marks.message_id == "<b@example.org>" and by_marks.attempts == 1
    assert by_marks.sent_at == by_function.sent_at == NOW and by_marks.next_attempt_at is None
    assert rows[subs[2].id].status == "sending"  # committed, not left in an open transaction
    assert ledger_counts(engine, issue)["sent"] == 2


def test_marking_a_row_looks_up_that_one_row_even_before_the_planner_has_statistics(engine, issue):
    """The database plans the per-message UPDATE as a lookup of (issue, subscriber), never as a scan of
    the issue's `sending` rows: with only (issue, status) indexed, PostgreSQL chose that scan for a
    fresh ledger, at a cost growing with the rows all senders hold claimed (migration 0011)."""
    from digest.store import ledger

    add_many(engine, 3000)  # far more pages than one lookup reads: no plan would scan the table instead
    start_sending(engine, issue, NOW)  # filled just now: no statistics gathered yet
    claim_batch(engine, issue, "h", 200, NOW, 300)
    compiled = ledger._MARK_SENT.compile(dialect=engine.dialect)
    params = compiled.construct_params({"n": issue, "sid": 5, "holder": "h", "at": NOW, "mid": "<m@example.org>"})
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN " + compiled.string, params))
            lookups = [line for line in plan.splitlines() if "Index Cond" in line]
            assert lookups and all("subscriber_id = " in line for line in lookups), plan
        else:
            values = [params[name] for name in compiled.positiontup]
            plan = " ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.string,
                                                                    tuple(values)))
            assert "subscriber_id=?" in plan and "issue_number=?" in plan, plan


# --- locks -----------------------------------------------------------------------------------------

def test_lease_lock_is_exclusive_until_released_or_expired(engine):
    assert acquire_lock(engine, "send", "alpha", 30, NOW)
    assert not acquire_lock(engine, "send", "beta", 30, NOW)
    assert lock_owner(engine, "send") == "alpha"
    assert acquire_lock(engine, "send", "alpha", 30, NOW)  # re-acquiring is a renewal
    assert renew_lock(engine, "send", "alpha", 30, NOW + timedelta(seconds=20))
    assert not acquire_lock(engine, "send", "beta", 30, NOW + timedelta(seconds=40))
    assert acquire_lock(engine, "send", "beta", 30, NOW + timedelta(seconds=51))  # expired: taken over
    assert not renew_lock(engine, "send", "alpha", 30, NOW)
    release_lock(engine, "send", "alpha")  # not the holder: harmless
    assert lock_owner(engine, "send") == "beta"
    release_lock(engine, "send", "beta")
    assert lock_owner(engine, "send") is None
    assert acquire_lock(engine, "send", "gamma", 30, NOW)


def test_a_dead_local_holder_is_taken_over_at_once(engine):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    host, scope = socket.gethostname(), process_scope()
    dead = f"send@{host}:{child.pid}:{scope}:abcd1234"  # the shape lock_holder() makes
    assert lock_holder("send").rsplit(":", 2)[0] == f"send@{host}:{os.getpid()}"
    assert lock_holder("send").rsplit(":", 2)[1] == scope
    assert not holder_is_dead(dead)
    assert acquire_lock(engine, "send", dead, 600, NOW)
    assert not acquire_lock(engine, "send", lock_holder(), 600, NOW)
    child.kill()
    child.wait()
    assert holder_is_dead(dead)
    # The same host name and pid in another PID namespace or boot (another container): not judged.
    assert not holder_is_dead(f"send@{host}:{child.pid}:0000beef:abcd1234")
    assert not holder_is_dead(f"send@{host}:{child.pid}:abcd1234")  # older holders name no scope
    assert acquire_lock(engine, "send", lock_holder(), 600, NOW)
    assert not holder_is_dead(f"somebody@other-host:{child.pid}:{scope}:abcd")
    assert not holder_is_dead("not a holder name")


def test_the_process_scope_names_this_boot_and_pid_namespace():
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as boot:
        expected = f"{boot.read().strip()}|{os.stat('/proc/self/ns/pid').st_ino}"
    assert process_scope() == hashlib.sha256(expected.encode()).hexdigest()[:8]
    # A child in the same namespace has the same scope, so it can tell when its parent's holder died.
    child = subprocess.run([sys.executable, "-c", "from digest.store.locks import process_scope; "
                            "print(process_scope())"], capture_output=True, text=True, check=True)
    assert child.stdout.strip() == process_scope()


def test_a_holder_in_another_pid_namespace_is_never_taken_for_dead():
    # A container sharing this host name: its pids mean other processes than ours.
    try:
        other = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-c",
                                "from digest.store.locks import lock_holder; print(lock_holder('send'))"],
                               capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no unshare(1) here")
    if other.returncode != 0:
        pytest.skip(f"cannot create a PID namespace here: {other.stderr.strip()[:200]}")
    role_host, pid, scope, suffix = other.stdout.strip().rsplit(":", 3)
    assert pid == "1" and scope != process_scope()
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that runs nothing here
    assert not holder_is_dead(f"{role_host}:{gone.pid}:{scope}:{suffix}")
    assert holder_is_dead(f"{role_host}:{gone.pid}:{process_scope()}:{suffix}")


@pytest.mark.postgres
def test_advisory_lock_is_exclusive_and_ends_with_its_session(postgres_url):
    engine = open_store(postgres_url)
    other = open_store(postgres_url, migrate=False)
    try:
        with advisory_lock(engine, "scheduler") as held:
            assert held
            with advisory_lock(other, "scheduler") as second:
                assert not second
        with advisory_lock(other, "scheduler") as again:
            assert again
    finally:
        engine.dispose()
        other.dispose()


def test_advisory_lock_needs_postgres(sqlite_url):
    engine = open_store(sqlite_url)
    with pytest.raises(ValueError, match="use acquire_lock"):
        with advisory_lock(engine, "scheduler"):
            pass


def test_claims_by_a_subscriber_changed_to_unconfirmed_carry_their_status(engine, issue):
    a = add_confirmed(engine, "a@example.net")
    start_sending(engine, issue, NOW)
    set_status(engine, a.id, SubscriberStatus.UNSUBSCRIBED, NOW)
    [claim] = claim_batch(engine, issue, "h", 10, NOW, 300)
    assert claim.subscriber.status == SubscriberStatus.UNSUBSCRIBED
    with engine.begin() as conn:
        conn.execute(update(deliveries).values(claimed_by=None))
    assert requeue_orphans(engine, issue, lambda holder: False) == 1  # a holder-less claim is an orphan


def test_an_approval_taken_back_while_sending_starts_sends_nothing(engine, issue, monkeypatch):
    import digest.store.ledger as ledger
    from digest.store.issues import set_status as set_issue_status

    add_confirmed(engine, "a@example.net")

    def staff_reopen_first(engine_, number, status, now):
        set_issue_status(engine_, number, IssueStatus.DRAFT, now)  # the staff's click lands first
        return set_issue_status(engine_, number, status, now)

    monkeypatch.setattr(ledger, "set_issue_status", staff_reopen_first)
    with pytest.raises(LedgerError, match="issue 1 became draft while sending started"):
        start_sending(engine, issue, NOW)
    assert get_issue(engine, issue).status == IssueStatus.DRAFT


# --- possibly delivered ----------------------------------------------------------------------------

def test_a_possibly_delivered_row_is_resent_once_then_final(engine, issue):
    [subscriber] = [add_confirmed(engine, "maybe@example.net")]
    start_sending(engine, issue, NOW)
    [claim] = claim_batch(engine, issue, "h", 10, NOW, 300)
    assert not claim.possibly_delivered
    assert mark_possibly_delivered(engine, issue, subscriber.id, "h", "possibly delivered: lost", NOW,
                                   NOW + timedelta(seconds=60))
    assert claim_batch(engine, issue, "h", 10, NOW + timedelta(seconds=30), 300) == []  # never at once
    [again] = claim_batch(engine, issue, "h", 10, NOW + timedelta(seconds=61), 300)
    assert again.possibly_delivered and again.attempts == 1
    assert mark_possibly_delivered(engine, issue, subscriber.id, "h", "possibly delivered: lost again",
                                   NOW + timedelta(seconds=61), None)
    counts = ledger_counts(engine, issue)
    assert (counts["possibly_delivered"], counts["failed_temporary"]) == (1, 0)
    assert finish_if_done(engine, issue, NOW)  # a final state: the issue is done
    [row] = _rows(engine, issue).values()
    assert row.attempts == 2 and row.possibly_delivered_at == NOW  # the first loss is kept


def test_migration_0004_keeps_the_ledger_and_downgrades_possibly_delivered_to_sent(store_url, tmp_path):
    from alembic import command

    from digest.store.migrate import alembic_config

    engine = open_store(store_url)
    number = approved_issue(engine, make_settings(tmp_path, store_url))
    add_many(engine, 3)
    start_sending(engine, number, NOW)
    with engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.subscriber_id == 1)
                     .values(status="possibly_delivered", possibly_delivered_at=NOW))
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with engine.connect() as conn:
        rows = {row.subscriber_id: row.status for row in conn.execute(select(deliveries.c.subscriber_id,
                                                                             deliveries.c.status))}
    assert rows == {1: "sent", 2: "queued", 3: "queued"}
    engine.dispose()
    engine = open_store(store_url)  # upgraded again on open
    try:
        assert ledger_counts(engine, number)["queued"] == 2
        assert [row.possibly_delivered_at for row in _rows(engine, number).values()] == [None] * 3
    finally:
        engine.dispose()
