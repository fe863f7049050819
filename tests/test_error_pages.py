"""Error answers people can use: styled 404, 405, 413 and 500 pages, public and admin, in the visitor's
language, with the security headers; JSON under /api. Through the real app, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from conftest import make_settings
from sqlalchemy import text
from starlette.testclient import TestClient

from digest.web.app import create_app

BASE = "https://testserver"


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "errors-secret")


@pytest.fixture
def site(tmp_path, store_url):
    return make_settings(tmp_path, store_url, web={"base_url": BASE})


@pytest.fixture
def client(site, engine):
    with TestClient(create_app(site, engine), base_url=BASE, raise_server_exceptions=False) as c:
        yield c


def secured(answer) -> bool:
    return ("frame-ancestors 'none'" in answer.headers["content-security-policy"]
            and answer.headers["x-content-type-options"] == "nosniff")


@pytest.mark.parametrize(("language", "heading", "home"), [
    ("en", "Page not found", "Go to the home page"), ("fr-FR,fr;q=0.9", "Page introuvable", "Aller à la page d’accueil"),
    ("de", "Seite nicht gefunden", "Zur Startseite"),
])
def test_a_missing_public_page_is_a_page_in_the_visitors_language(client, language, heading, home):
    answer = client.get("/no/such/page", headers={"accept-language": language})
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
    assert f"<h1>{heading}</h1>" in answer.text and home in answer.text and 'href="/"' in answer.text
    assert "Europa Progressiva Foundation" in answer.text and secured(answer)


def test_405_and_413_are_pages_too(client):
    wrong = client.put("/subscribe")
    assert wrong.status_code == 405 and "Not possible here" in wrong.text and secured(wrong)
    big = client.post("/subscribe", content=b"email=" + b"x" * 100_000,
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413 and "Too much sent at once" in big.text and secured(big)


def test_admin_errors_are_admin_pages(client):
    missing = client.get("/admin/no-such-page")
    assert missing.status_code == 404 and "There is no admin page at this address" in missing.text
    assert 'href="/admin/issues"' in missing.text and secured(missing)


def test_a_fault_is_a_500_page_and_json_under_the_api(client, engine):
    with engine.begin() as conn:  # the store breaks under the running app
        conn.execute(text("DROP TABLE audit_events"))
        conn.execute(text("DROP TABLE issues CASCADE" if engine.dialect.name == "postgresql" else "DROP TABLE issues"))
    answer = client.get("/archive/")
    assert answer.status_code == 500 and "Something went wrong" in answer.text and secured(answer)
    assert "Traceback" not in answer.text and "issues" not in answer.text.split("<main")[1]
    api = client.get("/api/v1/nothing")
    assert api.status_code == 404 and api.json()["error"]["status"] == 404


def test_the_home_page(client):
    answer = client.get("/", headers={"accept-language": "de"})
    assert answer.status_code == 200 and "Der Newsletter von Europa Progressiva Foundation" in answer.text
    assert 'href="/subscribe?lang=de"' in answer.text and 'href="/archive/"' in answer.text
    assert 'href="/?lang=fr"' in answer.text and secured(answer)
