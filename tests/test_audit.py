"""The audit trail on SQLite and PostgreSQL: what account changes record, the admin page's filters and
exports, `digest audit`, and a hostile name that must not become a spreadsheet formula."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime

import pytest
from admin_fixtures import PASSWORD_HASH, login_token
from click.testing import CliRunner
from conftest import make_settings
from starlette.testclient import TestClient

from digest.cli import main
from digest.models import Account, Role
from digest.pipeline import accounts, audit
from digest.web.app import create_app

PASSWORD = "a long passphrase"
CHIEF = Account(email="chief@example.org", role=Role.ADMIN, name="Chief")
NOW_UTC = datetime.now(UTC)  # the other changes record the real time: one clock for all


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "audit-secret")


@pytest.fixture
def site(tmp_path, store_url):
    return make_settings(tmp_path, store_url, web={"admin_password_hash": PASSWORD_HASH,
                                                    "base_url": "https://testserver"})


def test_account_changes_are_recorded_with_who_and_what(site, engine):
    accounts.add_account(site, engine, "chief@example.org", "admin", name="Chief", password=PASSWORD)
    chief = accounts.find_account(engine, "chief@example.org")
    accounts.add_account(site, engine, "eda@example.org", "editor", password=PASSWORD, actor=chief)
    accounts.change_role(engine, "eda@example.org", "approver", actor=chief)
    accounts.disable_account(engine, "eda@example.org", actor=chief)
    accounts.remove_account(engine, "eda@example.org", actor=chief)
    trail = audit.audit_trail(engine)
    assert [(e.action, e.actor, e.target) for e in reversed(trail.entries)] == [
        ("account.add", trail.entries[-1].actor, "chief@example.org"),
        ("account.add", "Chief <chief@example.org>", "eda@example.org"),
        ("account.role", "Chief <chief@example.org>", "eda@example.org"),
        ("account.disable", "Chief <chief@example.org>", "eda@example.org"),
        ("account.remove", "Chief <chief@example.org>", "eda@example.org"),
    ]
    assert trail.entries[-1].actor.startswith("command line (")  # `digest users add` on the server
    assert trail.entries[2].detail == {"from": "editor", "to": "approver"}
    assert audit.audit_trail(engine, person="CHIEF@example.org").total == 4
    assert audit.people(engine) == [("chief@example.org", "Chief <chief@example.org>")]


def test_the_trail_filters_by_issue_and_pages(site, engine):
    for n in range(120):
        audit.record(engine, CHIEF, "issue.edit", issue_number=n % 3 + 1, detail={"n": n})
    first = audit.audit_trail(engine, issue_number=2)
    assert first.total == 40 and first.pages == 1 and {e.issue_number for e in first.entries} == {2}
    everything = audit.audit_trail(engine, page=3)
    assert (everything.total, everything.pages, len(everything.entries)) == (120, 3, 20)
    assert everything.entries[-1].detail == {"n": 0}  # newest first: the oldest is last on the last page


def test_exports_keep_everything_and_never_make_a_formula(site, engine):
    audit.record(engine, Account(email="", role=Role.ADMIN, name="=HYPERLINK(\"http://evil\")"), "issue.edit",
                 issue_number=1, target="+1", detail={"subject": "Ça va"})
    rows = list(csv.DictReader(io.StringIO(audit.export_audit(engine, "csv"))))
    assert rows[0]["actor"] == "'=HYPERLINK(\"http://evil\")" and rows[0]["target"] == "'+1"
    assert json.loads(rows[0]["detail"]) == {"subject": "Ça va"}
    (entry,) = json.loads(audit.export_audit(engine, "json"))
    assert entry["actor"] == "=HYPERLINK(\"http://evil\")" and entry["issue"] == 1
    with pytest.raises(ValueError, match="'xml' is not an export format"):
        audit.export_audit(engine, "xml")


def test_the_audit_page_and_its_exports(site, engine):
    accounts.add_account(site, engine, "chief@example.org", "admin", name="Chief", password=PASSWORD)
    accounts.add_account(site, engine, "eda@example.org", "editor", password=PASSWORD,
                         actor=accounts.find_account(engine, "chief@example.org"))
    audit.record(engine, CHIEF, "issue.approve", issue_number=7, detail={"version": "abc"})
    with TestClient(create_app(site, engine), base_url="https://testserver") as client:
        page = client.get("/admin/login")
        client.post("/admin/login", data={"login_token": login_token(page.text), "email": "eda@example.org",
                                          "password": PASSWORD, "next": "/admin/issues"})
        shown = client.get("/admin/audit?issue=7")
        assert shown.status_code == 200 and "issue.approve" in shown.text and "account.add" not in shown.text
        assert "Chief &lt;chief@example.org&gt;" in shown.text
        by_chief = client.get("/admin/audit", params={"person": "chief@example.org"}).text
        assert "eda@example.org" in by_chief and "issue.approve" in by_chief
        exported = client.get("/admin/audit.json?issue=7")
        assert exported.headers["content-disposition"] == 'attachment; filename="digest-audit.json"'
        assert [e["action"] for e in exported.json()] == ["issue.approve"]
        assert client.get("/admin/audit.csv").text.startswith("at,actor,actor_email,action,issue,target,detail\r\n")
        assert client.get("/admin/audit?issue=seven").status_code == 400


def test_digest_audit_on_the_command_line(tmp_path, store_url, engine, site):
    audit.record(engine, CHIEF, "issue.approve", issue_number=3, detail={"version": "v1"})
    audit.record(engine, CHIEF, "issue.edit", issue_number=4)
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "{store_url}"\n', encoding="utf-8")
    run = CliRunner().invoke(main, ["--config", str(config), "audit", "--issue", "3"])
    assert run.exit_code == 0 and "Chief <chief@example.org>  issue.approve #3  (version: v1)" in run.stdout
    assert "issue.edit" not in run.stdout
    run = CliRunner().invoke(main, ["--config", str(config), "audit", "--format", "json"])
    assert [e["issue"] for e in json.loads(run.stdout)] == [4, 3]
    run = CliRunner().invoke(main, ["--config", str(config), "audit", "--person", "nobody@example.org"])
    assert run.stdout == "Nothing recorded for this filter.\n"


def test_feed_changes_imports_and_erasures_are_recorded(tmp_path, site, engine):
    from digest.pipeline import feeds, subscribers

    feeds.add_feed(site, engine, "Press", "https://press.example.org/feed/", "news", None, NOW_UTC, actor=CHIEF)
    feeds.pause_feed(site, engine, "Press", actor=CHIEF)
    feeds.rename_feed(site, engine, "Press", "Press releases", actor=CHIEF)
    feeds.remove_feed(site, engine, "Press releases")
    listing = tmp_path / "list.csv"
    listing.write_text("email\nreader@example.org\n", encoding="utf-8")
    subscribers.import_subscribers(site, engine, listing, actor=CHIEF)
    subscribers.erase_subscriber(site, engine, "reader@example.org", NOW_UTC, actor=CHIEF)
    trail = list(reversed(audit.audit_trail(engine).entries))
    assert [(e.action, e.target) for e in trail] == [
        ("feed.add", "Press"), ("feed.pause", "Press"), ("feed.rename", "Press releases"),
        ("feed.remove", "Press releases"), ("subscribers.import", "list.csv"), ("subscribers.erase", "")]
    assert trail[3].actor.startswith("command line (")
    assert trail[4].detail == {"added": 1, "updated": 0, "unchanged": 0, "suppressed": 0, "rejected": 0}
    assert "reader@example.org" not in audit.export_audit(engine, "json")  # an erasure leaves no address


# --- issue changes and the four-eyes rule -------------------------------------------------------------

def _signed_in(client: TestClient, email: str) -> TestClient:
    page = client.get("/admin/login")
    client.post("/admin/login", data={"login_token": login_token(page.text), "email": email, "password": PASSWORD,
                                      "next": "/admin/issues"})
    return client


def test_issue_changes_are_recorded_and_the_four_eyes_rule_holds(tmp_path, store_url):
    from admin_fixtures import admin_store, csrf_of

    from digest.pipeline.issues import get_issue

    store = admin_store(tmp_path, store_url, web={"base_url": "https://testserver"},
                        review={"require_second_person": True})
    for email in ("ada@example.org", "bo@example.org"):
        accounts.add_account(store.settings, store.engine, email, "approver", password=PASSWORD)
    app = create_app(store.settings, store.engine)
    with TestClient(app, base_url="https://testserver") as ada, TestClient(app, base_url="https://testserver") as bo:
        _signed_in(ada, "ada@example.org")
        csrf = csrf_of(ada.get("/admin/issues/1").text)
        ada.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "subject": "Ada's subject", "intro": ""})
        version = get_issue(store.engine, 1).version
        page = ada.get("/admin/issues/1").text
        assert 'id="approve" disabled' in page and "You edited this issue last" in page
        refused = ada.post("/admin/issues/1/approve", data={"csrf_token": csrf, "version": version})
        assert refused.status_code == 403 and get_issue(store.engine, 1).status.value == "draft"
        _signed_in(bo, "bo@example.org")
        csrf_bo = csrf_of(bo.get("/admin/issues/1").text)
        assert bo.post("/admin/issues/1/approve", data={"csrf_token": csrf_bo, "version": version}).status_code == 200
        bo.post("/admin/issues/1/send", data={"csrf_token": csrf_bo, "confirm": "yes"})
    trail = [(e.action, e.actor) for e in reversed(audit.audit_trail(store.engine, issue_number=1).entries)]
    assert trail == [("issue.build", trail[0][1]), ("issue.edit", "ada@example.org"),
                     ("issue.approve", "bo@example.org"), ("issue.send", "bo@example.org")]
    assert get_issue(store.engine, 1).status.value == "sent"
