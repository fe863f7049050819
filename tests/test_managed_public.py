"""A site whose series and branding live in the store (digest.toml has neither): readers see and choose
those series on the public pages, the branding's postal address is every footer's, and an edit shows
at once, without a restart."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email import message_from_bytes, policy

import pytest
from starlette.testclient import TestClient

from digest.config import settings_from_dict
from digest.pipeline.series_settings import add_series
from digest.pipeline.site_settings import save_branding
from digest.store import open_store
from digest.store import subscribers as subscriber_store
from digest.web.app import create_app

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "web-test-secret")


@pytest.fixture
def site(tmp_path, store_url):
    """(settings, engine, client) of a store-managed site with no series yet."""
    settings = settings_from_dict({"store": {"url": store_url}, "web": {"base_url": "http://testserver"},
                                   "delivery": {"outbox_dir": str(tmp_path / "outbox")}}, base_dir=tmp_path)
    engine = open_store(settings.store.url)
    with TestClient(create_app(settings, engine)) as client:
        yield settings, engine, client
    engine.dispose()


def test_readers_choose_among_the_stored_series(site):
    settings, engine, client = site
    assert 'name="series"' not in client.get("/subscribe").text  # none yet
    add_series(settings, engine, "esa-digital", "European Strategic Autonomy – Digital & Technology",
               names={"fr": "Autonomie stratégique – Numérique"})
    page = client.get("/subscribe")
    assert 'value="esa-digital"' in page.text and "Digital &amp; Technology" in page.text  # no restart
    token = CSRF_RE.search(page.text).group(1)
    answer = client.post("/subscribe", data={"csrf_token": token, "email": "ana@example.net", "name": "",
                                             "language": "en", "series": "esa-digital"})
    assert answer.status_code == 200, answer.text
    stored = subscriber_store.get_subscriber(engine, "ana@example.net")
    assert stored is not None  # a stored series is a valid choice, not "unknown series"
    refused = client.post("/subscribe", data={"csrf_token": token, "email": "bo@example.net", "name": "",
                                              "language": "en", "series": "no-such-series"})
    assert refused.status_code == 400


def test_the_archive_knows_the_stored_series(site):
    settings, engine, client = site
    assert client.get("/archive/series/esa-digital").status_code == 404
    add_series(settings, engine, "esa-digital", "European Strategic Autonomy – Digital & Technology")
    assert client.get("/archive/series/esa-digital").status_code == 200
    assert client.get("/archive/series/esa-digital/feed.atom").status_code == 200


def test_the_brandings_postal_address_is_on_every_page_and_email(site):
    settings, engine, client = site
    assert settings.site.postal_address in client.get("/subscribe").text
    save_branding(settings, engine, {"postal_address": "Place du Luxembourg 1, 1050 Ixelles", "accent_color": "#1a5fb4"},
                  version=0, actor=None, now=datetime.now(UTC))
    for path in ("/", "/subscribe"):
        page = client.get(path).text
        assert "Place du Luxembourg 1, 1050 Ixelles" in page and settings.site.postal_address not in page, path
    token = CSRF_RE.search(client.get("/subscribe").text).group(1)
    assert client.post("/subscribe", data={"csrf_token": token, "email": "ana@example.net", "name": "",
                                           "language": "fr"}).status_code == 200
    (sent,) = (settings.resolve_path(settings.delivery.outbox_dir)).glob("*.eml")
    mail = message_from_bytes(sent.read_bytes(), policy=policy.default)
    assert "Place du Luxembourg 1, 1050 Ixelles" in mail.get_body(("plain",)).get_content()
