"""The confirmation email as branded HTML beside its text: a button to the link, the reader's language,
no personal words; html-validate clean and no serious axe problem in light and dark at 600 and 375 px."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from email import message_from_bytes, policy

import pytest
from conftest import make_settings
from test_render_quality import AXE, HTML_VALIDATE, TESTS, require_checker

from digest.deliver.notes import confirmation_message
from digest.models import Subscriber

URL = "https://digest.example.org/confirm/a-token"


@pytest.fixture
def messages(tmp_path):
    settings = make_settings(tmp_path)
    return {language: message_from_bytes(confirmation_message(
        settings, Subscriber(email=f"reader-{language}@example.org", language=language, id=7), URL).data,
        policy=policy.default) for language in ("en", "fr", "de")}


@pytest.mark.parametrize(("language", "button", "ask"), [
    ("en", "Confirm my subscription", "Please confirm that you want to receive the Europa Progressiva"),
    ("fr", "Confirmer mon abonnement", "la lettre d’Europa Progressiva Foundation"),
    ("de", "Abonnement bestätigen", "den Newsletter von Europa Progressiva Foundation"),
])
def test_the_html_part_has_the_button_in_the_readers_language(messages, language, button, ask):
    mail = messages[language]
    assert mail.get_content_type() == "multipart/alternative" and mail["Content-Language"] == language
    html = mail.get_body(("html",)).get_content()
    text = mail.get_body(("plain",)).get_content()
    assert f'href="{URL}"' in html and button in html and ask in html
    assert URL in text and f'<html lang="{language}"' in html
    assert "reader-" not in html  # nothing about the person in it: only the address it goes to


def test_html_validate_finds_no_error(messages, tmp_path):
    require_checker(HTML_VALIDATE, "run `make test` (npm install in tests/)")
    files = []
    for language, mail in messages.items():
        path = tmp_path / f"confirmation-{language}.html"
        path.write_text(mail.get_body(("html",)).get_content(), encoding="utf-8")
        files.append(str(path))
    report = tmp_path / "report.json"
    subprocess.run([str(HTML_VALIDATE), "--config", str(TESTS / "htmlvalidate.json"), "--formatter",
                    f"json={report}", *files], capture_output=True, text=True, timeout=60)
    errors = [(r["filePath"], m["ruleId"], m["message"]) for r in json.loads(report.read_text() or "[]")
              for m in r["messages"] if m["severity"] == 2]
    assert errors == []


@pytest.mark.browser
def test_axe_in_light_and_dark_at_600_and_375(messages, browser):
    require_checker(AXE, "run `make test` (npm install in tests/)")
    problems = []
    for language, mail in messages.items():
        for scheme in ("light", "dark"):
            context = browser.new_context(color_scheme=scheme, viewport={"width": 600, "height": 900})
            page = context.new_page()
            page.route("**/*", lambda route: route.abort())
            page.set_content(mail.get_body(("html",)).get_content(), wait_until="domcontentloaded")
            page.add_script_tag(path=str(AXE))
            for width in (600, 375):
                page.set_viewport_size({"width": width, "height": 900})
                found = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
                problems += [(language, scheme, width, v["id"]) for v in found if v["impact"] in ("serious", "critical")]
            context.close()
    assert problems == []


# --- the welcome email (web.welcome_email) -----------------------------------------------------------

@pytest.mark.parametrize("welcome", [True, False])
def test_a_reader_who_confirms_gets_one_welcome_when_asked_for(tmp_path, store_url, engine, smtp_server, monkeypatch,
                                                                 welcome):
    from send_helpers import smtp_settings
    from starlette.testclient import TestClient
    from test_late_subscribers import CSRF_RE, sign_up_and_confirm

    from digest.web.app import create_app

    monkeypatch.setenv("DIGEST_SECRET", "welcome-secret")
    settings = smtp_settings(tmp_path, store_url, smtp_server.port)
    settings = replace(settings, web=replace(settings.web, welcome_email=welcome))
    with TestClient(create_app(settings, engine), base_url="https://digest.example.org") as client:
        done, path, form = sign_up_and_confirm(client, smtp_server, "neu@example.org")
        assert done.status_code == 200
        client.post(path, data={"csrf_token": CSRF_RE.search(form.text).group(1)})  # a second click
        welcomes = [m for m in smtp_server.for_recipient("neu@example.org") if m["Subject"].startswith("Welcome")]
        assert len(welcomes) == (1 if welcome else 0)
        if welcome:
            (mail,) = welcomes
            html = mail.get_body(("html",)).get_content()
            assert "Choose your series and language" in html and mail.get_content_type() == "multipart/alternative"
            link = next(w for w in mail.get_body(("plain",)).get_content().split() if "/preferences/" in w)
            assert client.get(link.removeprefix("https://digest.example.org")).status_code == 200
