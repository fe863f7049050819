"""Notes (confirmation emails, staff notes) through the one message builder, read back from the bytes a
real SMTP server (aiosmtpd on loopback) received: CRLF only, DKIM-signed, the headers of automated
one-to-one mail, localised, and no header injection."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from email import message_from_bytes, policy

import dkim
import pytest
from conftest import make_settings
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from starlette.testclient import TestClient
from test_message import dns_stub

from digest.deliver.dkim import DkimError
from digest.deliver.message import HeaderError, build_note
from digest.deliver.notes import CONFIRMATION_TEXTS, confirmation_message, staff_note_message
from digest.i18n import elide
from digest.models import Subscriber
from digest.pipeline.sending import notify_staff
from digest.store.runs import recent_runs
from digest.web.app import create_app

NOW = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "notes-test-secret")


@pytest.fixture(scope="module")
def dkim_key() -> tuple[bytes, bytes]:
    """(private key PEM, public key DER base64) of a fresh 2048-bit RSA key."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, base64.b64encode(public)


def note_settings(tmp_path, store_url, smtp_server, private_key: bytes | None, delivery: dict | None = None,
                  **sections):
    """SMTP to the loopback server; DKIM with selector mail2026 for example.org when a key is given."""
    delivery = {"transport": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port, "timeout": 10.0},
                **(delivery or {})}
    if private_key is not None:
        (tmp_path / "dkim.pem").write_bytes(private_key)
        delivery["dkim"] = {"selector": "mail2026", "key_file": "dkim.pem"}
    return make_settings(tmp_path, store_url, delivery=delivery, **sections)


def assert_crlf_only(data: bytes) -> None:
    """Every line break is CRLF: no bare LF, no bare CR."""
    assert data.endswith(b"\r\n")
    assert re.search(rb"(?<!\r)\n", data) is None, "bare LF"
    assert re.search(rb"\r(?!\n)", data) is None, "bare CR"


def text_of(message) -> str:
    """The decoded text part with its (CRLF) line breaks as "\n"."""
    return message.get_body(("plain",)).get_content().replace("\r\n", "\n")


def assert_automated_note(data: bytes, public_key: bytes, html: bool = False):
    """The checks every note passes (`html`: a multipart/alternative of text and HTML); returns the parsed message."""
    assert_crlf_only(data)
    assert dkim.verify(data, dnsfunc=dns_stub(public_key))
    message = message_from_bytes(data, policy=policy.default)
    signature = message["DKIM-Signature"]
    assert "d=example.org" in signature and "s=mail2026" in signature
    for signed in ("from", "to", "subject", "date", "message-id", "auto-submitted", "content-type"):
        assert signed in re.search(r"(?:^|;)\s*h=([^;]+)", signature).group(1).replace(" ", "").lower().split(":")
    assert message["Auto-Submitted"] == "auto-generated"
    for list_header in ("List-Unsubscribe", "List-Unsubscribe-Post", "List-Id", "Precedence"):
        assert message[list_header] is None
    assert message["MIME-Version"] == "1.0" and message["Date"] and re.fullmatch(r"<\S+@example\.org>",
                                                                                   message["Message-ID"])
    parts = list(message.iter_parts()) if html else [message]
    assert message.get_content_type() == ("multipart/alternative" if html else "text/plain")
    assert [p.get_content_type() for p in parts] == (["text/plain", "text/html"] if html else ["text/plain"])
    assert all(p.get_content_charset() == "utf-8" and p["Content-Transfer-Encoding"] == "quoted-printable"
               for p in parts)
    assert all(len(line) <= 78 for line in data.split(b"\r\n"))
    return message


# --- the confirmation email, through the real sign-up form -------------------------------------------

@pytest.mark.parametrize("language, greeting", [("fr", "Bonjour,"), ("de", "Guten Tag,"), ("en", "Hello,")])
def test_confirmation_from_the_sign_up_form_is_signed_crlf_and_localised(tmp_path, store_url, smtp_server, dkim_key,
                                                                          engine, language, greeting):
    private, public = dkim_key
    settings = note_settings(tmp_path, store_url, smtp_server, private, web={"base_url": "http://127.0.0.1:8080"})
    with TestClient(create_app(settings, engine)) as client:
        token = CSRF_RE.search(client.get("/subscribe").text).group(1)
        answer = client.post("/subscribe", data={"csrf_token": token, "email": "Reader@Example.org",
                                                 "name": "Rita\r\nBcc: victim@example.net", "language": language})
    assert answer.status_code == 200
    ((envelope_from, recipients, data),) = smtp_server.received
    assert (envelope_from, recipients) == ("digest@example.org", ["reader@example.org"])
    message = assert_automated_note(data, public, html=True)
    site = settings.site.name
    assert message["Subject"] == elide(CONFIRMATION_TEXTS[language]["subject"].format(site=site), language)
    assert message["To"].addresses[0].addr_spec == "reader@example.org"
    assert message["To"].addresses[0].display_name == ""  # nothing the visitor typed but the address
    assert message["From"] == settings.delivery.sender and message["Content-Language"] == language
    assert message["Bcc"] is None
    body = text_of(message)
    assert body.startswith(greeting) and "Rita" not in body and settings.site.postal_address in body
    assert re.search(r"^http://127\.0\.0\.1:8080/confirm/\S+$", body, re.MULTILINE)


def test_confirmation_in_an_unknown_language_is_english(tmp_path):
    settings = make_settings(tmp_path)
    subscriber = Subscriber(email="a@example.org", language="xx")
    message = message_from_bytes(confirmation_message(settings, subscriber, "https://x.example/c/1", NOW).data,
                                 policy=policy.default)
    assert message["Content-Language"] == "en" and message["Date"] == "Mon, 23 Nov 2026 08:00:00 +0000"
    assert message["Subject"] == CONFIRMATION_TEXTS["en"]["subject"].format(site=settings.site.name)


# --- the staff note, through pipeline.sending.notify_staff ----------------------------------------------

def test_staff_note_is_signed_crlf_and_names_the_draft(tmp_path, store_url, smtp_server, dkim_key, engine):
    private, public = dkim_key
    settings = note_settings(tmp_path, store_url, smtp_server, private,
                             schedule={"staff": ["comms@example.org", "Zoë Éditrice <ed@example.org>"]},
                             web={"base_url": "https://digest.example.org/"})
    notify_staff(settings, engine, 7, NOW)
    assert [n.outcome for n in recent_runs(engine, job="notify")] == ["notified"]
    received = {tuple(rcpts): data for _, rcpts, data in smtp_server.received}
    assert set(received) == {("comms@example.org",), ("ed@example.org",)}
    for (address,), data in received.items():
        message = assert_automated_note(data, public)
        assert message["Subject"] == f"{settings.site.name} digest: draft 7 is ready for review"
        assert message["To"].addresses[0].addr_spec == address
        assert message["Content-Language"] == "en"
        assert "\nhttps://digest.example.org/admin/issues/7\n" in text_of(message)
    editor = message_from_bytes(received[("ed@example.org",)], policy=policy.default)
    assert editor["To"].addresses[0].display_name == "Zoë Éditrice"


def test_unusable_dkim_key_is_noted_for_the_staff_note(tmp_path, store_url, smtp_server, engine):
    settings = note_settings(tmp_path, store_url, smtp_server, None, schedule={"staff": ["comms@example.org"]},
                             delivery={"dkim": {"selector": "mail2026", "key_file": "missing.pem"}})
    notify_staff(settings, engine, 3, NOW)  # never raises: the build is done either way
    (note,) = recent_runs(engine, job="notify")
    assert note.outcome == "notify-failed" and "delivery.dkim.key_file" in note.detail
    assert smtp_server.received == []
    with pytest.raises(DkimError):
        staff_note_message(settings, "comms@example.org", 3, "https://x.example/admin/issues/3")


# --- header injection -----------------------------------------------------------------------------------

@pytest.mark.parametrize("evil", ["Hi\r\nBcc: victim@example.net", "Hi\nBcc: victim@example.net",
                                  "Hi\rBcc: victim@example.net", "Hi\u2028Bcc: victim@example.net",
                                  "Hi\x00\r\n\r\nBody takeover"])
def test_subject_and_name_cannot_inject_headers(tmp_path, evil):
    settings = make_settings(tmp_path)
    note = build_note(settings, to="ed@example.org", name=evil, subject=evil, text="Body.\n", language="en")
    assert_crlf_only(note.data)
    head = note.data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^Bcc:", head, re.IGNORECASE | re.MULTILINE)
    message = message_from_bytes(note.data, policy=policy.default)
    assert message["Bcc"] is None and text_of(message) == "Body.\n"
    assert "\n" not in message["Subject"] and message["Subject"].startswith("Hi")
    assert message["To"].addresses[0].addr_spec == "ed@example.org" and note.recipients == ("ed@example.org",)


@pytest.mark.parametrize("field, value", [("to", "ed@example.org\r\nBcc: victim@example.net"),
                                          ("to", "ed@example.org>, <victim@example.net"),
                                          ("language", "en\r\nBcc: victim@example.net")])
def test_unsafe_addresses_and_language_tags_are_refused(tmp_path, field, value):
    arguments = {"to": "ed@example.org", "subject": "S", "text": "T", "language": "en", field: value}
    with pytest.raises(HeaderError):
        build_note(make_settings(tmp_path), **arguments)


def test_a_confirmation_for_an_unsafe_address_is_refused(tmp_path):
    with pytest.raises(HeaderError):
        confirmation_message(make_settings(tmp_path), Subscriber(email="a@example.org\r\nBcc: v@example.net"),
                             "https://x.example/c/1")


def test_reply_to_goes_into_notes_and_is_signed(tmp_path, dkim_key):
    private, public = dkim_key
    (tmp_path / "dkim.pem").write_bytes(private)
    settings = make_settings(tmp_path, delivery={"reply_to": "Comms <comms@example.org>",
                                                 "dkim": {"selector": "mail2026", "key_file": "dkim.pem"}})
    note = build_note(settings, to="ed@example.org", subject="Grüße", text="Zoë\n" + "é" * 200 + "\n")
    assert_crlf_only(note.data)
    assert dkim.verify(note.data, dnsfunc=dns_stub(public))
    message = message_from_bytes(note.data, policy=policy.default)
    assert message["Reply-To"].addresses[0].addr_spec == "comms@example.org"
    assert message["Subject"] == "Grüße" and text_of(message) == "Zoë\n" + "é" * 200 + "\n"
    assert message["Content-Language"] is None  # not known: not claimed
