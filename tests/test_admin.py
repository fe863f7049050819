"""The admin web app through Starlette's TestClient: sessions, CSRF, approval versions, previews, sends."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from admin_fixtures import PASSWORD, READERS, admin_store, csrf_of, log_in, login_token
from sqlalchemy import event, update
from starlette.testclient import TestClient

from digest.models import DeliveryStatus, IssueStatus, SubscriberStatus
from digest.passwords import hash_password
from digest.store.issues import approve_issue, get_issue, get_summary
from digest.store.issues import set_status as set_issue_status
from digest.store.runs import issue_timings
from digest.store.schema import deliveries
from digest.store.subscribers import get_subscriber, set_status
from digest.web.admin_auth import SESSION_COOKIE
from digest.web.app import create_app


@pytest.fixture
def store(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    return admin_store(tmp_path, sqlite_url)


def client_for(store, base_url: str = "https://testserver") -> TestClient:
    return TestClient(create_app(store.settings, store.engine), base_url=base_url)


@pytest.fixture
def client(store):
    with client_for(store) as c:
        yield c


@pytest.fixture
def admin(client):
    assert log_in(client).status_code == 303
    return client


def first_title(store) -> str:
    return store.issue.sections[0].entries[0].item.title


def issue_csrf(client, number: int = 1) -> str:
    return csrf_of(client.get(f"/admin/issues/{number}").text)


# --- no session: the login page and nothing of a draft ----------------------------------------------

@pytest.mark.parametrize("path", ["/admin/issues", "/admin/issues/1", "/admin/issues/1/preview",
                                  "/admin/issues/1/preview?format=text", "/admin/issues/1/report",
                                  "/admin/feeds", "/admin/subscribers", "/admin/runs", "/admin/archive"])
def test_no_session_gets_the_login_page_and_no_draft_content(store, client, path):
    response = client.get(path)
    assert response.status_code == 401
    assert 'name="password"' in response.text
    assert first_title(store) not in response.text
    assert "Sanctions" not in response.text and "anna@example.org" not in response.text


def test_no_session_post_changes_nothing(store, client):
    response = client.post("/admin/issues/1/approve", data={"version": store.issue.version, "csrf_token": "x"})
    assert response.status_code == 401
    assert get_issue(store.engine, 1).status == IssueStatus.DRAFT


def test_a_tampered_or_foreign_session_cookie_is_no_session(store, client):
    assert log_in(client).status_code == 303
    good = client.cookies.get(SESSION_COOKIE)
    client.cookies.set(SESSION_COOKIE, good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB"), path="/admin")
    assert client.get("/admin/issues").status_code == 401


def test_changing_the_password_ends_sessions(store, admin, monkeypatch):
    assert admin.get("/admin/issues").status_code == 200
    monkeypatch.setenv("DIGEST_ADMIN_PASSWORD_HASH", hash_password("a new password", log_n=10))
    assert admin.get("/admin/issues").status_code == 401


# --- signing in -----------------------------------------------------------------------------------

def test_login_sets_a_secure_httponly_samesite_session_cookie(client):
    response = log_in(client)
    cookie = next(v for k, v in response.headers.multi_items() if k == "set-cookie" and SESSION_COOKIE + "=" in v)
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" in cookie and "Path=/admin" in cookie
    assert client.get("/admin/login", follow_redirects=False).status_code == 303  # signed in: on to the issues


def test_the_cookie_is_not_secure_on_loopback_http(store):
    with client_for(store, "http://127.0.0.1:8080") as local:
        response = log_in(local)
        assert response.status_code == 303
        assert "Secure" not in response.headers["set-cookie"]
        assert local.get("/admin/issues").status_code == 200


def test_wrong_password_is_refused(client):
    response = log_in(client, password="wrong")
    assert response.status_code == 401
    assert "Wrong password" in response.text
    assert SESSION_COOKIE + "=" not in response.headers.get("set-cookie", "")


def test_login_needs_its_form_token(client):
    client.get("/admin/login")
    response = client.post("/admin/login", data={"name": "Anna", "password": PASSWORD})
    assert response.status_code == 403
    assert client.get("/admin/issues").status_code == 401


def test_login_is_rate_limited(client):
    for _ in range(5):
        assert log_in(client, password="wrong").status_code == 401
    blocked = log_in(client)  # even the right password waits
    assert blocked.status_code == 429
    assert "Too many" in blocked.text
    assert client.get("/admin/issues").status_code == 401


def test_login_never_redirects_to_another_site(client):
    page = client.get("/admin/login")
    response = client.post("/admin/login", data={"login_token": login_token(page.text), "name": "Anna",
                                                 "password": PASSWORD, "next": "https://evil.example/admin"},
                           follow_redirects=False)
    assert response.headers["location"] == "/admin/issues"


def test_without_a_configured_password_nobody_signs_in(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    store = admin_store(tmp_path, sqlite_url, web={"admin_password_hash": ""})
    with client_for(store) as c:
        page = c.get("/admin/login").text
        assert "digest admin hash-password" in page and 'name="password"' not in page
        assert c.post("/admin/login", data={"name": "Anna", "password": ""}).status_code == 403
        assert c.get("/admin/issues").status_code == 401


def test_a_malformed_hash_is_reported_not_accepted(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.setenv("DIGEST_ADMIN_PASSWORD_HASH", "scrypt$99$8$1$xx$yy")
    store = admin_store(tmp_path, sqlite_url)
    with client_for(store) as c:
        response = log_in(c)
        assert response.status_code == 500
        assert "hash-password" in response.text


def test_logout_needs_csrf_and_ends_the_session(admin):
    assert admin.post("/admin/logout", data={}).status_code == 403
    assert admin.get("/admin/issues").status_code == 200
    csrf = csrf_of(admin.get("/admin/issues").text)
    assert admin.post("/admin/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
    assert admin.get("/admin/issues").status_code == 401


# --- CSRF: 403 and nothing changes ----------------------------------------------------------------

@pytest.mark.parametrize("token", [None, "", "wrong-token"])
def test_approve_without_the_right_csrf_token_is_refused(store, admin, token):
    data = {"version": store.issue.version}
    if token is not None:
        data["csrf_token"] = token
    response = admin.post("/admin/issues/1/approve", data=data)
    assert response.status_code == 403
    assert "nothing was changed" in response.text
    assert get_issue(store.engine, 1).status == IssueStatus.DRAFT


@pytest.mark.parametrize("path, data", [
    ("/admin/issues/1/editorial", {"intro": "Hacked", "subject": "Hacked"}),
    ("/admin/issues/1/items", {"drop": "https://www.example.org/?p=1001"}),
    ("/admin/issues/1/rebuild", {}),
    ("/admin/issues/1/test", {"address": "x@example.org"}),
    ("/admin/issues/1/schedule", {"send_at": "2030-01-01T10:00"}),
])
def test_every_state_change_needs_csrf(store, admin, path, data):
    before = get_summary(store.engine, 1)
    assert admin.post(path, data={**data, "csrf_token": "forged"}).status_code == 403
    after = get_summary(store.engine, 1)
    assert (after.version, after.updated_at, after.subject) == (before.version, before.updated_at, before.subject)
    assert issue_timings(store.engine, (IssueStatus.DRAFT,))[0].send_at is None


def test_a_post_from_another_origin_is_refused_even_with_the_token(store, admin):
    csrf = issue_csrf(admin)
    response = admin.post("/admin/issues/1/approve", data={"version": store.issue.version, "csrf_token": csrf},
                          headers={"origin": "https://evil.example"})
    assert response.status_code == 403
    assert get_issue(store.engine, 1).status == IssueStatus.DRAFT


# --- approval ---------------------------------------------------------------------------------------

def test_approve_records_who_and_which_version(store, admin):
    csrf = issue_csrf(admin)
    response = admin.post("/admin/issues/1/approve", data={"version": store.issue.version, "csrf_token": csrf},
                          follow_redirects=False)
    assert response.status_code == 303
    summary = get_summary(store.engine, 1)
    assert summary.status == IssueStatus.APPROVED
    assert summary.approved_by == "Anna" and summary.approved_version == store.issue.version
    assert "Approved" in admin.get(response.headers["location"]).text


def test_approving_a_preview_that_changed_since_is_refused(store, admin):
    csrf = issue_csrf(admin)
    shown_version = store.issue.version
    admin.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "intro": "A new intro", "subject": ""})
    assert get_issue(store.engine, 1).version != shown_version
    response = admin.post("/admin/issues/1/approve", data={"version": shown_version, "csrf_token": csrf})
    assert response.status_code == 409
    assert "changed since" in response.text
    assert get_issue(store.engine, 1).status == IssueStatus.DRAFT


def test_no_store_query_runs_on_the_event_loop(store, admin):
    """The session check (signed-out sessions), approval and every page, the archive's too, read the store
    from the thread pool."""
    on_the_loop = []

    def note(conn: object, cursor: object, statement: str, parameters: object, context: object,
             executemany: bool) -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # a worker thread: fine
            return
        on_the_loop.append(" ".join(statement.split())[:80])

    csrf = issue_csrf(admin)
    event.listen(store.engine, "before_cursor_execute", note)
    try:
        for path in ("/admin/login", "/admin/issues", "/admin/issues/1", "/admin/issues/1/preview",
                     "/admin/issues/1/report", "/admin/feeds", "/admin/runs", "/admin/subscribers", "/admin/archive",
                     "/admin/issues/99", "/archive/", "/archive/1", "/archive/feed.atom",
                     "/archive/series/esa-security-defence", "/archive/99"):
            assert admin.get(path).status_code in (200, 404), path
        approved = admin.post("/admin/issues/1/approve", data={"version": store.issue.version, "csrf_token": csrf},
                              follow_redirects=False)
        assert approved.status_code == 303
        cleared = admin.post("/admin/issues/1/schedule", data={"csrf_token": csrf, "clear": "1"},
                             follow_redirects=False)
        assert cleared.status_code == 303
    finally:
        event.remove(store.engine, "before_cursor_execute", note)
    assert on_the_loop == []


# --- the issue page and its previews ----------------------------------------------------------------

def test_issue_page_frames_a_sandboxed_preview(store, admin):
    page = admin.get("/admin/issues/1")
    assert page.status_code == 200
    assert '<iframe id="preview"' in page.text
    # Same origin, so the page can read the preview's height; never scripts.
    assert 'sandbox="allow-same-origin allow-popups allow-popups-to-escape-sandbox"' in page.text
    assert "allow-scripts" not in page.text
    assert page.headers["cache-control"] == "no-store"
    preview = admin.get("/admin/issues/1/preview")
    assert preview.status_code == 200
    assert first_title(store) in preview.text
    csp = preview.headers["content-security-policy"]
    assert "sandbox allow-same-origin" in csp and "allow-scripts" not in csp and "script-src" not in csp
    assert "default-src 'none'" in csp
    assert "frame-ancestors 'self'" in csp and preview.headers["x-frame-options"] == "SAMEORIGIN"


def test_text_preview_is_plain_text(store, admin):
    text = admin.get("/admin/issues/1/preview?format=text")
    assert text.headers["content-type"].startswith("text/plain")
    assert first_title(store) in text.text and "<table" not in text.text


def test_preview_as_a_subscriber_is_their_real_edition(store, admin):
    anna = READERS[0]
    html = admin.get("/admin/issues/1/preview?" + urlencode({"subscriber": anna.email})).text
    full = admin.get("/admin/issues/1/preview").text
    assert 'lang="de"' in html
    assert "Hallo Anna," in html  # greeted by her first name (render.greeting, issue 14)
    assert "/unsubscribe/" in html  # her own signed link
    media_title = next(e.item.title for s in store.issue.sections if s.id == "media" for e in s.entries)
    assert media_title in full and media_title not in html  # she chose no media
    page = admin.get("/admin/issues/1?" + urlencode({"subscriber": anna.email}))
    assert "anna@example.org&#39;s edition" in page.text


def test_preview_as_a_segment(store, admin):
    page = admin.get("/admin/issues/1").text
    segment_ids = [v for v in __import__("re").findall(r'<option value="([0-9a-f]{16})"', page)]
    assert segment_ids, "the subscribers' segments are offered"
    response = admin.get(f"/admin/issues/1/preview?segment={segment_ids[0]}")
    assert response.status_code == 200 and "<html" in response.text.lower()


def test_preview_of_an_unknown_subscriber_says_so(admin):
    response = admin.get("/admin/issues/1/preview?subscriber=nobody@example.org")
    assert response.status_code == 404 and "no subscriber" in response.text
    page = admin.get("/admin/issues/1?subscriber=nobody@example.org").text
    assert "There is no subscriber nobody@example.org: nothing to preview. Check the address" in page
    test_form = page.split('action="/admin/issues/1/test"')[1].split("</form>")[0]
    assert 'name="subscriber" value=""' in test_form and "Sends the full edition" in test_form


def test_an_unknown_issue_is_404(admin):
    assert admin.get("/admin/issues/99").status_code == 404
    assert admin.get("/admin/issues/99/preview").status_code == 404


# --- editing ----------------------------------------------------------------------------------------

def test_edit_intro_and_subject(store, admin):
    csrf = issue_csrf(admin)
    response = admin.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "intro": "Dear readers,\nhello.",
                                                           "subject": "Our week in Brussels"})
    assert response.status_code == 200  # followed the redirect to the issue page
    issue = get_issue(store.engine, 1)
    assert issue.editorial.intro == "Dear readers,\nhello." and issue.editorial.subject == "Our week in Brussels"
    assert "Dear readers," in admin.get("/admin/issues/1/preview").text


def test_an_overlong_subject_is_refused_with_a_message(store, admin):
    csrf = issue_csrf(admin)
    response = admin.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "intro": "", "subject": "x" * 500})
    assert response.status_code == 400
    assert get_issue(store.engine, 1).editorial.subject == ""


def test_drop_and_pin_items(store, admin):
    csrf = issue_csrf(admin)
    entries = [e.item for s in store.issue.sections if s.type == "series" for e in s.entries]
    dropped, pinned = entries[0], entries[1]
    before = admin.get("/admin/issues/1/preview").text
    admin.post("/admin/issues/1/items", data={"csrf_token": csrf, "drop": dropped.key, "pin": pinned.key})
    issue = get_issue(store.engine, 1)
    assert dropped.key in issue.editorial.dropped and pinned.key in issue.editorial.pinned
    shown = [e.item.key for s in get_issue(store.engine, 1).sections for e in s.entries]
    assert dropped.key not in shown
    assert admin.get("/admin/issues/1/preview").text.count(dropped.title) < before.count(dropped.title)
    # unchecking the dropped box restores it
    admin.post("/admin/issues/1/items", data={"csrf_token": csrf, "pin": pinned.key})
    assert dropped.key not in get_issue(store.engine, 1).editorial.dropped


def test_rebuild_keeps_the_editorial_choices(store, admin):
    csrf = issue_csrf(admin)
    admin.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "intro": "Kept", "subject": ""})
    response = admin.post("/admin/issues/1/rebuild", data={"csrf_token": csrf}, follow_redirects=False)
    assert response.status_code == 303
    assert get_issue(store.engine, 1).editorial.intro == "Kept"


# --- sending ----------------------------------------------------------------------------------------

def test_send_a_test_through_smtp(tmp_path, sqlite_url, smtp_server, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    store = admin_store(tmp_path, sqlite_url, delivery={"transport": "smtp", "smtp": {
        "host": smtp_server.host, "port": smtp_server.port}})
    with client_for(store) as c:
        log_in(c)
        csrf = issue_csrf(c)
        response = c.post("/admin/issues/1/test", data={"csrf_token": csrf, "address": "me@example.org",
                                                         "subscriber": "anna@example.org"})
        assert response.status_code == 200 and "Test sent to me@example.org" in response.text
    (message,) = smtp_server.for_recipient("me@example.org")
    assert "Anna" in message.get_body(("html",)).get_content()
    assert get_issue(store.engine, 1).status == IssueStatus.DRAFT  # a test changes nothing


def test_a_test_send_the_settings_cannot_make_is_a_message_not_a_crash(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    store = admin_store(tmp_path, sqlite_url)
    # Such a sender no longer loads from a config (tests/test_config.py); a test send still refuses it.
    store.settings = replace(store.settings, delivery=replace(store.settings.delivery, sender="Digest <not an address>"))
    with client_for(store) as c:
        log_in(c)
        response = c.post("/admin/issues/1/test", data={"csrf_token": issue_csrf(c), "address": "me@example.org"})
    assert response.status_code == 502 and "The test could not be sent" in response.text
    assert "invalid email address &#39;not an address&#39;" in response.text
    outbox = store.settings.resolve_path(store.settings.delivery.outbox_dir)
    assert not outbox.exists() or not list(outbox.glob("*.eml"))


def test_a_bad_test_address_is_refused(admin):
    csrf = issue_csrf(admin)
    response = admin.post("/admin/issues/1/test", data={"csrf_token": csrf, "address": "me@example.org\r\nBcc: x@y"})
    assert response.status_code == 400


def test_schedule_a_send_time_and_clear_it(store, admin):
    csrf = issue_csrf(admin)
    when = (datetime.now(store.settings.site.tz) + timedelta(days=2)).replace(second=0, microsecond=0)
    asked = admin.post("/admin/issues/1/schedule", data={"csrf_token": csrf, "send_at": when.strftime("%Y-%m-%dT%H:%M")})
    assert asked.status_code == 200 and 'id="audience-total">3<' in asked.text  # first: who and when, nothing saved
    assert issue_timings(store.engine, (IssueStatus.DRAFT,))[0].send_at is None
    admin.post("/admin/issues/1/schedule", data={"csrf_token": csrf, "send_at": when.strftime("%Y-%m-%dT%H:%M"),
                                                 "confirm": "yes"})
    (timing,) = issue_timings(store.engine, (IssueStatus.DRAFT,))
    assert timing.send_at == when.astimezone(UTC)
    assert when.strftime("%Y-%m-%dT%H:%M") in admin.get("/admin/issues/1").text
    admin.post("/admin/issues/1/schedule", data={"csrf_token": csrf, "clear": "1"})
    assert issue_timings(store.engine, (IssueStatus.DRAFT,))[0].send_at is None


@pytest.mark.parametrize("send_at", ["2020-01-01T10:00", "next tuesday"])  # in the past; not a time
def test_a_send_time_in_the_past_or_malformed_is_refused(store, admin, send_at):
    csrf = issue_csrf(admin)
    response = admin.post("/admin/issues/1/schedule", data={"csrf_token": csrf, "send_at": send_at})
    assert response.status_code == 400
    assert issue_timings(store.engine, (IssueStatus.DRAFT,))[0].send_at is None


def test_send_now_needs_approval_then_sends_once_and_reports(store, admin):
    csrf = issue_csrf(admin)
    assert admin.post("/admin/issues/1/send", data={"csrf_token": csrf, "confirm": "yes"}).status_code == 409
    admin.post("/admin/issues/1/approve", data={"version": store.issue.version, "csrf_token": csrf})
    confirm = admin.get("/admin/issues/1/send")
    assert confirm.status_code == 200 and 'id="audience-total">3<' in confirm.text  # who it reaches, first
    assert get_issue(store.engine, 1).status == IssueStatus.APPROVED  # the confirmation changes nothing
    response = admin.post("/admin/issues/1/send", data={"csrf_token": csrf, "confirm": "yes"})
    assert response.status_code == 200 and 'id="progress-sent">3<' in response.text  # after the background send
    assert get_issue(store.engine, 1).status == IssueStatus.SENT
    outbox = list((store.settings.resolve_path(store.settings.delivery.outbox_dir)).glob("*.eml"))
    assert len(outbox) == len(READERS)
    anna = get_subscriber(store.engine, "anna@example.org")
    set_status(store.engine, anna.id, SubscriberStatus.UNSUBSCRIBED, issue_number=1)
    report = admin.get("/admin/issues/1/report").text
    assert 'id="count-sent">3<' in report
    assert "unsubscribed from it" in report
    assert admin.post("/admin/issues/1/send", data={"csrf_token": csrf, "confirm": "yes"}).status_code == 409


def test_the_report_counts_possibly_delivered_messages_on_their_own(store, admin):
    """A message whose final reply was lost (issue 16) is neither sent nor failed on the report page."""
    csrf = issue_csrf(admin)
    admin.post("/admin/issues/1/approve", data={"version": store.issue.version, "csrf_token": csrf})
    admin.post("/admin/issues/1/send", data={"csrf_token": csrf, "confirm": "yes"})
    anna = get_subscriber(store.engine, "anna@example.org")
    with store.engine.begin() as conn:  # as the ledger records a connection lost after the final "."
        conn.execute(update(deliveries).where(deliveries.c.subscriber_id == anna.id)
                     .values(status=DeliveryStatus.POSSIBLY_DELIVERED.value))
    report = admin.get("/admin/issues/1/report").text
    assert 'id="count-possibly-delivered">1<' in report and 'id="count-sent">2<' in report


# --- the other pages ----------------------------------------------------------------------------------

def test_feeds_subscribers_schedule_and_archive_pages(store, admin):
    feeds = admin.get("/admin/feeds").text
    assert all(f.name in feeds for f in store.settings.feeds)
    subscribers = admin.get("/admin/subscribers").text
    assert "<svg" in subscribers and "<rect" in subscribers and "anna@example.org" in subscribers
    assert "European Strategic Autonomy series – Security &amp; Defence" in subscribers
    assert "Run log" in admin.get("/admin/runs").text
    assert "Nothing sent yet" in admin.get("/admin/archive").text
    assert "/admin/static/admin.css" in feeds
    assert admin.get("/admin/static/admin.css").headers["content-type"].startswith("text/css")


def test_login_needs_a_name(client):
    response = log_in(client, name="  ")
    assert response.status_code == 400 and "Enter your name" in response.text
    assert client.get("/admin/issues").status_code == 401


# --- the same guarantees on PostgreSQL ---------------------------------------------------------------

@pytest.fixture
def any_store(tmp_path, store_url, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    return admin_store(tmp_path, store_url)


def test_csrf_and_stale_version_on_each_backend(any_store):
    with client_for(any_store) as c:
        assert c.get("/admin/issues/1").status_code == 401
        log_in(c)
        csrf = issue_csrf(c)
        assert c.post("/admin/issues/1/approve", data={"version": any_store.issue.version}).status_code == 403
        c.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "intro": "Changed", "subject": ""})
        assert c.post("/admin/issues/1/approve",
                      data={"version": any_store.issue.version, "csrf_token": csrf}).status_code == 409
        assert get_issue(any_store.engine, 1).status == IssueStatus.DRAFT
        current = get_issue(any_store.engine, 1).version
        assert c.post("/admin/issues/1/approve", data={"version": current, "csrf_token": csrf}).status_code == 200
        assert get_summary(any_store.engine, 1).approved_version == current


# --- more refusals ------------------------------------------------------------------------------------

def sent(store) -> None:
    approve_issue(store.engine, 1, by="Anna", version=store.issue.version)
    set_issue_status(store.engine, 1, IssueStatus.SENDING)
    set_issue_status(store.engine, 1, IssueStatus.SENT)


def test_a_sent_issue_cannot_be_approved_edited_rebuilt_or_scheduled(store, admin):
    csrf = issue_csrf(admin)
    sent(store)
    version = get_issue(store.engine, 1).version
    assert admin.post("/admin/issues/1/approve", data={"version": version, "csrf_token": csrf}).status_code == 409
    assert admin.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "intro": "x"}).status_code == 400
    assert admin.post("/admin/issues/1/rebuild", data={"csrf_token": csrf}).status_code == 409
    assert admin.post("/admin/issues/1/schedule", data={"csrf_token": csrf,
                                                        "send_at": "2031-01-01T10:00"}).status_code == 409
    page = admin.get("/admin/issues/1").text
    assert 'id="approve"' not in page and 'id="save-editorial"' not in page
    assert get_summary(store.engine, 1).status == IssueStatus.SENT


def test_preview_of_an_unknown_segment_says_so(admin):
    response = admin.get("/admin/issues/1/preview?segment=0123456789abcdef")
    assert response.status_code == 404 and "no segment" in response.text


def test_a_refused_test_send_is_reported(tmp_path, sqlite_url, smtp_server, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    smtp_server.replies["me@example.org"] = ["550 5.1.1 no such user"]
    store = admin_store(tmp_path, sqlite_url, delivery={"transport": "smtp", "smtp": {
        "host": smtp_server.host, "port": smtp_server.port}})
    with client_for(store) as c:
        log_in(c)
        response = c.post("/admin/issues/1/test", data={"csrf_token": issue_csrf(c), "address": "me@example.org"})
    assert response.status_code == 502 and "failed" in response.text and "550" in response.text


def test_the_schedule_page_names_an_issue_built_by_hand(tmp_path, store_url, monkeypatch):
    """Before, it said "No build yet" while issues built with `digest build` or the admin existed."""
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    store = admin_store(tmp_path, store_url)
    with client_for(store) as admin:
        assert log_in(admin).status_code == 303
        page = admin.get("/admin/runs").text
    assert "No build yet" not in page
    assert 'No scheduled build yet. The newest issue, <a href="/admin/issues/1">#1</a> (draft)' in page


def test_the_report_says_ledger_states_in_plain_words(store, admin):
    csrf = issue_csrf(admin)
    admin.post("/admin/issues/1/approve", data={"version": store.issue.version, "csrf_token": csrf})
    report = admin.get("/admin/issues/1/report").text
    ledger = report.split("<h2>Ledger</h2>")[1].split("</table>")[0]
    assert "waiting to be sent" in ledger and "failed for good" in ledger and "will be tried again" in ledger
    assert "_" not in ledger.replace('class="num"', "")  # no failed_permanent, not_modified … left


def test_choosing_a_german_segment_shows_german_in_the_language_picker(store, admin):
    page = admin.get("/admin/issues/1").text
    german = re.search(r'<option value="([0-9a-f]{16})">de: ', page).group(1)  # Anna reads German
    shown = admin.get(f"/admin/issues/1?segment={german}&lang=en").text
    assert '<option value="de" selected>' in shown and '<option value="en" selected>' not in shown
