"""Bounce and complaint webhooks (Amazon SES via SNS, Postmark, Mailgun) through the real ASGI app.

An issue is sent through aiosmtpd first, so the webhooks' events match real ledger rows, on SQLite
and PostgreSQL. SNS cannot be reached from tests: the app is given a certificate loader serving a
certificate made here, and messages are signed with its key the way SNS signs them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from send_helpers import add_confirmed, approved_issue, smtp_settings
from sqlalchemy import func, select
from starlette.testclient import TestClient

from digest.config import ConfigError
from digest.models import SubscriberStatus
from digest.pipeline.sending import send_issue
from digest.sns import string_to_sign
from digest.store.runs import recent_runs
from digest.store.schema import deliveries, subscriber_events, subscribers
from digest.store.subscribers import get_subscriber
from digest.web.app import create_app
from digest.web.webhooks import MAX_BODY_BYTES

TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-bounces"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-0123456789abcdef.pem"
MAILGUN_KEY = "key-0123456789abcdef0123456789abcdef"
READERS = ("hard", "soft", "angry", "fine")


# --- an SNS signer of our own -------------------------------------------------------------------------

class FakeSns:
    """A key and self-signed certificate, a loader serving it (counting its calls), and signing."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
        now = datetime.now(UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
                .not_valid_after(now + timedelta(days=30)).sign(self.key, hashes.SHA256()))
        self.pem = cert.public_bytes(serialization.Encoding.PEM)
        self.loads: list[str] = []
        self.down = False

    def load(self, url: str) -> bytes:
        self.loads.append(url)
        if self.down:
            raise OSError("connection refused")
        return self.pem

    def sign(self, message: dict, version: str = "1", key=None) -> dict:
        message = {**message, "SignatureVersion": version, "SigningCertURL": message.get("SigningCertURL", CERT_URL)}
        digest = hashes.SHA1() if version == "1" else hashes.SHA256()
        signature = (key or self.key).sign(string_to_sign(message), padding.PKCS1v15(), digest)
        return {**message, "Signature": base64.b64encode(signature).decode()}


def notification(ses: dict, message_id: str = "sns-1") -> dict:
    return {"Type": "Notification", "MessageId": message_id, "TopicArn": TOPIC,
            "Message": json.dumps(ses), "Timestamp": "2026-11-23T08:05:00.000Z"}


def ses_bounce(email: str, message_id: str, bounce_type: str = "Permanent", feedback: str = "fb-1") -> dict:
    return {"notificationType": "Bounce",
            "bounce": {"bounceType": bounce_type, "bounceSubType": "General", "feedbackId": feedback,
                       "bouncedRecipients": [{"emailAddress": email, "action": "failed", "status": "5.1.1",
                                              "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
            "mail": {"messageId": "0102018c-ses-id", "commonHeaders": {"messageId": message_id}}}


def ses_complaint(email: str, message_id: str) -> dict:
    return {"notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": email}], "complaintFeedbackType": "abuse",
                          "feedbackId": "fb-complaint-1"},
            "mail": {"messageId": "0102018c-ses-id", "headers": [{"name": "Message-ID", "value": message_id}]}}


# --- fixtures ------------------------------------------------------------------------------------------

@pytest.fixture
def sns():
    return FakeSns()


@pytest.fixture
def sent(engine, tmp_path, store_url, smtp_server):
    """Issue 1 sent to four readers; (settings, address → Message-ID)."""
    settings = smtp_settings(tmp_path, store_url, smtp_server.port)
    for name in READERS:
        add_confirmed(engine, f"{name}@example.net")
    number = approved_issue(engine, settings)
    send_issue(settings, engine, number)
    query = select(subscribers.c.email, deliveries.c.message_id).join(
        deliveries, deliveries.c.subscriber_id == subscribers.c.id)
    with engine.connect() as conn:
        return dict(conn.execute(query).all())


@pytest.fixture
def web_settings(tmp_path, store_url, smtp_server, monkeypatch):
    monkeypatch.setenv("TEST_POSTMARK_PASSWORD", "s3cret-pass")
    monkeypatch.setenv("TEST_MAILGUN_KEY", MAILGUN_KEY)
    return smtp_settings(tmp_path, store_url, smtp_server.port,
                         webhooks={"ses_topic_arns": [TOPIC], "postmark_username": "postmark",
                                   "postmark_password_env": "TEST_POSTMARK_PASSWORD",
                                   "mailgun_signing_key_env": "TEST_MAILGUN_KEY"})


@pytest.fixture
def client(web_settings, engine, sent, sns):
    with TestClient(create_app(web_settings, engine, sns_certificates=sns.load)) as c:
        yield c


def status_of(engine, name: str) -> SubscriberStatus:
    return get_subscriber(engine, f"{name}@example.net").status


def event_count(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(subscriber_events)).scalar_one()


def last_event(engine, name: str) -> tuple[str, int | None]:
    sid = get_subscriber(engine, f"{name}@example.net").id
    with engine.connect() as conn:
        return tuple(conn.execute(select(subscriber_events.c.event, subscriber_events.c.issue_number)
                                  .where(subscriber_events.c.subscriber_id == sid)
                                  .order_by(subscriber_events.c.id.desc()).limit(1)).one())


# --- Amazon SES via SNS ----------------------------------------------------------------------------------

def test_ses_bounce_and_complaint_signed_v1_and_v2(client, engine, sent, sns):
    hard = sns.sign(notification(ses_bounce("hard@example.net", sent["hard@example.net"])), "1")
    answer = client.post("/webhooks/ses", content=json.dumps(hard), headers={"x-amz-sns-message-type": "Notification"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["hard"] == 1 and answer.json()["bounced"] == 1
    assert status_of(engine, "hard") == SubscriberStatus.BOUNCED and last_event(engine, "hard") == ("bounced", 1)

    complaint = sns.sign(notification(ses_complaint("angry@example.net", sent["angry@example.net"]), "sns-2"), "2")
    assert client.post("/webhooks/ses", content=json.dumps(complaint)).json()["complained"] == 1
    assert status_of(engine, "angry") == SubscriberStatus.COMPLAINED

    soft = sns.sign(notification(ses_bounce("soft@example.net", "<ses-rewrote-it@email.amazonses.com>",
                                            "Transient", "fb-2"), "sns-3"))
    assert client.post("/webhooks/ses", content=json.dumps(soft)).json()["soft"] == 1
    assert status_of(engine, "soft") == SubscriberStatus.CONFIRMED and last_event(engine, "soft") == ("soft_bounce", 1)
    assert sns.loads == [CERT_URL]  # fetched once, then cached

    events = event_count(engine)
    again = client.post("/webhooks/ses", content=json.dumps(hard))  # SNS delivers at least once
    assert again.status_code == 200 and again.json()["duplicates"] == 1 and event_count(engine) == events


def test_ses_unsigned_or_wrongly_signed_gets_401_and_changes_nothing(client, engine, sent, sns):
    body = notification(ses_bounce("hard@example.net", sent["hard@example.net"]))
    signed = sns.sign(body)
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "unsigned": body,
        "tampered": {**signed, "Message": json.dumps(ses_bounce("fine@example.net", sent["fine@example.net"]))},
        "other key": sns.sign(body, key=other_key),
        "not base64": {**signed, "Signature": "%%%"},
        "bad version": {**signed, "SignatureVersion": "3"},
        "foreign host": sns.sign({**body, "SigningCertURL": "https://sns.eu-west-1.amazonaws.com.evil.example/c.pem"}),
        "plain http": sns.sign({**body, "SigningCertURL": CERT_URL.replace("https:", "http:")}),
        "other region": sns.sign({**body, "SigningCertURL": CERT_URL.replace("eu-west-1", "us-east-1")}),
    }
    events = event_count(engine)
    for name, message in cases.items():
        answer = client.post("/webhooks/ses", content=json.dumps(message))
        assert answer.status_code == 401, name
        assert "signed" in answer.json()["error"] or "SigningCertURL" in answer.json()["error"], name
    assert event_count(engine) == events and status_of(engine, "hard") == SubscriberStatus.CONFIRMED
    assert set(sns.loads) <= {CERT_URL}  # no certificate was fetched from anywhere else


def test_ses_other_topics_malformed_and_oversized_bodies_are_refused(client, engine, sent, sns):
    events = event_count(engine)
    foreign = sns.sign({**notification(ses_bounce("hard@example.net", sent["hard@example.net"])),
                        "TopicArn": "arn:aws:sns:eu-west-1:999999999999:someone-else"})
    assert client.post("/webhooks/ses", content=json.dumps(foreign)).status_code == 403
    not_json = client.post("/webhooks/ses", content=b"{not json")
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    assert client.post("/webhooks/ses", content=b"[1, 2]").status_code == 400
    broken = sns.sign({**notification({}), "Message": "no json here"})
    assert client.post("/webhooks/ses", content=json.dumps(broken)).status_code == 400
    no_recipients = ses_bounce("hard@example.net", sent["hard@example.net"])
    no_recipients["bounce"]["bouncedRecipients"] = []
    answer = client.post("/webhooks/ses", content=json.dumps(sns.sign(notification(no_recipients))))
    assert answer.status_code == 400 and "bouncedRecipients" in answer.json()["error"]
    huge = client.post("/webhooks/ses", content=b"[" + b"0," * MAX_BODY_BYTES + b"0]")
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]
    assert event_count(engine) == events


def test_ses_subscription_is_reported_never_visited(client, engine, sns):
    confirm = sns.sign({"Type": "SubscriptionConfirmation", "MessageId": "sub-1", "TopicArn": TOPIC,
                        "Token": "2336412f37f", "Message": "You have chosen to subscribe…",
                        "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&Token=2336",
                        "Timestamp": "2026-11-23T08:00:00.000Z"})
    answer = client.post("/webhooks/ses", content=json.dumps(confirm))
    assert answer.status_code == 200 and "does not visit" in answer.json()["note"]
    assert sns.loads == [CERT_URL]  # the certificate only: SubscribeURL was not fetched
    note = recent_runs(engine, limit=1)[0]
    assert note.job == "webhooks" and "Action=ConfirmSubscription" in note.detail


def test_ses_certificate_unreachable_is_503_so_sns_retries(client, engine, sent, sns):
    sns.down = True
    hard = sns.sign(notification(ses_bounce("hard@example.net", sent["hard@example.net"])))
    assert client.post("/webhooks/ses", content=json.dumps(hard)).status_code == 503
    assert status_of(engine, "hard") == SubscriberStatus.CONFIRMED


# --- Postmark ------------------------------------------------------------------------------------------

def postmark(record_type: str, bounce_type: str, email: str, event_id: int) -> dict:
    return {"RecordType": record_type, "ID": event_id, "Type": bounce_type, "TypeCode": 1, "Email": email,
            "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483", "Description": "The server was unable to deliver.",
            "Details": "smtp;550 5.1.1 The email account does not exist", "BouncedAt": "2026-11-23T08:05:00Z",
            "MessageStream": "outbound"}


def test_postmark_with_basic_auth(client, engine):
    auth = ("postmark", "s3cret-pass")
    answer = client.post("/webhooks/postmark", json=postmark("Bounce", "HardBounce", "hard@example.net", 1), auth=auth)
    assert answer.status_code == 200 and answer.json()["bounced"] == 1
    assert status_of(engine, "hard") == SubscriberStatus.BOUNCED and last_event(engine, "hard") == ("bounced", 1)
    client.post("/webhooks/postmark", json=postmark("Bounce", "SoftBounce", "soft@example.net", 2), auth=auth)
    assert last_event(engine, "soft") == ("soft_bounce", 1)
    client.post("/webhooks/postmark", json=postmark("SpamComplaint", "SpamComplaint", "angry@example.net", 3), auth=auth)
    assert status_of(engine, "angry") == SubscriberStatus.COMPLAINED
    ignored = client.post("/webhooks/postmark", json=postmark("Bounce", "AutoResponder", "fine@example.net", 4),
                          auth=auth)
    assert ignored.status_code == 200 and status_of(engine, "fine") == SubscriberStatus.CONFIRMED


def test_postmark_refuses_missing_or_wrong_credentials_and_malformed_payloads(client, engine):
    body = postmark("Bounce", "HardBounce", "hard@example.net", 1)
    events = event_count(engine)
    missing = client.post("/webhooks/postmark", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Basic")
    assert client.post("/webhooks/postmark", json=body, auth=("postmark", "guess")).status_code == 401
    assert client.post("/webhooks/postmark", json=body, auth=("other", "s3cret-pass")).status_code == 401
    assert client.post("/webhooks/postmark", json=body, headers={"authorization": "Basic %%%"}).status_code == 401
    no_email = {k: v for k, v in body.items() if k != "Email"}
    answer = client.post("/webhooks/postmark", json=no_email, auth=("postmark", "s3cret-pass"))
    assert answer.status_code == 400 and "Email" in answer.json()["error"]
    bad_address = {**body, "Email": "not an address\r\nBcc: x@y"}
    assert client.post("/webhooks/postmark", json=bad_address, auth=("postmark", "s3cret-pass")).status_code == 400
    assert event_count(engine) == events and status_of(engine, "hard") == SubscriberStatus.CONFIRMED


# --- Mailgun -------------------------------------------------------------------------------------------

def mailgun(event: dict, key: str = MAILGUN_KEY, timestamp: int | None = None, token: str | None = None) -> dict:
    timestamp = str(timestamp or int(time.time()))
    token = token or hashlib.sha256(json.dumps(event).encode() + timestamp.encode()).hexdigest()[:50]
    signature = hmac.new(key.encode(), (timestamp + token).encode(), hashlib.sha256).hexdigest()
    return {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event}


def failed(email: str, message_id: str, severity: str = "permanent", event_id: str = "ev-1", **extra) -> dict:
    return {"event": "failed", "id": event_id, "severity": severity, "recipient": email, "reason": "bounce",
            "message": {"headers": {"message-id": message_id.strip("<>")}},
            "delivery-status": {"code": 550, "message": "5.1.1 The email account that you tried to reach does not exist"},
            **extra}


def test_mailgun_failed_complained_and_temporary(client, engine, sent):
    answer = client.post("/webhooks/mailgun", json=mailgun(failed("hard@example.net", sent["hard@example.net"])))
    assert answer.status_code == 200 and answer.json()["bounced"] == 1
    assert status_of(engine, "hard") == SubscriberStatus.BOUNCED
    temporary = failed("soft@example.net", sent["soft@example.net"], "temporary", "ev-2")
    assert client.post("/webhooks/mailgun", json=mailgun(temporary)).json()["delayed"] == 1
    assert last_event(engine, "soft") == ("delayed", 1) and status_of(engine, "soft") == SubscriberStatus.CONFIRMED
    complained = {"event": "complained", "id": "ev-3", "recipient": "angry@example.net",
                  "message": {"headers": {"message-id": sent["angry@example.net"].strip("<>")}}}
    assert client.post("/webhooks/mailgun", json=mailgun(complained)).json()["complained"] == 1
    delivered = {"event": "delivered", "id": "ev-4", "recipient": "fine@example.net"}
    assert client.post("/webhooks/mailgun", json=mailgun(delivered)).status_code == 200


def test_mailgun_refuses_unsigned_wrongly_signed_stale_and_replayed(client, engine, sent):
    event = failed("hard@example.net", sent["hard@example.net"])
    events = event_count(engine)
    assert client.post("/webhooks/mailgun", json={"event-data": event}).status_code == 401
    assert client.post("/webhooks/mailgun", json=mailgun(event, key="key-wrong")).status_code == 401
    stale = client.post("/webhooks/mailgun", json=mailgun(event, timestamp=int(time.time()) - 3600))
    assert stale.status_code == 401 and "stale" in stale.json()["error"]
    tampered = mailgun(event)
    tampered["event-data"] = failed("fine@example.net", sent["fine@example.net"])
    tampered["signature"]["timestamp"] = str(int(tampered["signature"]["timestamp"]) + 1)
    assert client.post("/webhooks/mailgun", json=tampered).status_code == 401
    assert event_count(engine) == events and status_of(engine, "hard") == SubscriberStatus.CONFIRMED

    good = mailgun(event)
    assert client.post("/webhooks/mailgun", json=good).status_code == 200
    events = event_count(engine)
    replay = client.post("/webhooks/mailgun", json=good)
    assert replay.status_code == 401 and "replayed" in replay.json()["error"] and event_count(engine) == events


def test_mailgun_malformed_payloads_are_400_and_change_nothing(client, engine, sent):
    events = event_count(engine)
    no_recipient = {k: v for k, v in failed("hard@example.net", sent["hard@example.net"]).items() if k != "recipient"}
    answer = client.post("/webhooks/mailgun", json=mailgun(no_recipient))
    assert answer.status_code == 400 and "recipient" in answer.json()["error"]
    odd = failed("hard@example.net", sent["hard@example.net"], severity="sometimes")
    assert client.post("/webhooks/mailgun", json=mailgun(odd)).status_code == 400
    assert client.post("/webhooks/mailgun", content=b"\xff\xfe").status_code == 400
    assert event_count(engine) == events


# --- configuration -------------------------------------------------------------------------------------

def test_an_unconfigured_provider_answers_404(engine, tmp_path, store_url, smtp_server, sent):
    settings = smtp_settings(tmp_path, store_url, smtp_server.port)
    with TestClient(create_app(settings, engine)) as plain:
        for path in ("/webhooks/ses", "/webhooks/postmark", "/webhooks/mailgun"):
            answer = plain.post(path, json={})
            assert answer.status_code == 404 and "not configured" in answer.json()["error"]
        assert plain.get("/webhooks/ses").status_code == 405


def test_a_configured_provider_without_its_secret_stops_the_app(engine, tmp_path, store_url, smtp_server,
                                                                monkeypatch):
    monkeypatch.delenv("TEST_EMPTY_KEY", raising=False)
    settings = smtp_settings(tmp_path, store_url, smtp_server.port,
                             webhooks={"mailgun_signing_key_env": "TEST_EMPTY_KEY"})
    with pytest.raises(ConfigError, match="mailgun_signing_key_env.*TEST_EMPTY_KEY"):
        create_app(settings, engine)


def test_the_string_sns_signs_is_the_one_aws_documents():
    """The AWS SNS developer guide's example ("Verifying the signatures of Amazon SNS messages")."""
    message = {"Type": "Notification", "Message": "My Test Message", "MessageId": "4d4dc071-ddbf-465d-bba8-08f81c89da64",
               "Subject": "My subject", "Timestamp": "2019-01-31T04:37:04.321Z",
               "TopicArn": "arn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P", "Signature": "x"}
    assert string_to_sign(message) == (
        b"Message\nMy Test Message\nMessageId\n4d4dc071-ddbf-465d-bba8-08f81c89da64\nSubject\nMy subject\n"
        b"Timestamp\n2019-01-31T04:37:04.321Z\nTopicArn\narn:aws:sns:us-east-2:123456789012:s4-MySNSTopic-1G1WEFCOXTC0P\n"
        b"Type\nNotification\n")
    without_subject = {k: v for k, v in message.items() if k != "Subject"}
    assert b"Subject" not in string_to_sign(without_subject)


def test_messages_naming_ever_new_certificates_do_not_make_a_fetch_each(client, engine, sent, sns):
    from digest.sns import MAX_FETCHES_PER_HOUR

    body = notification(ses_bounce("hard@example.net", sent["hard@example.net"]))
    answers = [client.post("/webhooks/ses", content=json.dumps(
                   sns.sign({**body, "SigningCertURL": CERT_URL.replace(".pem", f"-{i}.pem")}))).status_code
               for i in range(MAX_FETCHES_PER_HOUR + 3)]
    assert len(sns.loads) == MAX_FETCHES_PER_HOUR and answers[-1] == 503


@pytest.mark.parametrize(("values", "named"), [
    ({"webhooks": {"ses_topic_arns": ["ses-bounces"]}}, "delivery.webhooks.ses_topic_arns[0]"),
    ({"webhooks": {"postmark_username": "user:pass"}}, "delivery.webhooks.postmark_username"),
    ({"webhooks": {"mailgun_signing_key_env": "MAILGUN KEY"}}, "delivery.webhooks.mailgun_signing_key_env"),
    ({"webhooks": {"postmark_password_env": ""}}, "delivery.webhooks.postmark_password_env"),
    ({"webhooks": {"secret": "x"}}, "delivery.webhooks.secret"),
    ({"soft_bounce_limit": 0}, "delivery.soft_bounce_limit"),
])
def test_webhook_settings_are_checked_at_load(tmp_path, values, named):
    from conftest import make_settings

    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace(".", r"\.")):
        make_settings(tmp_path, delivery=values)
