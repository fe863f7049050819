"""The accounts pages through the real app, on SQLite and PostgreSQL, with invitations sent to aiosmtpd.

The upgrade from the shared password, an invitation followed to a password and a sign-in, a reset
asked for on the sign-in page, the rules (only admins manage accounts, the last admin stays), and a
reload of every form changing nothing.
"""

from __future__ import annotations

import re

import pytest
from admin_fixtures import PASSWORD, PASSWORD_HASH, csrf_of, log_in, login_token
from conftest import make_settings
from starlette.testclient import TestClient

from digest.pipeline import accounts
from digest.pipeline.tokens import list_tokens
from digest.web.app import create_app

BASE = "https://testserver"
LINK_RE = re.compile(r"https://testserver(/admin/password/\S+)")
NEW_PASSWORD = "a long new passphrase"


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "accounts-web-secret")


@pytest.fixture
def site(tmp_path, store_url, smtp_server):
    return make_settings(tmp_path, store_url, web={"admin_password_hash": PASSWORD_HASH, "base_url": BASE},
                         delivery={"transport": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp_server.port}})


@pytest.fixture
def app(site, engine):
    return create_app(site, engine)


def browser(app) -> TestClient:
    return TestClient(app, base_url=BASE)


def sign_in(client: TestClient, email: str, password: str):
    page = client.get("/admin/login")
    return client.post("/admin/login", data={"login_token": login_token(page.text), "email": email,
                                             "password": password, "next": "/admin/issues"}, follow_redirects=False)


def post(client: TestClient, path: str, **data: str):
    token = csrf_of(client.get("/admin/accounts").text)
    return client.post(path, data={"csrf_token": token, **data}, follow_redirects=False)


def link_in_mail(smtp_server, address: str) -> str:
    mail = smtp_server.for_recipient(address)[-1]
    return LINK_RE.search(mail.get_body(("plain",)).get_content()).group(1)


def choose_password(client: TestClient, path: str, password: str = NEW_PASSWORD, again: str | None = None):
    page = client.get(path)
    assert page.status_code == 200 and "Choose your password" in page.text
    return client.post(path, data={"password": password, "again": password if again is None else again,
                                   "login_token": login_token(page.text)}, follow_redirects=False)


def forgot(client: TestClient, email: str):
    page = client.get("/admin/forgot")
    return client.post("/admin/forgot", data={"email": email, "login_token": login_token(page.text)},
                       follow_redirects=False)


def test_upgrade_invite_set_password_and_sign_in(app, engine, smtp_server):
    with browser(app) as chief:
        assert log_in(chief, name="Chief").status_code == 303
        page = chief.get("/admin/accounts")
        assert page.status_code == 200 and "Make your account" in page.text
        answer = post(chief, "/admin/accounts/adopt", email="chief@example.org", name="Chief")
        assert answer.status_code == 303 and answer.headers["location"] == "/admin/login?done=adopted"
        assert chief.get("/admin/accounts", follow_redirects=False).status_code == 401  # the shared session ended
        assert sign_in(chief, "chief@example.org", PASSWORD).status_code == 303
        answer = post(chief, "/admin/accounts/invite", email="Eda@Example.org", name="Eda", role="editor")
        assert answer.status_code == 303 and "done=invited" in answer.headers["location"]
        listing = chief.get("/admin/accounts").text
        assert "eda@example.org" in listing and "invited" in listing
    (mail,) = smtp_server.for_recipient("eda@example.org")
    assert mail["Subject"] == "You are invited to the Europa Progressiva Foundation digest admin"
    assert mail["Message-ID"] and mail["Date"]
    path = link_in_mail(smtp_server, "eda@example.org")
    with browser(app) as eda:
        done = choose_password(eda, path)
        assert done.status_code == 303 and done.headers["location"] == "/admin/login?done=password-set"
        again = eda.get(path)  # the link works once
        assert again.status_code == 404 and "does not work any more" in again.text
        assert sign_in(eda, "eda@example.org", NEW_PASSWORD).status_code == 303
        refused = eda.get("/admin/accounts")
        assert refused.status_code == 403 and "Only admins may manage accounts" in refused.text
        assert "/admin/accounts" not in eda.get("/admin/issues").text  # no Accounts link for an editor


def test_forgot_password_sends_a_reset_only_to_an_account_and_answers_the_same(site, engine, app, smtp_server):
    accounts.add_account(site, engine, "chief@example.org", "admin", password=NEW_PASSWORD)
    with browser(app) as client:
        assert "Forgot your password?" in client.get("/admin/login").text
        answers = [forgot(client, email) for email in ("chief@example.org", "nobody@example.org")]
        assert client.post("/admin/forgot", data={"email": "chief@example.org"}).status_code == 403  # no token
    assert [a.headers["location"] for a in answers] == ["/admin/login?done=reset-asked"] * 2
    assert smtp_server.for_recipient("nobody@example.org") == []
    path = link_in_mail(smtp_server, "chief@example.org")
    with browser(app) as client:
        assert sign_in(client, "chief@example.org", NEW_PASSWORD).status_code == 303
        with browser(app) as other:
            assert choose_password(other, path, "the reset passphrase").status_code == 303
        assert client.get("/admin/issues", follow_redirects=False).status_code == 401  # the new password ended it
        assert sign_in(client, "chief@example.org", "the reset passphrase").status_code == 303


def test_bad_passwords_on_the_link_page_change_nothing(site, engine, app):
    made = accounts.add_account(site, engine, "eda@example.org", "editor")
    path = made.link.removeprefix(BASE)
    with browser(app) as client:
        differ = choose_password(client, path, NEW_PASSWORD, NEW_PASSWORD + "x")
        assert differ.status_code == 400 and "The two passwords differ" in differ.text
        short = choose_password(client, path, "short")
        assert short.status_code == 400 and "at least 8 characters" in short.text
        tokenless = client.post(path, data={"password": NEW_PASSWORD, "again": NEW_PASSWORD})
        assert tokenless.status_code == 403 and "nothing was changed" in tokenless.text
        forged = client.get(path[:-3] + "abc")
        assert forged.status_code == 404
    assert not accounts.find_account(engine, "eda@example.org").has_password
    assert accounts.read_password_link(site, engine, path.rsplit("/", 1)[1]) is not None  # still usable


def test_admin_changes_roles_disables_and_the_last_admin_stays(site, engine, app):
    accounts.add_account(site, engine, "chief@example.org", "admin", password=NEW_PASSWORD)
    accounts.add_account(site, engine, "eda@example.org", "editor", password=NEW_PASSWORD)
    with browser(app) as chief, browser(app) as eda:
        assert sign_in(chief, "chief@example.org", NEW_PASSWORD).status_code == 303
        assert sign_in(eda, "eda@example.org", NEW_PASSWORD).status_code == 303
        assert post(chief, "/admin/accounts/role", email="eda@example.org", role="approver").status_code == 303
        assert accounts.find_account(engine, "eda@example.org").role.value == "approver"
        assert eda.get("/admin/issues", follow_redirects=False).status_code == 401  # sessions end with a new role
        assert sign_in(eda, "eda@example.org", NEW_PASSWORD).status_code == 303
        assert post(chief, "/admin/accounts/disable", email="eda@example.org").status_code == 303
        assert eda.get("/admin/issues", follow_redirects=False).status_code == 401
        last = post(chief, "/admin/accounts/disable", email="chief@example.org")
        assert last.status_code == 400 and "the last admin who can sign in" in last.text
        wrong = post(chief, "/admin/accounts/role", email="eda@example.org", role="owner")
        assert wrong.status_code == 400 and "is not a role" in wrong.text
        unknown = post(chief, "/admin/accounts/promote", email="eda@example.org")
        assert unknown.status_code == 404
        twice = post(chief, "/admin/accounts/invite", email="eda@example.org", role="editor")
        assert twice.status_code == 400 and "there is an account for eda@example.org already" in twice.text
    assert accounts.find_account(engine, "chief@example.org").disabled is False


def test_a_non_admin_cannot_change_accounts(site, engine, app):
    accounts.add_account(site, engine, "chief@example.org", "admin", password=NEW_PASSWORD)
    accounts.add_account(site, engine, "ap@example.org", "approver", password=NEW_PASSWORD)
    with browser(app) as ap:
        assert sign_in(ap, "ap@example.org", NEW_PASSWORD).status_code == 303
        token = csrf_of(ap.get("/admin/issues").text)
        answer = ap.post("/admin/accounts/role", data={"csrf_token": token, "email": "ap@example.org",
                                                       "role": "admin"}, follow_redirects=False)
        assert answer.status_code == 403 and "Only admins may manage accounts" in answer.text
    assert accounts.find_account(engine, "ap@example.org").role.value == "approver"


def test_an_admin_makes_and_revokes_an_api_token_in_the_admin(site, engine, app):
    accounts.add_account(site, engine, "chief@example.org", "admin", password=NEW_PASSWORD)
    accounts.add_account(site, engine, "web@example.org", "editor", password=NEW_PASSWORD)
    with browser(app) as chief:
        assert sign_in(chief, "chief@example.org", NEW_PASSWORD).status_code == 303
        made = post(chief, "/admin/accounts/token", email="web@example.org", name="website")
        assert made.status_code == 201 and "shown only this once" in made.text
        secret = re.search(r'id="new-token" type="text" readonly value="(dgst_[^"]+)"', made.text).group(1)
        assert secret not in chief.get("/admin/accounts").text  # never shown again
        api = chief.get("/api/v1/issues", headers={"authorization": f"Bearer {secret}"})
        assert api.status_code == 200
        (token,) = list_tokens(engine)
        assert (token.account_email, token.name, token.last_used_at is not None) == ("web@example.org", "website", True)
        assert post(chief, "/admin/accounts/revoke-token", token=str(token.id)).status_code == 303
        assert chief.get("/api/v1/issues", headers={"authorization": f"Bearer {secret}"}).status_code == 401
        again = post(chief, "/admin/accounts/revoke-token", token=str(token.id))
        assert again.status_code == 400 and f"there is no live token {token.id}" in again.text
    with browser(app) as editor:
        assert sign_in(editor, "web@example.org", NEW_PASSWORD).status_code == 303
        token = csrf_of(editor.get("/admin/issues").text)
        refused = editor.post("/admin/accounts/token", data={"csrf_token": token, "email": "web@example.org"})
        assert refused.status_code == 403 and "Only admins may manage API tokens; web@example.org is an editor." in refused.text


def test_an_account_sends_tests_to_itself_or_the_staff_list_only(tmp_path, store_url, smtp_server):
    from admin_fixtures import admin_store

    store = admin_store(tmp_path, store_url, web={"base_url": BASE},
                        schedule={"staff": ["Desk <desk@example.org>"]},
                        delivery={"transport": "smtp", "smtp": {"host": "127.0.0.1", "port": smtp_server.port}})
    accounts.add_account(store.settings, store.engine, "eda@example.org", "editor", password=NEW_PASSWORD)
    with browser(create_app(store.settings, store.engine)) as eda:
        assert sign_in(eda, "eda@example.org", NEW_PASSWORD).status_code == 303
        csrf = csrf_of(eda.get("/admin/issues/1").text)
        outside = eda.post("/admin/issues/1/test", data={"csrf_token": csrf, "address": "friend@example.net"})
        assert outside.status_code == 403 and "friend@example.net is neither" in outside.text
        for address in ("eda@example.org", "desk@example.org"):
            sent = eda.post("/admin/issues/1/test", data={"csrf_token": csrf, "address": address},
                            follow_redirects=False)
            assert sent.status_code == 303 and "done=test-sent" in sent.headers["location"]
    assert smtp_server.for_recipient("friend@example.net") == []
    assert len(smtp_server.for_recipient("desk@example.org")) == 1
