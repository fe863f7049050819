"""The sign-up embedded on the organisation's pages: through the real app in-process (SQLite and
PostgreSQL), and in headless Chromium from a page on a second loopback origin (allowed) and a third
(refused), with the confirmation email read from aiosmtpd."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from pathlib import Path

import pytest
from conftest import free_port, make_settings, serving
from starlette.testclient import TestClient

from digest.config import ConfigError, load_settings
from digest.store import open_store
from digest.store import subscribers as store
from digest.web.app import create_app

ALLOWED = "https://www.example.org"
ALSO_ALLOWED = "https://events.example.org"
SNIPPET = """<!doctype html>
<html lang="fr"><head><meta charset="utf-8"><title>Notre lettre</title></head>
<body><main>
<form data-digest-signup data-digest-error="L'inscription n'a pas pu être envoyée.">
  <label for="email">Adresse e-mail</label> <input id="email" name="email" type="email" required>
  <label><input type="checkbox" name="series" value="esa-economy-trade"> Économie et commerce</label>
  <button type="submit">S'abonner</button>
  <p data-digest-status></p>
</form>
<script src="{digest}/embed.js" defer></script>
</main></body></html>
"""


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "embed-secret")


@pytest.fixture
def client(tmp_path, store_url, engine):
    settings = make_settings(tmp_path, store_url, web={"base_url": "https://digest.example.org",
                                                        "embed_origins": [ALLOWED, ALSO_ALLOWED],
                                                        "subscribe_burst": 50})
    with TestClient(create_app(settings, engine), base_url="https://digest.example.org") as c:
        yield c


def token(client: TestClient, origin: str = ALLOWED) -> str:
    answer = client.get("/api/v1/signup/token", headers={"origin": origin})
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == origin
    return answer.json()["token"]


def test_an_allowed_origin_signs_up_with_a_token(client, engine):
    preflight = client.options("/api/v1/signup", headers={"origin": ALLOWED, "access-control-request-method": "POST"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-headers"] == "Content-Type"
    answer = client.post("/api/v1/signup", headers={"origin": ALLOWED, "accept-language": "de"},
                         json={"email": "Leser@Example.org", "series": ["esa-economy-trade"], "token": token(client)})
    assert answer.status_code == 202 and "Bestätigungslink" in answer.json()["message"]
    assert answer.headers["access-control-allow-origin"] == ALLOWED and answer.headers["vary"] == "Origin"
    pending = store.get_subscriber(engine, "leser@example.org")
    assert pending.status.value == "pending" and pending.language == "de"


@pytest.mark.parametrize("origin", ["https://evil.example", "https://www.example.org.evil.example", "null", None])
def test_other_origins_are_refused_without_cors_headers(client, engine, origin):
    headers = {"origin": origin} if origin else {}
    for answer in (client.get("/api/v1/signup/token", headers=headers),
                   client.options("/api/v1/signup", headers=headers),
                   client.post("/api/v1/signup", headers=headers,
                               json={"email": "x@example.org", "token": token(client)})):
        assert answer.status_code == 403
        assert "access-control-allow-origin" not in answer.headers
    assert store.get_subscriber(engine, "x@example.org") is None


def test_a_missing_forged_expired_or_foreign_token_is_refused(client, engine):
    expired = f"{int(time.time()) - 7200}.{token(client).split('.')[1]}"
    foreign = token(client, ALSO_ALLOWED)  # fetched by another allowed origin: not this one's
    for bad in (None, "", "123.abc", token(client).replace(".", ".0"), expired, foreign):
        answer = client.post("/api/v1/signup", headers={"origin": ALLOWED},
                             json={"email": "x@example.org", "token": bad})
        assert answer.status_code == 403 and "expired" in answer.json()["error"]["message"], bad
    assert store.get_subscriber(engine, "x@example.org") is None


def test_bad_fields_and_bodies_are_answered_in_json(client, engine):
    bad = client.post("/api/v1/signup", headers={"origin": ALLOWED, "accept-language": "fr"},
                      json={"email": "not an address", "token": token(client)})
    assert bad.status_code == 400 and bad.json()["error"]["fields"] == ["email"]
    assert "adresse" in bad.json()["error"]["message"].lower()
    for body in (b"[1]", b"{not json", b"x" * 20_000):
        answer = client.post("/api/v1/signup", headers={"origin": ALLOWED, "content-type": "application/json"},
                             content=body)
        assert answer.status_code == 400 and answer.headers["access-control-allow-origin"] == ALLOWED
    assert store.get_subscriber(engine, "not an address") is None


def test_the_rate_limit_is_the_subscribe_pages(tmp_path, store_url, engine):
    settings = make_settings(tmp_path, store_url, web={"base_url": "https://digest.example.org",
                                                        "embed_origins": [ALLOWED], "subscribe_burst": 2,
                                                        "subscribe_rate_per_minute": 0.01})
    with TestClient(create_app(settings, engine), base_url="https://digest.example.org") as client:
        answers = [client.post("/api/v1/signup", headers={"origin": ALLOWED},
                               json={"email": f"r{i}@example.org", "token": token(client)}).status_code
                   for i in range(3)]
    assert answers == [202, 202, 429]


def test_only_the_signup_endpoints_send_cors_headers_and_pages_stay_unframed(client):
    for path in ("/subscribe", "/api/v1/openapi.json", "/archive"):
        answer = client.get(path, headers={"origin": ALLOWED})
        assert "access-control-allow-origin" not in answer.headers
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
    script = client.get("/embed.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "data-digest-signup" in script.text


@pytest.mark.parametrize("origin", ["https://www.example.org/", "www.example.org", "https://WWW.example.org",
                                    "https://www.example.org/path", "ftp://example.org"])
def test_embed_origins_must_be_origins(tmp_path, origin):
    path = tmp_path / "digest.toml"
    path.write_text(f'[web]\nembed_origins = ["{origin}"]\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="'web.embed_origins' has"):
        load_settings(path)


# --- in the browser, from other origins ------------------------------------------------------------

def _serve_page(directory: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, port


@pytest.fixture
def origins(tmp_path, smtp_server, monkeypatch):
    """digest on one loopback port, the organisation's page on a second (allowed) and a third (not)."""
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    page_server, page_port = _serve_page(site_dir)
    other_server, other_port = _serve_page(site_dir)
    port = free_port()
    digest = f"http://127.0.0.1:{port}"
    (site_dir / "index.html").write_text(SNIPPET.format(digest=digest), encoding="utf-8")
    settings = make_settings(tmp_path, web={"base_url": digest, "embed_origins": [f"http://127.0.0.1:{page_port}"]},
                             delivery={"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port}})
    engine = open_store(settings.store.url)
    with serving(create_app(settings, engine), port):
        yield f"http://127.0.0.1:{page_port}", f"http://127.0.0.1:{other_port}", engine
    for s in (page_server, other_server):
        s.shutdown()
    engine.dispose()


@pytest.mark.browser
def test_the_embedded_form_works_from_an_allowed_origin_only(browser, origins, smtp_server):
    allowed, other, engine = origins
    context = browser.new_context(locale="fr-FR")
    try:
        page = context.new_page()
        page.goto(f"{allowed}/index.html")
        page.get_by_label("Adresse e-mail").fill("lectrice@example.org")
        page.get_by_label("Économie et commerce").check()
        page.get_by_role("button", name="S'abonner").click()
        page.locator("[data-digest-status]", has_text="lien de confirmation").wait_for()
        deadline = time.monotonic() + 20
        while not smtp_server.for_recipient("lectrice@example.org") and time.monotonic() < deadline:
            time.sleep(0.1)
        (mail,) = smtp_server.for_recipient("lectrice@example.org")
        assert mail["Subject"].startswith("Confirmez votre abonnement")
        assert store.get_subscriber(engine, "lectrice@example.org").series == ("esa-economy-trade",)

        refused = context.new_page()
        refused.goto(f"{other}/index.html")
        refused.get_by_label("Adresse e-mail").fill("autre@example.org")
        refused.get_by_role("button", name="S'abonner").click()
        refused.locator("[data-digest-status]", has_text="n'a pas pu être envoyée").wait_for()
        assert store.get_subscriber(engine, "autre@example.org") is None
        assert smtp_server.for_recipient("autre@example.org") == []
    finally:
        context.close()
