"""A reader in headless Chromium: subscribe, confirm from the real email, change preferences, unsubscribe.

The app runs under uvicorn on 127.0.0.1 and sends the confirmation through the SMTP transport to
the aiosmtpd `smtp_server`; the test follows the link in the message that server received.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from conftest import free_port, make_settings, serving

from digest.models import SubscriberStatus
from digest.store import open_store
from digest.store import subscribers as store
from digest.web.app import create_app

pytestmark = pytest.mark.browser
AXE = Path(__file__).resolve().parent / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture
def served(tmp_path, smtp_server, monkeypatch):
    """(base URL, settings, engine) of the app served by uvicorn in a thread."""
    monkeypatch.setenv("DIGEST_SECRET", "browser-test-secret")
    port = free_port()
    settings = make_settings(tmp_path, web={"base_url": f"http://127.0.0.1:{port}"},
                             delivery={"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port}})
    engine = open_store(settings.store.url)
    with serving(create_app(settings, engine), port):
        yield settings.web.base_url, settings, engine
    engine.dispose()


def wait_for_mail(smtp_server, address: str):
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = smtp_server.for_recipient(address)
        if found:
            return found[0]
        time.sleep(0.1)
    pytest.fail(f"no email for {address} reached the SMTP server")


def test_subscribe_confirm_change_preferences_unsubscribe(browser, served, smtp_server):
    base, settings, engine = served
    context = browser.new_context(locale="de-DE")
    page = context.new_page()
    csp_errors: list[str] = []
    page.on("console", lambda msg: csp_errors.append(msg.text) if "Content Security Policy" in msg.text else None)

    page.goto(f"{base}/subscribe")
    assert page.locator("html").get_attribute("lang") == "de"
    page.get_by_label("E-Mail-Adresse").fill("Leser@Example.org")
    page.get_by_label("Name (freiwillig)").fill("Lea <Leser>")
    page.get_by_label("European Strategic Autonomy series – Digital & Technology").check()
    page.get_by_label("In den Medien").uncheck()
    page.get_by_role("button", name="Abonnieren").click()
    page.get_by_role("heading", name="Bitte prüfen Sie Ihr Postfach").wait_for()
    # The sign-up is stored after the answer (so its timing tells nothing), and mailed after that.
    mail = wait_for_mail(smtp_server, "leser@example.org")
    assert store.get_subscriber(engine, "leser@example.org").status == SubscriberStatus.PENDING
    assert mail["Subject"].startswith("Bitte bestätigen Sie Ihr Abonnement")
    assert mail["To"] == "leser@example.org" and "Lea" not in mail.as_string()  # nothing typed is mailed
    link = re.search(rf"{re.escape(base)}/confirm/\S+", mail.get_body(("plain",)).get_content()).group(0)
    page.goto(link)
    page.get_by_role("button", name="Abonnement bestätigen").click()
    page.get_by_role("heading", name="Sie haben den Newsletter abonniert").wait_for()
    subscriber = store.get_subscriber(engine, "leser@example.org")
    assert (subscriber.status, subscriber.name, subscriber.series, subscriber.want_media, subscriber.consent_ip) == (
        SubscriberStatus.CONFIRMED, "Lea <Leser>", ("esa-digital-technology",), False, "127.0.0.1")

    page.get_by_role("link", name="Einstellungen ändern").click()
    page.get_by_role("heading", name="Ihre Newsletter-Einstellungen").wait_for()
    page.get_by_label("Sprache des Newsletters").select_option("fr")
    page.get_by_label("European Strategic Autonomy series – Security & Defence").check()
    page.get_by_label("Kommende Veranstaltungen").uncheck()
    page.get_by_role("button", name="Einstellungen speichern").click()
    page.get_by_text("Vos préférences sont enregistrées.").wait_for()
    subscriber = store.get_subscriber(engine, subscriber.id)
    assert (subscriber.language, subscriber.series, subscriber.want_events) == (
        "fr", ("esa-security-defence", "esa-digital-technology"), False)

    page.get_by_role("button", name="Me désabonner").click()
    page.get_by_role("heading", name="Vous êtes désabonné·e").wait_for()
    assert store.get_subscriber(engine, subscriber.id).status == SubscriberStatus.UNSUBSCRIBED
    assert csp_errors == []  # the stylesheet and every form work under the strict CSP
    context.close()


@pytest.mark.skipif(not AXE.exists(), reason="axe-core not installed (npm ci in tests/)")
def test_public_pages_pass_axe(browser, served, artefacts):
    base, settings, engine = served
    # axe is injected as a script, which the pages' CSP rightly forbids: bypass it for this check only.
    context = browser.new_context(bypass_csp=True)
    page = context.new_page()
    problems = {}
    for path in ("/subscribe", "/subscribe?lang=fr", "/unsubscribe/forged"):
        page.goto(base + path)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
        if result:
            problems[path] = [{"id": v["id"], "help": v["help"], "nodes": len(v["nodes"])} for v in result]
    (artefacts / "axe-public-pages.json").write_text(json.dumps(problems, indent=2), encoding="utf-8")
    context.close()
    assert problems == {}
