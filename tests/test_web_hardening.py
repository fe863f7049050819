"""Attacks on the running web app (issue 16): parallel logins, sub-address mail bombs, sign-up timing,
NUL bytes and error pages, CSRF tokens moved between forms.

Logins go to a real uvicorn server on 127.0.0.1 with concurrent httpx requests; it trusts
X-Forwarded-For from loopback, so one test can be many clients. The rest runs the app in-process,
on SQLite and PostgreSQL where the store matters.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path

import httpx
import pytest
import uvicorn
from admin_fixtures import PASSWORD, PASSWORD_HASH, login_token
from conftest import free_port, make_settings, run_async
from sqlalchemy import Engine, event, text
from starlette.testclient import TestClient

from digest.config import Settings
from digest.models import Subscriber, SubscriberStatus
from digest.pipeline.signup import canonical_mailbox
from digest.signing import subscriber_links, suppression_keys
from digest.store import signups
from digest.store import subscribers as store
from digest.web.admin_auth import LoginAttempt, LoginLimiter, LoginRefused
from digest.web.app import create_app

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "hardening-secret")
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)


# --- a real server ---------------------------------------------------------------------------------

@dataclass
class Served:
    url: str
    settings: Settings
    app: object


@pytest.fixture
def served(tmp_path, sqlite_url) -> Iterator[Served]:
    """The app under uvicorn on 127.0.0.1, trusting X-Forwarded-For from loopback (a proxy's)."""
    port = free_port()
    settings = make_settings(tmp_path, sqlite_url, web={"base_url": f"http://127.0.0.1:{port}",
                                                        "admin_password_hash": PASSWORD_HASH})
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           proxy_headers=True, forwarded_allow_ips="127.0.0.1"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield Served(settings.web.base_url, settings, app)
    server.should_exit = True
    thread.join(timeout=10)
    app.state.engine.dispose()


def login_limiter(app) -> LoginLimiter:
    """The login limiter of a running app (the admin object behind its POST /admin/login route)."""
    route = next(r for r in app.routes if getattr(r, "path", "") == "/admin/login" and "POST" in r.methods)
    return route.endpoint.args[0].limiter


def login_form(base: str) -> tuple[dict, str]:
    """(cookies, login token) of the login page, as a browser holds them before posting."""
    page = httpx.get(f"{base}/admin/login", timeout=10)
    return dict(page.cookies), login_token(page.text)


async def post_logins(base: str, count: int, password: str, clients: list[str] | None = None) -> list[httpx.Response]:
    """`count` sign-ins at once, each on its own connection; from `clients` (X-Forwarded-For) if given."""
    cookies, token = login_form(base)
    form = {"login_token": token, "name": "Mallory", "password": password, "next": "/admin/issues"}
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, cookies=cookies, limits=limits, timeout=60) as client:
        def one(n: int):
            headers = {"x-forwarded-for": clients[n]} if clients else {}
            return client.post("/admin/login", data=form, headers=headers, follow_redirects=False)
        return await asyncio.gather(*(one(n) for n in range(count)))


# --- 16.1: parallel logins ---------------------------------------------------------------------------

def test_sixty_parallel_wrong_passwords_from_one_address_check_at_most_five(served):
    answers = run_async(post_logins(served.url, 60, "wrong"))
    codes = [a.status_code for a in answers]
    assert set(codes) <= {401, 429}, codes
    assert 1 <= codes.count(401) <= 5, codes  # before the fix: 55 were checked
    assert all(a.headers["retry-after"].isdigit() for a in answers if a.status_code == 429)
    # Attempts refused while others hashed were not counted: whatever the burst used, the address
    # gets exactly 5 checks in the window, and then even the right password is refused.
    cookies, token = login_form(served.url)
    later = [httpx.post(f"{served.url}/admin/login", cookies=cookies, timeout=30, data={
        "login_token": token, "name": "Mallory", "password": "wrong"}).status_code for _ in range(6)]
    assert codes.count(401) + later.count(401) == 5, (codes, later)
    right = httpx.post(f"{served.url}/admin/login", cookies=cookies, timeout=30,
                       data={"login_token": token, "name": "Anna", "password": PASSWORD})
    assert right.status_code == 429 and "Too many failed sign-ins" in right.text
    assert login_limiter(served.app).running() == 0


def test_while_every_hashing_slot_is_busy_sign_ins_get_429_at_once(served):
    limiter = login_limiter(served.app)
    held = [limiter.start(f"192.0.2.{n}") for n in range(served.settings.web.login_hash_slots)]
    assert limiter.running() == served.settings.web.login_hash_slots  # as if those checks were hashing
    clients = [f"198.51.100.{n}" for n in range(10)]  # ten clients, none over its own limit
    answers = run_async(post_logins(served.url, 10, PASSWORD, clients))
    assert [a.status_code for a in answers] == [429] * 10  # before the fix: 10 × 303, 10 hashes at once
    assert all(a.headers["retry-after"] == "1" and "Try again in a moment" in a.text for a in answers)
    assert all("digest_admin=" not in a.headers.get("set-cookie", "") for a in answers)
    for attempt in held:
        limiter.finish(attempt, ok=True)
    # Nothing was counted against those clients: the first of them signs in now.
    (signed_in,) = run_async(post_logins(served.url, 1, PASSWORD, clients[:1]))
    assert signed_in.status_code == 303


def test_the_login_limit_counts_attempts_in_progress_and_gives_back_successes():
    now = [0.0]
    limiter = LoginLimiter(attempts=3, window=300, slots=10, clock=lambda: now[0])
    running = [limiter.start("10.0.0.1") for _ in range(3)]  # three checks still hashing
    refused = limiter.start("10.0.0.1")
    assert not refused.busy and refused.retry_after == 300  # the fourth is refused before hashing
    assert isinstance(limiter.start("10.0.0.2"), LoginAttempt) and limiter.running() == 4
    limiter.finish(running[0], ok=True)  # the right password: its attempt is given back
    limiter.finish(running[1], ok=False)
    assert isinstance(limiter.start("10.0.0.1"), LoginAttempt)
    assert isinstance(limiter.start("10.0.0.1"), LoginRefused)  # two failed or running, one new: 3
    now[0] = 301.0
    assert isinstance(limiter.start("10.0.0.1"), LoginAttempt)  # the window has passed


# --- 16.3: sub-addressing and one domain -------------------------------------------------------------

@pytest.fixture
def web_settings(tmp_path, store_url):
    return make_settings(tmp_path, store_url, web={"base_url": "http://testserver", "subscribe_burst": 100})


def outbox(settings) -> list:
    folder = Path(settings.delivery.outbox_dir)
    files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]


def recipients(settings) -> list[str]:
    return [m["To"].addresses[0].addr_spec for m in outbox(settings)]


def sign_up(client: TestClient, email: str, **fields):
    token = CSRF_RE.search(client.get("/subscribe").text).group(1)
    return client.post("/subscribe", data={"csrf_token": token, "email": email, "language": "en", **fields})


def test_canonical_mailbox_drops_the_sub_address_and_folds_the_domain():
    assert canonical_mailbox("victim+7@Example.ORG") == "victim@example.org"
    assert canonical_mailbox("victim@example.org") == canonical_mailbox("victim+a+b@example.org")
    assert canonical_mailbox("+tag@example.org") == "+tag@example.org"  # nothing before the "+" to keep


def test_sub_addresses_of_one_mailbox_share_its_cooldown(web_settings, engine):
    with TestClient(create_app(web_settings, engine)) as client:
        pages = {sign_up(client, f"victim+{n}@Example.org").text for n in range(1, 11)}
        pages.add(sign_up(client, "victim@example.org").text)
        pages.add(sign_up(client, "other_victim+1@example.org").text)
    assert len(pages) == 1  # the same page every time
    # Before the fix: ten emails to victim's mailbox. "other_victim" is another mailbox
    # ("_" is no wildcard here).
    assert recipients(web_settings) == ["victim+1@example.org", "other_victim+1@example.org"]


def test_one_domain_gets_at_most_its_hourly_cap_of_confirmation_emails(tmp_path, store_url, engine):
    settings = make_settings(tmp_path, store_url, web={"base_url": "http://testserver", "subscribe_burst": 100,
                                                       "confirm_mail_per_domain_hour": 3})
    with TestClient(create_app(settings, engine)) as client:
        for name in ("a", "b", "c", "d", "e"):
            assert sign_up(client, f"{name}@target.example").status_code == 200
        sign_up(client, "x@elsewhere.example")
        sign_up(client, "y@xtarget.example")  # another domain, though it ends the same
    assert recipients(settings) == ["a@target.example", "b@target.example", "c@target.example",
                                    "x@elsewhere.example", "y@xtarget.example"]


def test_the_domain_cap_looks_back_one_hour(engine):
    start = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)
    people = [store.add_subscriber(engine, Subscriber(email=f"p{n}@cap.example"), start, event="signup")
              for n in range(3)]

    def record(n: int, at: datetime) -> str | None:
        return signups.record_signup_request(engine, people[n].id, people[n], "ip", timedelta(hours=1), at,
                                             mailbox=people[n].email, per_domain_hour=2)

    assert record(0, start) and record(1, start + timedelta(minutes=10))
    assert record(2, start + timedelta(minutes=59)) is None
    assert record(2, start + timedelta(minutes=61))  # the first has left the hour


# --- 16.4: the same work before answering, whatever the address ---------------------------------------

class AnswerWatch:
    """Wraps the app: records each SQL statement the store runs, and whether the response had started."""

    def __init__(self, app, engine: Engine) -> None:
        self.app, self.answered = app, False
        self.before: list[str] = []
        self.after: list[str] = []
        event.listen(engine, "before_cursor_execute", self._statement)

    def _statement(self, conn, cursor, statement, parameters, context, executemany) -> None:
        table = re.search(r"\b(?:FROM|INTO|UPDATE)\s+\"?(\w+)", statement, re.IGNORECASE)
        (self.after if self.answered else self.before).append(
            f"{statement.split()[0].upper()} {table.group(1) if table else ''}".strip())

    async def __call__(self, scope, receive, send) -> None:
        async def watch(message) -> None:
            if message["type"] == "http.response.start":
                self.answered = True
            await send(message)

        self.answered = False
        await self.app(scope, receive, watch)


def test_every_sign_up_does_the_same_work_before_answering(web_settings, engine):
    def add(email: str, status: SubscriberStatus) -> None:
        s = store.add_subscriber(engine, Subscriber(email=email, status=SubscriberStatus.CONFIRMED))
        if status != SubscriberStatus.CONFIRMED:
            store.set_status(engine, s.id, status)

    for status in (SubscriberStatus.CONFIRMED, SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED,
                   SubscriberStatus.COMPLAINED):
        add(f"{status.value}@example.org", status)
    store.add_subscriber(engine, Subscriber(email="pending@example.org"), event="signup")
    store.add_subscriber(engine, Subscriber(email="erased@example.org"))
    store.erase_subscriber(engine, "erased@example.org", suppression_keys(web_settings))
    states = ["new", "pending", "confirmed", "unsubscribed", "bounced", "complained", "erased"]
    app = create_app(web_settings, engine)
    watch = AnswerWatch(app, engine)
    pages, before, after = {}, {}, {}
    with TestClient(watch) as client:
        token = CSRF_RE.search(client.get("/subscribe").text).group(1)
        for state in states * 2:  # the second round: the same address again (its cooldown)
            watch.before.clear()
            watch.after.clear()
            answer = client.post("/subscribe", data={"csrf_token": token, "email": f"{state}@example.org"})
            pages.setdefault(state, set()).add((answer.status_code, answer.text))
            before.setdefault(state, []).append(list(watch.before))
            after.setdefault(state, []).append(list(watch.after))
    # Before answering, only the settings in force are read (the series a form may choose, the footer's
    # address): the same statements for every address, none about subscribers. Before the fix: reads
    # and writes of the address's own rows.
    assert len({tuple(map(tuple, runs)) for runs in before.values()}) == 1, before
    assert all(statement in ("SELECT managed_settings", "SELECT series_sources")
               for runs in before.values() for run in runs for statement in run), before
    assert all(all(run for run in runs) for runs in after.values()), after  # the store work came after
    assert len(set().union(*pages.values())) == 1  # one page for all
    assert sorted(recipients(web_settings)) == ["erased@example.org", "new@example.org", "pending@example.org",
                                                "unsubscribed@example.org"]
    assert store.get_subscriber(engine, "new@example.org").status == SubscriberStatus.PENDING


def test_a_store_failure_after_answering_is_logged(web_settings, engine, caplog):
    with TestClient(create_app(web_settings, engine)) as client:
        token = CSRF_RE.search(client.get("/subscribe").text).group(1)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE signup_requests RENAME TO signup_requests_away"))
        try:
            answer = client.post("/subscribe", data={"csrf_token": token, "email": "late@example.org"})
        finally:
            with engine.begin() as conn:
                conn.execute(text("ALTER TABLE signup_requests_away RENAME TO signup_requests"))
    assert answer.status_code == 200 and "Check your inbox" in answer.text
    assert "could not store a sign-up" in caplog.text and outbox(web_settings) == []


# --- 16.9: NUL bytes and the headers of error responses ----------------------------------------------

HEADERS = ("content-security-policy", "x-frame-options", "referrer-policy", "x-content-type-options")


@pytest.mark.parametrize("path", ["/static/%00", "/static/site.css%00", "/subscribe%00", "/confirm/a%00b",
                                  "/archive/%00", "/admin/%00"])
def test_a_nul_byte_in_the_path_is_not_found(tmp_path, sqlite_url, path):
    settings = make_settings(tmp_path, sqlite_url, web={"base_url": "http://testserver"})
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        answer = client.get(path)
    assert answer.status_code == 404, path  # before the fix: 500 for /static/…
    assert all(h in answer.headers for h in HEADERS)


def test_every_error_response_carries_the_security_headers(tmp_path, sqlite_url):
    settings = make_settings(tmp_path, sqlite_url, web={"base_url": "http://testserver"})
    app = create_app(settings)
    engine = app.state.engine
    reader = store.add_subscriber(engine, Subscriber(email="r@example.org", status=SubscriberStatus.CONFIRMED))
    with TestClient(app, raise_server_exceptions=False) as client:
        answers = {404: client.get("/no-such-page"), 405: client.delete("/subscribe"),
                   413: client.post("/subscribe", data={"name": "x" * 70_000})}
        with engine.begin() as conn:  # the store breaks under the running app
            conn.execute(text("ALTER TABLE subscribers RENAME TO subscribers_away"))
        answers[500] = client.get(subscriber_links(settings, reader).unsubscribe_url)
    for status, answer in answers.items():
        assert answer.status_code == status
        missing = [h for h in HEADERS if h not in answer.headers]
        assert not missing, (status, missing)  # before the fix: the 500 had none
    assert answers[500].headers["x-frame-options"] == "DENY"


# --- 16.16b: a CSRF token is good for its own form only ----------------------------------------------

def test_a_csrf_token_works_only_for_its_own_form_and_browser(web_settings, engine):
    confirmed = store.add_subscriber(engine, Subscriber(email="c@example.org", status=SubscriberStatus.CONFIRMED))
    other = store.add_subscriber(engine, Subscriber(email="o@example.org", status=SubscriberStatus.CONFIRMED))
    links, other_links = subscriber_links(web_settings, confirmed), subscriber_links(web_settings, other)
    app = create_app(web_settings, engine)
    with TestClient(app) as visitor, TestClient(app) as mallory:
        subscribe_token = CSRF_RE.search(visitor.get("/subscribe").text).group(1)
        other_token = CSRF_RE.search(visitor.get(other_links.unsubscribe_url).text).group(1)
        refused = [
            visitor.post(links.unsubscribe_url, data={"csrf_token": subscribe_token}),
            visitor.post(links.unsubscribe_url, data={"csrf_token": other_token}),  # another reader's form
            visitor.post(links.preferences_url, data={"csrf_token": subscribe_token, "action": "save",
                                                      "language": "de"}),
        ]
        assert [r.status_code for r in refused] == [403] * 3  # before the fix: all three went through
        own_token = CSRF_RE.search(visitor.get(links.unsubscribe_url).text).group(1)
        # The right form's token, but from another browser (session): refused too.
        mallory_token = CSRF_RE.search(mallory.get(links.unsubscribe_url).text).group(1)
        assert mallory.post(links.unsubscribe_url, data={"csrf_token": own_token}).status_code == 403
        assert visitor.post(links.unsubscribe_url, data={"csrf_token": mallory_token}).status_code == 403
        assert store.get_subscriber(engine, confirmed.id).status == SubscriberStatus.CONFIRMED
        assert visitor.post(links.unsubscribe_url, data={"csrf_token": own_token}).status_code == 200
    assert store.get_subscriber(engine, confirmed.id).status == SubscriberStatus.UNSUBSCRIBED
    assert store.get_subscriber(engine, other.id).status == SubscriberStatus.CONFIRMED


@pytest.mark.parametrize(("key", "value"), [("confirm_mail_per_domain_hour", -1), ("login_hash_slots", 0)])
def test_the_new_web_limits_refuse_impossible_values(tmp_path, key, value):
    from digest.config import ConfigError

    with pytest.raises(ConfigError, match=f"'web.{key}'"):
        make_settings(tmp_path, web={key: value})
