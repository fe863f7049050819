"""The admin's defences, route by route and deployment by deployment: CSRF on every POST, origins and
Secure cookies on loopback, a LAN address and behind a TLS proxy, the login limit, signing out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from admin_fixtures import PASSWORD, admin_store, csrf_of, log_in, login_token
from sqlalchemy import select
from starlette.routing import Route
from starlette.testclient import TestClient

from digest.addresses import is_loopback_host as is_loopback
from digest.models import IssueStatus
from digest.pipeline.accounts import revoke_session, session_revoked
from digest.store.issues import approve_issue, get_issue, get_summary
from digest.store.schema import metadata, revoked_admin_sessions
from digest.web.admin_auth import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    LoginAttempt,
    LoginLimiter,
    LoginRefused,
    origin_of,
)
from digest.web.app import create_app

HTTPS = "https://testserver"
DROPPED = "sign in over https, or on 127.0.0.1 / localhost"


@pytest.fixture
def store(tmp_path, sqlite_url, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    return admin_store(tmp_path, sqlite_url)


def client_for(store, base_url: str = HTTPS, **options) -> TestClient:
    return TestClient(create_app(store.settings, store.engine), base_url=base_url, **options)


def outbox(store) -> list[str]:
    folder = store.settings.resolve_path(store.settings.delivery.outbox_dir)
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def snapshot(store) -> dict:
    """Every row of every digest table, and the outbox: what "nothing changed" means."""
    with store.engine.connect() as conn:
        rows = {name: sorted(map(repr, conn.execute(select(table)).all())) for name, table in metadata.tables.items()}
    return {"tables": rows, "outbox": outbox(store)}


def set_cookies(response) -> dict[str, str]:
    """Set-Cookie headers of a response by cookie name."""
    return {v.split("=", 1)[0]: v for k, v in response.headers.multi_items() if k == "set-cookie"}


def cookie_value(header: str) -> str:
    return header.split(";", 1)[0].split("=", 1)[1]


# --- CSRF on every POST route ---------------------------------------------------------------------

def _item_keys(store) -> list[str]:
    return [e.item.key for s in store.issue.sections for e in s.entries]


# What each POST route would change with a valid token: a new route must be listed here.
FORMS = {
    "/admin/login": lambda store: {"name": "Mallory", "password": PASSWORD, "next": "/admin/issues"},
    "/admin/logout": lambda store: {},
    "/admin/issues/{number:int}/approve": lambda store: {"version": get_issue(store.engine, 1).version},
    "/admin/issues/{number:int}/editorial": lambda store: {"intro": "Hacked", "subject": "Hacked"},
    "/admin/issues/{number:int}/items": lambda store: {"drop": _item_keys(store)[0], "pin": _item_keys(store)[1]},
    "/admin/issues/{number:int}/rebuild": lambda store: {},
    "/admin/issues/{number:int}/test": lambda store: {"address": "mallory@example.org"},
    "/admin/issues/{number:int}/send": lambda store: {"confirm": "yes"},
    "/admin/issues/{number:int}/schedule": lambda store: {
        "confirm": "yes",
        "send_at": (datetime.now(store.settings.site.tz) + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M")},
    "/admin/accounts/adopt": lambda store: {"email": "mallory@example.org"},
    "/admin/accounts/invite": lambda store: {"email": "mallory@example.org", "role": "admin"},
    "/admin/accounts/token": lambda store: {"email": "mallory@example.org"},
    "/admin/accounts/revoke-token": lambda store: {"token": "1"},
    "/admin/accounts/{action:str}": lambda store: {"email": "anna@example.org", "role": "admin"},
    "/admin/feeds/add": lambda store: {"name": "Evil", "url": "https://evil.example/feed", "kind": "news",
                                       "confirm_failed": "yes"},
    "/admin/feeds/import": lambda store: {},
    "/admin/feeds/pause": lambda store: {"name": "Publications"},
    "/admin/feeds/resume": lambda store: {"name": "Publications"},
    "/admin/feeds/rename": lambda store: {"name": "Publications", "new_name": "Evil"},
    "/admin/feeds/remove": lambda store: {"name": "Publications", "confirm": "yes"},
    "/admin/series/add": lambda store: {"id": "evil", "name": "Evil"},
    "/admin/series/alias": lambda store: {"id": store.settings.series[0].id, "alias": "Evil"},
    "/admin/series/edit": lambda store: {"id": store.settings.series[0].id, "name": "Evil", "version": "1"},
    "/admin/series/move": lambda store: {"id": store.settings.series[0].id, "direction": "down", "version": "1"},
    "/admin/series/rematch": lambda store: {},
    "/admin/series/remove": lambda store: {"id": store.settings.series[0].id, "confirm": "yes", "version": "1"},
    "/admin/schedule": lambda store: {"build_time": "03:00", "send_time": "04:00", "version": "0"},
    "/admin/branding": lambda store: {"footer_text": "Evil", "version": "0"},
    "/admin/branding/preview": lambda store: {"footer_text": "Evil"},
    "/admin/branding/logo": lambda store: {"logo_alt": "Evil", "version": "0"},
    "/admin/subscribers/add": lambda store: {"email": "mallory@example.org", "language": "en"},
    "/admin/subscribers/import": lambda store: {},
    "/admin/subscribers/import/{token}/apply": lambda store: {"digest": "0" * 64, "sig": "x"},
    "/admin/subscribers/import/{token}/cancel": lambda store: {},
    "/admin/subscribers/{sid:int}/erase": lambda store: {"confirm": "yes"},
    "/admin/subscribers/{sid:int}/unsubscribe": lambda store: {},
    # Signed out: these carry the sign-in form's double-submit token instead of a session's.
    "/admin/forgot": lambda store: {"email": "anna@example.org"},
    "/admin/password/{token:str}": lambda store: {"password": "a long passphrase", "again": "a long passphrase"},
}
SIGNED_OUT = ("/admin/login", "/admin/forgot", "/admin/password/{token:str}")
PATH_VALUES = {"{number:int}": "1", "{action:str}": "role", "{token:str}": "a-token", "{token}": "a-token",
               "{sid:int}": "1"}


def admin_post_routes(app) -> list[str]:
    return sorted(r.path for r in app.routes
                  if isinstance(r, Route) and r.path.startswith("/admin") and "POST" in (r.methods or ()))


@pytest.mark.parametrize("state", [IssueStatus.DRAFT, IssueStatus.APPROVED])
def test_every_admin_post_refuses_a_missing_empty_or_forged_token_and_changes_nothing(store, state):
    app = create_app(store.settings, store.engine)
    with (TestClient(app, base_url=HTTPS) as admin, TestClient(app, base_url=HTTPS) as mallory,
          TestClient(app, base_url=HTTPS) as visitor, TestClient(app, base_url=HTTPS) as stranger):
        assert log_in(admin).status_code == 303 and log_in(mallory, "Mallory").status_code == 303
        visitor.get("/admin/login")  # has its login cookie, as a browser on the login page would
        # Forged: real tokens, but another session's (CSRF) and another browser's (login form).
        forged = {"csrf_token": csrf_of(mallory.get("/admin/issues").text),
                  "login_token": login_token(stranger.get("/admin/login").text)}
        if state == IssueStatus.APPROVED:
            approve_issue(store.engine, 1, by="Anna", version=store.issue.version)
        routes = admin_post_routes(app)
        assert set(routes) == set(FORMS), "list every admin POST route in FORMS"
        assert "/admin/issues/{number:int}/send" in routes and "/admin/issues/{number:int}/test" in routes
        before = snapshot(store)
        for path in routes:
            field, client = ("login_token", visitor) if path in SIGNED_OUT else ("csrf_token", admin)
            url = path
            for placeholder, value in PATH_VALUES.items():
                url = url.replace(placeholder, value)
            for token in (None, "", forged[field]):
                data = FORMS[path](store) | ({} if token is None else {field: token})
                response = client.post(url, data=data, follow_redirects=False)
                assert response.status_code == 403, (path, token)
                assert snapshot(store) == before, (path, token)
                assert SESSION_COOKIE not in set_cookies(response), (path, token)
        assert admin.get("/admin/issues").status_code == 200  # logout was refused: still signed in
        assert visitor.get("/admin/issues").status_code == 401
    assert get_summary(store.engine, 1).status == state  # an approved issue stays approved, unsent
    assert outbox(store) == []  # no test message, no send


def test_the_send_route_sends_with_the_right_token(store):
    """The other side of the test above: with the token, /send does send (so the 403s mean something)."""
    with client_for(store) as admin:
        log_in(admin)
        approve_issue(store.engine, 1, by="Anna", version=store.issue.version)
        csrf = csrf_of(admin.get("/admin/issues/1").text)
        assert admin.post("/admin/issues/1/send", data={"csrf_token": csrf, "confirm": "yes"}).status_code == 200
    assert get_summary(store.engine, 1).status == IssueStatus.SENT and outbox(store)


# --- form size -------------------------------------------------------------------------------------

def _chunked(*parts: bytes):
    """A request body without Content-Length: httpx sends it chunked."""
    yield from parts


def test_an_oversized_login_form_gets_413_and_no_session(store):
    with client_for(store) as visitor:
        fields = {"login_token": login_token(visitor.get("/admin/login").text), "name": "Anna",
                  "password": PASSWORD, "next": "/admin/issues"}
        big = visitor.post("/admin/login", data={**fields, "pad": "x" * 70_000}, follow_redirects=False)
        assert big.status_code == 413 and "too large" in big.text
        assert SESSION_COOKIE not in set_cookies(big)
        start = urlencode(fields).encode()
        urlencoded = {"content-type": "application/x-www-form-urlencoded"}
        chunked = visitor.post("/admin/login", content=_chunked(start, *[b"x" * 65_536] * 32), headers=urlencoded,
                               follow_redirects=False)
        assert chunked.status_code == 413 and SESSION_COOKIE not in set_cookies(chunked)
        assert visitor.get("/admin/issues").status_code == 401
        small = visitor.post("/admin/login", content=_chunked(start), headers=urlencoded, follow_redirects=False)
        assert small.status_code == 303 and SESSION_COOKIE in set_cookies(small)  # within the limit: read as usual


def test_an_oversized_admin_form_gets_413_and_changes_nothing(store):
    with client_for(store) as admin:
        log_in(admin)
        csrf = csrf_of(admin.get("/admin/issues/1").text)
        before = snapshot(store)
        answer = admin.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "intro": "x" * 70_000},
                            follow_redirects=False)
        assert answer.status_code == 413 and snapshot(store) == before


# --- where the browser is: loopback, a LAN address, a TLS proxy ------------------------------------

@pytest.mark.parametrize("base", ["http://digest.localhost:8765", "http://localhost:8080", "http://127.0.0.2:8080"])
def test_loopback_names_sign_in_over_plain_http(store, base):
    with client_for(store, base) as local:
        assert DROPPED not in local.get("/admin/login").text
        response = log_in(local)
        assert response.status_code == 303
        assert "Secure" not in set_cookies(response)[SESSION_COOKIE]
        assert local.get("/admin/issues").status_code == 200


def test_plain_http_to_a_lan_address_says_to_sign_in_over_https(store):
    with client_for(store, "http://192.168.1.5:8765") as lan:
        page = lan.get("/admin/login")
        assert DROPPED in page.text
        assert "Secure" in set_cookies(page)[LOGIN_COOKIE]  # which the browser (like this client) drops
        response = log_in(lan)
        assert response.status_code == 403
        assert DROPPED in response.text and "form expired" not in response.text
        assert lan.get("/admin/issues").status_code == 401


# What a TLS proxy that passes neither Host nor the scheme, or only Host, hands digest serve.
@pytest.mark.parametrize("server_sees", ["http://127.0.0.1:8080", "http://digest.example.org"])
def test_behind_a_tls_proxy_forms_from_the_base_url_origin_work(tmp_path, sqlite_url, monkeypatch, server_sees):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    store = admin_store(tmp_path, sqlite_url, web={"base_url": "https://digest.example.org"})
    browser = {"origin": "https://digest.example.org"}
    with client_for(store, server_sees) as proxy:
        # The browser is on https, so it keeps and returns Secure cookies: send them by hand.
        page = proxy.get("/admin/login")
        assert DROPPED not in page.text
        login_cookie = f"{LOGIN_COOKIE}={cookie_value(set_cookies(page)[LOGIN_COOKIE])}"
        proxy.cookies.clear()
        response = proxy.post("/admin/login", headers={**browser, "cookie": login_cookie}, follow_redirects=False,
                              data={"login_token": login_token(page.text), "name": "Anna", "password": PASSWORD})
        assert response.status_code == 303, response.text
        session = set_cookies(response)[SESSION_COOKIE]
        assert "Secure" in session
        proxy.cookies.clear()
        cookie = {"cookie": f"{SESSION_COOKIE}={cookie_value(session)}"}
        form = {"version": store.issue.version, "csrf_token": csrf_of(proxy.get("/admin/issues/1", headers=cookie).text)}
        refused = proxy.post("/admin/issues/1/approve", data=form, headers={**cookie, "origin": "https://evil.example"})
        assert refused.status_code == 403 and get_summary(store.engine, 1).status == IssueStatus.DRAFT
        done = proxy.post("/admin/issues/1/approve", data=form, headers={**cookie, **browser}, follow_redirects=False)
        assert done.status_code == 303
    assert get_summary(store.engine, 1).status == IssueStatus.APPROVED


def test_loopback_is_what_never_leaves_the_machine():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost.",
                                         "digest.localhost", "a.b.localhost"))
    assert not any(is_loopback(h) for h in ("192.168.1.5", "localhost.example.org", "mylocalhost", "", "10.0.0.1"))


def test_origins_compare_as_browsers_write_them():
    assert origin_of("https://Digest.Example.org:443/admin/") == "https://digest.example.org"
    assert origin_of("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert origin_of("http://[::1]:80/") == "http://[::1]"
    assert origin_of("not a url") == origin_of("http://host:port") == ""


# --- the login limit --------------------------------------------------------------------------------

def test_failed_logins_from_many_clients_lock_nobody_else_out(store):
    app = create_app(store.settings, store.engine)
    for n in range(12):  # 60 failures in all, more than any global cap would allow
        with TestClient(app, base_url=HTTPS, client=(f"203.0.113.{n}", 40000)) as attacker:
            for _ in range(5):
                assert log_in(attacker, password="wrong").status_code == 401
            assert log_in(attacker).status_code == 429  # each attacker is blocked
    with TestClient(app, base_url=HTTPS, client=("198.51.100.7", 40000)) as anna:
        assert log_in(anna).status_code == 303
        assert anna.get("/admin/issues").status_code == 200


def test_the_login_limit_is_per_client_and_expires():
    now = [1.0]
    limiter = LoginLimiter(attempts=5, window=300, slots=1000, clock=lambda: now[0])
    for n in range(500):
        limiter.finish(limiter.start(f"10.0.{n // 200}.{n % 200}"), ok=False)
    now[0] = 2.0
    assert isinstance(limiter.start("10.9.9.9"), LoginAttempt)
    for _ in range(4):  # the fifth, with the one above
        limiter.finish(limiter.start("10.0.0.1"), ok=False)
    now[0] = 3.0
    refused = limiter.start("10.0.0.1")
    assert isinstance(refused, LoginRefused) and not refused.busy and refused.retry_after == 298
    now[0] = 303.0
    assert isinstance(limiter.start("10.0.0.1"), LoginAttempt)


# --- signing out --------------------------------------------------------------------------------------

@pytest.fixture
def any_store(tmp_path, store_url, monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)
    return admin_store(tmp_path, store_url)


def test_signing_out_ends_every_copy_of_the_session_and_only_that_session(any_store):
    app = create_app(any_store.settings, any_store.engine)
    with (TestClient(app, base_url=HTTPS) as anna, TestClient(app, base_url=HTTPS) as thief,
          TestClient(app, base_url=HTTPS) as bob):
        assert log_in(anna).status_code == 303 and log_in(bob, "Bob").status_code == 303
        copied = anna.cookies.get(SESSION_COOKIE)
        thief.cookies.set(SESSION_COOKIE, copied, path="/admin")
        csrf = csrf_of(thief.get("/admin/issues").text)  # the copy works while the session lasts
        assert anna.post("/admin/logout", data={"csrf_token": csrf}, follow_redirects=False).status_code == 303
        assert thief.get("/admin/issues").status_code == 401
        stolen = thief.post("/admin/issues/1/approve", data={"version": any_store.issue.version, "csrf_token": csrf})
        assert stolen.status_code == 401 and get_summary(any_store.engine, 1).status == IssueStatus.DRAFT
        assert bob.get("/admin/issues").status_code == 200  # another session goes on
        assert log_in(anna).status_code == 303 and anna.get("/admin/issues").status_code == 200
    with TestClient(create_app(any_store.settings, any_store.engine), base_url=HTTPS) as later:
        later.cookies.set(SESSION_COOKIE, copied, path="/admin")  # another process on the same store
        assert later.get("/admin/issues").status_code == 401


def test_revoking_a_session_twice_is_harmless_and_forgets_expired_revocations(engine):
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    revoke_session(engine, "old", now + timedelta(hours=1), now)
    revoke_session(engine, "s1", now + timedelta(hours=12), now)
    revoke_session(engine, "s1", now + timedelta(hours=12), now)  # signed out twice: no error
    assert session_revoked(engine, "s1") and session_revoked(engine, "old") and not session_revoked(engine, "s2")
    revoke_session(engine, "s1", now + timedelta(hours=12), now + timedelta(hours=2))  # a repeat still tidies up
    with engine.connect() as conn:
        assert conn.execute(select(revoked_admin_sessions.c.session_id)).scalars().all() == ["s1"]
