"""The JSON API through the real app, on SQLite and PostgreSQL: every endpoint with a good token, a
revoked one and one whose role is too low; bad bodies; every answer checked against the OpenAPI document."""

from __future__ import annotations

from typing import Any

import pytest
from admin_fixtures import admin_store
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_document
from starlette.testclient import TestClient

from digest.pipeline import accounts, tokens
from digest.store import subscribers as subscriber_store
from digest.web.app import create_app
from digest.web.openapi import openapi_document

BASE = "https://testserver"
DOCUMENT = openapi_document()


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "api-secret")


@pytest.fixture
def site(tmp_path, store_url):
    store = admin_store(tmp_path, store_url, web={"base_url": BASE})
    made = {}
    for role in ("editor", "approver", "admin"):
        accounts.add_account(store.settings, store.engine, f"{role}@example.org", role, password="a long passphrase")
        made[role] = tokens.issue_token(store.engine, f"{role}@example.org", name=role).secret
    revoked = tokens.issue_token(store.engine, "admin@example.org", name="old")
    tokens.revoke_token(store.engine, revoked.id)
    made["revoked"] = revoked.secret
    with TestClient(create_app(store.settings, store.engine), base_url=BASE) as client:
        yield store, client, made


def conforms(answer, path: str, method: str) -> Any:
    """The answer's JSON, after checking it against the document's schema for its path, method and status."""
    operation = DOCUMENT["paths"][path][method]
    response = operation["responses"][str(answer.status_code)]
    schema = {**response["content"]["application/json"]["schema"], "components": DOCUMENT["components"]}
    Draft202012Validator(schema).validate(answer.json())
    return answer.json()


def call(client, token: str | None, method: str, url: str, **kwargs):
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return client.request(method, url, headers=headers, **kwargs)


def test_the_document_is_valid_openapi_and_served(site):
    validate_document(DOCUMENT)
    _, client, _ = site
    served = client.get("/api/v1/openapi.json")
    assert served.status_code == 200 and served.json() == DOCUMENT


def test_issues_list_get_edit_approve_send_report(site):
    store, client, token = site
    listed = conforms(call(client, token["editor"], "GET", "/api/v1/issues"), "/api/v1/issues", "get")
    assert listed["total"] == 1 and listed["items"][0]["status"] == "draft" and listed["next"] is None
    manifest = conforms(call(client, token["editor"], "GET", "/api/v1/issues/1"), "/api/v1/issues/{number}", "get")
    edited = call(client, token["editor"], "PATCH", "/api/v1/issues/1", json={"subject": "This week in Europe"})
    edited_manifest = conforms(edited, "/api/v1/issues/{number}", "patch")
    assert edited_manifest["issue"]["version"] != manifest["issue"]["version"]

    refused = call(client, token["editor"], "POST", "/api/v1/issues/1/approve", json={"version": manifest["issue"]["version"]})
    assert refused.status_code == 403 and "only approvers and admins may approve" in conforms(
        refused, "/api/v1/issues/{number}/approve", "post")["error"]["message"]
    stale = call(client, token["approver"], "POST", "/api/v1/issues/1/approve", json={"version": manifest["issue"]["version"]})
    assert stale.status_code == 409 and conforms(stale, "/api/v1/issues/{number}/approve", "post")
    approved = call(client, token["approver"], "POST", "/api/v1/issues/1/approve",
                    json={"version": edited_manifest["issue"]["version"]})
    assert conforms(approved, "/api/v1/issues/{number}/approve", "post")["status"] == "approved"
    summary = call(client, token["editor"], "GET", "/api/v1/issues").json()["items"][0]
    assert summary["approved_by"] == "approver@example.org"  # the account, not typed text

    assert call(client, token["editor"], "POST", "/api/v1/issues/1/send").status_code == 403
    started = call(client, token["approver"], "POST", "/api/v1/issues/1/send")
    assert started.status_code == 202 and conforms(started, "/api/v1/issues/{number}/send", "post")
    report = conforms(call(client, token["editor"], "GET", "/api/v1/issues/1/report"),
                      "/api/v1/issues/{number}/report", "get")
    assert report["sent"] == 3 and report["status"] == "sent"  # the background send ran before the answer ended
    again = call(client, token["approver"], "POST", "/api/v1/issues/1/send")
    assert again.status_code == 409 and "only an approved issue can be sent" in again.json()["error"]["message"]
    missing = call(client, token["editor"], "GET", "/api/v1/issues/99/report")
    assert missing.status_code == 404 and conforms(missing, "/api/v1/issues/{number}/report", "get")


def test_build_answers_created_or_nothing_new(site):
    _, client, token = site
    built = call(client, token["editor"], "POST", "/api/v1/issues")
    assert built.status_code in (201, 409)
    if built.status_code == 201:
        conforms(built, "/api/v1/issues", "post")
    else:
        assert conforms(built, "/api/v1/issues", "post")["error"]["status"] == 409


def test_feeds_and_pagination(site):
    _, client, token = site
    first = conforms(call(client, token["editor"], "GET", "/api/v1/feeds?per_page=2"), "/api/v1/feeds", "get")
    assert len(first["items"]) == 2 and first["total"] > 2 and "page=2" in first["next"]
    rest = call(client, token["editor"], "GET", first["next"].removeprefix(BASE)).json()
    assert {f["name"] for f in first["items"]}.isdisjoint({f["name"] for f in rest["items"]})
    for bad in ("page=0", "per_page=500", "page=two"):
        answer = call(client, token["editor"], "GET", f"/api/v1/feeds?{bad}")
        assert answer.status_code == 400 and conforms(answer, "/api/v1/feeds", "get")


def test_subscribers_create_get_update_unsubscribe_erase(site):
    store, client, token = site
    created = call(client, token["editor"], "POST", "/api/v1/subscribers",
                   json={"email": "New.Reader@Example.org", "language": "fr", "series": ["esa-economy-trade"]})
    assert created.status_code == 202 and conforms(created, "/api/v1/subscribers", "post")["email"] == \
        "new.reader@example.org"
    pending = subscriber_store.get_subscriber(store.engine, "new.reader@example.org")
    assert pending is not None and pending.status.value == "pending"  # double opt-in: not confirmed by the API
    bad = call(client, token["editor"], "POST", "/api/v1/subscribers", json={"email": "not an address"})
    assert bad.status_code == 400 and "check email" in conforms(bad, "/api/v1/subscribers", "post")["error"]["message"]

    shown = conforms(call(client, token["editor"], "GET", "/api/v1/subscribers/bob@example.org"),
                     "/api/v1/subscribers/{email}", "get")
    assert shown["status"] == "confirmed" and shown["language"] == "en"
    changed = call(client, token["editor"], "PATCH", "/api/v1/subscribers/bob@example.org",
                   json={"language": "de", "series": ["esa-security-defence"]})
    assert conforms(changed, "/api/v1/subscribers/{email}", "patch")["language"] == "de"
    wrong = call(client, token["editor"], "PATCH", "/api/v1/subscribers/bob@example.org", json={"language": "xx"})
    assert wrong.status_code == 400 and conforms(wrong, "/api/v1/subscribers/{email}", "patch")
    unknown_field = call(client, token["editor"], "PATCH", "/api/v1/subscribers/bob@example.org",
                         json={"email": "other@example.org"})
    assert unknown_field.status_code == 400 and "unknown field(s) email" in unknown_field.json()["error"]["message"]

    gone = call(client, token["editor"], "POST", "/api/v1/subscribers/bob@example.org/unsubscribe")
    assert conforms(gone, "/api/v1/subscribers/{email}/unsubscribe", "post")["status"] == "unsubscribed"
    assert call(client, token["editor"], "DELETE", "/api/v1/subscribers/bob@example.org").status_code == 403
    erased = call(client, token["admin"], "DELETE", "/api/v1/subscribers/bob@example.org")
    assert conforms(erased, "/api/v1/subscribers/{email}", "delete") == {
        "email": "bob@example.org", "erased": True, "existed": True}
    missing = call(client, token["editor"], "GET", "/api/v1/subscribers/bob@example.org")
    assert missing.status_code == 404 and conforms(missing, "/api/v1/subscribers/{email}", "get")


@pytest.mark.parametrize(("method", "path", "spec"), [
    ("GET", "/api/v1/issues", "/api/v1/issues"), ("POST", "/api/v1/issues", "/api/v1/issues"),
    ("GET", "/api/v1/issues/1", "/api/v1/issues/{number}"), ("PATCH", "/api/v1/issues/1", "/api/v1/issues/{number}"),
    ("POST", "/api/v1/issues/1/approve", "/api/v1/issues/{number}/approve"),
    ("POST", "/api/v1/issues/1/send", "/api/v1/issues/{number}/send"),
    ("GET", "/api/v1/issues/1/report", "/api/v1/issues/{number}/report"), ("GET", "/api/v1/feeds", "/api/v1/feeds"),
    ("POST", "/api/v1/subscribers", "/api/v1/subscribers"),
    ("GET", "/api/v1/subscribers/bob@example.org", "/api/v1/subscribers/{email}"),
    ("PATCH", "/api/v1/subscribers/bob@example.org", "/api/v1/subscribers/{email}"),
    ("DELETE", "/api/v1/subscribers/bob@example.org", "/api/v1/subscribers/{email}"),
    ("POST", "/api/v1/subscribers/bob@example.org/unsubscribe", "/api/v1/subscribers/{email}/unsubscribe"),
])
def test_every_endpoint_refuses_no_token_a_revoked_token_and_a_disabled_account(site, method, path, spec):
    store, client, token = site
    for bad in (None, token["revoked"], "dgst_never-made", "not-a-token"):
        answer = call(client, bad, method, path, json={})
        assert answer.status_code == 401, (bad, answer.text)
        assert answer.headers["www-authenticate"] == 'Bearer realm="digest"'
        conforms(answer, spec, method.lower())
    accounts.disable_account(store.engine, "editor@example.org")
    assert call(client, token["editor"], method, path, json={}).status_code == 401
    assert subscriber_store.get_subscriber(store.engine, "bob@example.org").status.value == "confirmed"


def test_bad_bodies_get_a_clear_json_error_and_change_nothing(site):
    store, client, token = site
    before = call(client, token["editor"], "GET", "/api/v1/issues/1").json()["issue"]["version"]
    for body, headers, status, text in [
        (b"{not json", {"content-type": "application/json"}, 400, "not valid JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "must be a JSON object"),
        (b"subject=x", {"content-type": "application/x-www-form-urlencoded"}, 415, "as JSON"),
        (b'{"subject": "' + b"x" * 70_000 + b'"}', {"content-type": "application/json"}, 413, "larger than"),
        (b'{"subject": 5}', {"content-type": "application/json"}, 400, "'subject' must be a string"),
        (b'{"colour": "red"}', {"content-type": "application/json"}, 400, "unknown field(s) colour"),
        (b"{}", {"content-type": "application/json"}, 400, "nothing to change"),
    ]:
        answer = client.patch("/api/v1/issues/1", content=body,
                              headers={"authorization": f"Bearer {token['editor']}", **headers})
        assert answer.status_code == status and text in answer.json()["error"]["message"], answer.text
        conforms(answer, "/api/v1/issues/{number}", "patch")
    assert call(client, token["editor"], "GET", "/api/v1/issues/1").json()["issue"]["version"] == before


def test_unknown_paths_and_methods_answer_json(site):
    _, client, token = site
    nothing = call(client, token["editor"], "GET", "/api/v1/nothing")
    assert nothing.status_code == 404 and "openapi.json" in nothing.json()["error"]["message"]
    wrong = call(client, token["editor"], "PUT", "/api/v1/issues")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, POST"
    assert wrong.json()["error"]["message"] == "PUT is not allowed here: use GET, POST"
