"""delivery.late_subscribers: a reader who confirms after an issue went out gets it once, through the ledger.

End to end on SQLite and PostgreSQL: the issue goes to aiosmtpd, a reader signs up and confirms
through the real app, and the issue reaches them from the confirmation's background task; the
scheduler's send pass and a worker pass take a row the web process could not send.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from send_helpers import MARKERS, NOW, add_confirmed, approved_issue, smtp_settings
from starlette.testclient import TestClient

from digest.config import ConfigError, load_settings
from digest.models import IssueStatus, Subscriber, SubscriberStatus
from digest.pipeline.sending import send_due_issues, send_issue, work_pending
from digest.pipeline.signup import confirm_subscription
from digest.signing import confirm_url
from digest.store import ledger, signups
from digest.store import subscribers as store
from digest.store.issues import get_issue
from digest.web.app import create_app

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
CONFIRM_RE = re.compile(r"https://digest\.example\.org(/confirm/\S+)")
DIGEST_MARKER = MARKERS["esa-security-defence"]


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "late-test-secret")


def sent_issue(settings, engine) -> int:
    """An issue sent to one existing reader; returns its number."""
    add_confirmed(engine, "early@example.net")
    number = approved_issue(engine, settings)
    send_issue(settings, engine, number)
    assert get_issue(engine, number).status == IssueStatus.SENT
    return number


def digests_to(smtp_server, address: str) -> list:
    return [m for m in smtp_server.for_recipient(address) if DIGEST_MARKER in m.get_body(("plain",)).get_content()]


def sign_up_and_confirm(client: TestClient, smtp_server, email: str):
    page = client.get("/subscribe")
    answer = client.post("/subscribe", data={"csrf_token": CSRF_RE.search(page.text).group(1), "email": email,
                                             "name": "", "language": "en"})
    assert answer.status_code == 200
    (mail,) = smtp_server.for_recipient(email)
    path = CONFIRM_RE.search(mail.get_body(("plain",)).get_content()).group(1)
    form = client.get(path)
    return client.post(path, data={"csrf_token": CSRF_RE.search(form.text).group(1)}), path, form


def test_a_reader_who_confirms_gets_the_current_issue_once(tmp_path, store_url, engine, smtp_server):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, late_subscribers="current")
    number = sent_issue(settings, engine)
    with TestClient(create_app(settings, engine), base_url="https://digest.example.org") as client:
        done, path, form = sign_up_and_confirm(client, smtp_server, "late@example.net")
        assert done.status_code == 200 and "The latest digest is on its way to late@example.net" in done.text
        (digest,) = digests_to(smtp_server, "late@example.net")  # sent by the answer's background task
        assert digest["List-Unsubscribe"]  # a real edition, personalised for this reader
        again = client.post(path, data={"csrf_token": CSRF_RE.search(form.text).group(1)})
        assert again.status_code == 200 and "The next digest will come to" in again.text
    send_due_issues(settings, engine, datetime.now(UTC))
    work_pending(settings, engine, "test-worker")
    assert len(digests_to(smtp_server, "late@example.net")) == 1
    assert len(digests_to(smtp_server, "early@example.net")) == 1  # the early reader gets nothing again
    assert store.get_subscriber(engine, "late@example.net").status == SubscriberStatus.CONFIRMED
    assert ledger.ledger_counts(engine, number)["sent"] == 2
    assert ledger.issues_being_sent(engine) == []


def test_by_default_a_new_reader_waits_for_the_next_issue(tmp_path, store_url, engine, smtp_server):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port)
    assert settings.delivery.late_subscribers == "next"
    number = sent_issue(settings, engine)
    with TestClient(create_app(settings, engine), base_url="https://digest.example.org") as client:
        done, _, _ = sign_up_and_confirm(client, smtp_server, "patient@example.net")
    assert "The next digest will come to patient@example.net" in done.text
    send_due_issues(settings, engine, datetime.now(UTC))
    assert digests_to(smtp_server, "patient@example.net") == []
    assert ledger.ledger_counts(engine, number)["sent"] == 1


def test_an_issue_older_than_late_subscriber_days_is_not_sent(tmp_path, store_url, engine, smtp_server):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, late_subscribers="current",
                             late_subscriber_days=3)
    sent_issue(settings, engine)
    reader = add_pending(engine, settings, "much-later@example.net")
    found = confirm_subscription(settings, engine, reader, datetime.now(UTC) + timedelta(days=4))
    assert found.confirmed and found.late_issue is None
    assert ledger.issues_with_late_readers(engine) == []


def test_a_row_the_web_process_could_not_send_goes_with_the_next_pass(tmp_path, store_url, engine, smtp_server):
    # Confirmed through the use case alone (as if the serving process stopped before its background
    # task): the row waits in the ledger, and the scheduler's minute pass sends it, once.
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, late_subscribers="current")
    number = sent_issue(settings, engine)
    token = add_pending(engine, settings, "queued@example.net")
    found = confirm_subscription(settings, engine, token, datetime.now(UTC))
    assert found.late_issue == number
    assert ledger.issues_with_late_readers(engine) == [number]
    assert ledger.issues_being_sent(engine) == [number]  # workers see it too
    assert send_due_issues(settings, engine, datetime.now(UTC)) == [number]
    assert send_due_issues(settings, engine, datetime.now(UTC)) == []
    work_pending(settings, engine, "test-worker")
    assert len(digests_to(smtp_server, "queued@example.net")) == 1


def test_a_worker_pass_sends_a_late_row(tmp_path, store_url, engine, smtp_server):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, late_subscribers="current")
    number = sent_issue(settings, engine)
    confirm_subscription(settings, engine, add_pending(engine, settings, "worker@example.net"), datetime.now(UTC))
    (report,) = work_pending(settings, engine, "test-worker")
    assert report.sent == 1
    assert len(digests_to(smtp_server, "worker@example.net")) == 1
    assert get_issue(engine, number).status == IssueStatus.SENT and work_pending(settings, engine, "w") == []


@pytest.mark.parametrize(("line", "message"), [
    ('late_subscribers = "now"', "'delivery.late_subscribers' is 'now': use \"current\" or \"next\""),
    ("late_subscriber_days = 0", "'delivery.late_subscriber_days' is 0: use a number of at least 1"),
])
def test_bad_late_subscriber_settings_are_refused(tmp_path, line, message):
    path = tmp_path / "digest.toml"
    path.write_text(f"[delivery]\n{line}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert message in str(caught.value)


def add_pending(engine, settings, email: str) -> str:
    """A pending reader with a sign-up request, as the subscribe form stores one; returns the link's token."""
    pending = store.add_subscriber(engine, Subscriber(email=email, status=SubscriberStatus.PENDING), NOW)
    nonce = signups.record_signup_request(engine, pending.id, Subscriber(email=email), "192.0.2.7")
    return confirm_url(settings, pending.id, nonce).rsplit("/", 1)[1]
