"""Staff accounts with roles, on SQLite and PostgreSQL: the use case, `digest users`, and signing in.

Signing in goes through the real app (Starlette TestClient) and its login form; the shared admin
password of older installs keeps working until the first account is made from it.
"""

from __future__ import annotations

import json

import pytest
from admin_fixtures import PASSWORD, PASSWORD_HASH, log_in, login_token
from click.testing import CliRunner
from conftest import make_settings
from starlette.testclient import TestClient

from digest.cli import main
from digest.models import Account, Role
from digest.pipeline import accounts
from digest.pipeline.accounts import AccountError, AccountExists, NotAllowed
from digest.web.app import create_app

NEW_PASSWORD = "a long new passphrase"


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "accounts-test-secret")


@pytest.fixture
def site(tmp_path, store_url):
    return make_settings(tmp_path, store_url, web={"admin_password_hash": PASSWORD_HASH,
                                                    "base_url": "https://testserver"})


@pytest.fixture
def client(site, engine):
    with TestClient(create_app(site, engine), base_url="https://testserver") as c:
        yield c


def sign_in(client: TestClient, email: str, password: str):
    page = client.get("/admin/login")
    return client.post("/admin/login", data={"login_token": login_token(page.text), "email": email,
                                             "password": password, "next": "/admin/issues"}, follow_redirects=False)


def signed_in(client: TestClient) -> bool:
    return client.get("/admin/issues", follow_redirects=False).status_code == 200


# --- roles ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "allowed"), [
    (Role.EDITOR, {"build", "edit", "preview", "test_send", "read_reports"}),
    (Role.APPROVER, {"build", "edit", "preview", "test_send", "read_reports", "approve", "schedule", "send", "cancel"}),
    (Role.ADMIN, set(accounts.ROLE_NEEDED)),
])
def test_each_role_may_what_the_table_says(role, allowed):
    actor = Account(email="a@example.org", role=role)
    assert {action for action in accounts.ROLE_NEEDED if accounts.may(actor, action)} == allowed
    assert not any(accounts.may(Account(email="a@example.org", role=role, disabled=True), a) for a in allowed)


def test_not_allowed_names_who_may_and_what_the_account_is():
    with pytest.raises(NotAllowed, match="only approvers and admins may approve; ed@example.org is an editor"):
        accounts.require(Account(email="ed@example.org", role=Role.EDITOR), "approve")


# --- the use case ---------------------------------------------------------------------------------

def test_an_invite_link_sets_the_password_once(site, engine):
    made = accounts.add_account(site, engine, "Editor@Example.org", "editor", name="Eda Editor")
    assert made.account.email == "editor@example.org" and not made.account.has_password
    token = made.link.rsplit("/", 1)[1]
    assert made.link.startswith("https://testserver/admin/password/")
    assert accounts.read_password_link(site, engine, token).email == "editor@example.org"
    assert accounts.set_password_by_link(site, engine, token, NEW_PASSWORD).has_password
    with pytest.raises(AccountError, match="not valid any more"):  # used
        accounts.set_password_by_link(site, engine, token, "another passphrase")
    assert accounts.read_password_link(site, engine, token) is None
    assert accounts.sign_in(site, engine, "editor@example.org", NEW_PASSWORD).role == Role.EDITOR


def test_a_new_link_retires_the_old_one_and_an_expired_link_is_dead(site, engine, monkeypatch):
    made = accounts.add_account(site, engine, "ap@example.org", Role.APPROVER)
    reset = accounts.password_link(site, engine, "ap@example.org")
    assert accounts.read_password_link(site, engine, made.link.rsplit("/", 1)[1]) is None
    monkeypatch.setattr(accounts, "PASSWORD_LINK_HOURS", -1)  # every link is older than that
    with pytest.raises(AccountError):
        accounts.set_password_by_link(site, engine, reset.rsplit("/", 1)[1], NEW_PASSWORD)


@pytest.mark.parametrize(("email", "role", "password", "message"), [
    ("not-an-address", "editor", None, "is not an email address"),
    ("x@example.org", "owner", None, "'owner' is not a role: use editor, approver or admin"),
    ("x@example.org", "editor", "short", "at least 8 characters"),
])
def test_bad_accounts_are_refused_and_nothing_is_stored(site, engine, email, role, password, message):
    with pytest.raises(AccountError, match=message):
        accounts.add_account(site, engine, email, role, password=password)
    assert accounts.list_accounts(engine) == []


def test_a_second_account_for_an_address_is_refused(site, engine):
    accounts.add_account(site, engine, "one@example.org", "admin", password=NEW_PASSWORD)
    with pytest.raises(AccountExists, match="there is an account for one@example.org already"):
        accounts.add_account(site, engine, "ONE@example.org", "editor")


def test_the_last_admin_cannot_be_disabled_demoted_or_removed(site, engine):
    accounts.add_account(site, engine, "boss@example.org", "admin", password=NEW_PASSWORD)
    for change in (lambda: accounts.disable_account(engine, "boss@example.org"),
                   lambda: accounts.change_role(engine, "boss@example.org", "editor"),
                   lambda: accounts.remove_account(engine, "boss@example.org")):
        with pytest.raises(AccountError, match="last admin who can sign in"):
            change()
    accounts.add_account(site, engine, "second@example.org", "admin", password=NEW_PASSWORD)
    assert accounts.disable_account(engine, "boss@example.org").disabled
    assert accounts.sign_in(site, engine, "boss@example.org", NEW_PASSWORD) is None
    with pytest.raises(AccountError, match="last admin"):
        accounts.remove_account(engine, "second@example.org")


def test_wrong_passwords_and_unknown_addresses_open_nothing(site, engine):
    accounts.add_account(site, engine, "ed@example.org", "editor", password=NEW_PASSWORD)
    assert accounts.sign_in(site, engine, "ed@example.org", "wrong password") is None
    assert accounts.sign_in(site, engine, "nobody@example.org", NEW_PASSWORD) is None
    assert accounts.sign_in(site, engine, "ed@example.org", PASSWORD) is None  # the shared password is retired


# --- signing in through the app -------------------------------------------------------------------

def test_the_shared_password_keeps_working_until_it_becomes_the_first_admin(site, engine, client):
    assert log_in(client, name="Old Admin").status_code == 303 and signed_in(client)
    made = accounts.add_account(site, engine, "chief@example.org", "admin", name="Chief", from_admin_password=True)
    assert made.link == "" and made.account.has_password
    assert not signed_in(client)  # the shared password's session ended with it
    assert log_in(client, name="Old Admin").status_code == 401
    assert "Email address" in client.get("/admin/login").text
    assert sign_in(client, "chief@example.org", PASSWORD).status_code == 303 and signed_in(client)


@pytest.mark.parametrize("change", ["disable", "role", "password"])
def test_disabling_a_role_change_or_a_new_password_ends_open_sessions(site, engine, client, change):
    accounts.add_account(site, engine, "admin@example.org", "admin", password=NEW_PASSWORD)
    accounts.add_account(site, engine, "ed@example.org", "editor", password=NEW_PASSWORD)
    assert sign_in(client, "ed@example.org", NEW_PASSWORD).status_code == 303 and signed_in(client)
    {"disable": lambda: accounts.disable_account(engine, "ed@example.org"),
     "role": lambda: accounts.change_role(engine, "ed@example.org", "approver"),
     "password": lambda: accounts.set_password(engine, "ed@example.org", "yet another passphrase")}[change]()
    assert not signed_in(client)
    answer = sign_in(client, "ed@example.org", NEW_PASSWORD)
    assert answer.status_code == (303 if change == "role" else 401)


def test_a_disabled_account_cannot_sign_in(site, engine, client):
    accounts.add_account(site, engine, "admin@example.org", "admin", password=NEW_PASSWORD)
    accounts.add_account(site, engine, "gone@example.org", "approver", password=NEW_PASSWORD)
    accounts.disable_account(engine, "gone@example.org")
    answer = sign_in(client, "gone@example.org", NEW_PASSWORD)
    assert answer.status_code == 401 and "Wrong email address or password" in answer.text


# --- the command line -----------------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, store_url, engine):
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n\n[web]\nadmin_password_hash = "{PASSWORD_HASH}"\n'
                      'base_url = "https://digest.example.org"\n', encoding="utf-8")

    def run(*args: str, input: str | None = None):
        result = CliRunner().invoke(main, ["--config", str(config), "users", *args], input=input)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return run


def test_users_commands(cli, site, engine):
    code, out, _ = cli("add", "chief@example.org", "--role", "admin", "--from-admin-password", "--name", "Chief")
    assert code == 0 and "Added chief@example.org as admin" in out
    code, out, _ = cli("add", "ed@example.org", "--role", "editor")
    assert code == 0 and "Set-password link (works once, for 72 hours): https://digest.example.org/admin/password/" in out
    assert cli("add", "ap@example.org", "--role", "approver", "--password-stdin", input=NEW_PASSWORD + "\n")[0] == 0
    code, out, _ = cli("list", "--json")
    listed = {a["email"]: a for a in json.loads(out)}
    assert listed["ed@example.org"] == {"email": "ed@example.org", "name": "", "role": "editor", "disabled": False,
                                        "password_set": False}
    assert cli("role", "ed@example.org", "approver")[1] == "ed@example.org is now approver.\n"
    assert cli("disable", "ap@example.org")[0] == 0 and accounts.find_account(engine, "ap@example.org").disabled
    assert cli("enable", "ap@example.org")[0] == 0
    assert cli("password", "ap@example.org", "--password-stdin", input="fresh passphrase\n")[0] == 0
    assert accounts.sign_in(site, engine, "ap@example.org", "fresh passphrase") is not None
    assert cli("remove", "ap@example.org")[0] == 0 and accounts.find_account(engine, "ap@example.org") is None


@pytest.mark.parametrize(("args", "message"), [
    (("add", "x@example.org", "--role", "owner"), "'owner' is not one of"),
    (("role", "nobody@example.org", "admin"), "there is no account 'nobody@example.org'"),
    (("disable", "chief@example.org"), "chief@example.org is the last admin who can sign in"),
    (("add", "chief@example.org", "--role", "editor"), "there is an account for chief@example.org already"),
    (("add", "x@example.org", "--role", "editor", "--password-stdin"), "at least 8 characters"),
])
def test_users_commands_refuse_bad_input_with_exit_2(cli, engine, args, message):
    assert cli("add", "chief@example.org", "--role", "admin", "--from-admin-password")[0] == 0
    code, _, err = cli(*args, input="short\n")
    assert code == 2 and message in err
    assert [a.email for a in accounts.list_accounts(engine)] == ["chief@example.org"]


# --- `digest approve` records the account -----------------------------------------------------------

@pytest.fixture
def draft(site, engine):
    """Draft 1, stored as the pipeline stores one."""
    from send_helpers import NOW, sample_issue

    from digest.manifest import issue_to_manifest
    from digest.store.issues import create_issue

    issue = sample_issue()
    return create_issue(engine, issue, issue_to_manifest(issue, site), NOW).number


def approve(tmp_path, store_url, *args: str):
    config = tmp_path / "approve.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(config), "approve", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_approve_on_the_command_line_needs_an_account_that_may(tmp_path, store_url, site, engine, draft):
    from digest.pipeline.issues import issue_summary

    accounts.add_account(site, engine, "ed@example.org", "editor", password=NEW_PASSWORD)
    accounts.add_account(site, engine, "ap@example.org", "approver", name="Ada", password=NEW_PASSWORD)
    code, _, err = approve(tmp_path, store_url, str(draft))
    assert code == 2 and "say whose approval this is with --as EMAIL" in err
    code, _, err = approve(tmp_path, store_url, str(draft), "--as", "ed@example.org")
    assert code == 2 and "Only approvers and admins may approve; ed@example.org is an editor." in err
    code, _, err = approve(tmp_path, store_url, str(draft), "--as", "nobody@example.org")
    assert code == 2 and "there is no enabled account 'nobody@example.org'" in err
    assert issue_summary(engine, draft).status.value == "draft"
    code, out, _ = approve(tmp_path, store_url, str(draft), "--as", "AP@example.org")
    assert code == 0 and out.endswith("by Ada <ap@example.org>.\n")
    assert issue_summary(engine, draft).approved_by == "Ada <ap@example.org>"


def test_approve_without_accounts_records_the_name_given(tmp_path, store_url, engine, draft):
    from digest.pipeline.issues import issue_summary

    code, _, _ = approve(tmp_path, store_url, str(draft), "--by", "Anna")
    assert code == 0 and issue_summary(engine, draft).approved_by == "Anna"
