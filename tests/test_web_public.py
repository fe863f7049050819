"""The public pages through the real app in-process (Starlette TestClient), on SQLite and PostgreSQL.

Confirmation emails go through the configured transport: the outbox, read back from its .eml files.
"""

from __future__ import annotations

import re
import time
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from conftest import make_settings
from starlette.testclient import TestClient

from digest.deliver.outbox import MemoryTransport
from digest.models import Subscriber, SubscriberStatus
from digest.signing import (
    PREFERENCES,
    UNSUBSCRIBE,
    TokenSigner,
    confirm_url,
    subscriber_links,
    suppression_keys,
)
from digest.store import open_store, signups, suppressions
from digest.store import subscribers as store
from digest.web.app import create_app

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
LINK_RE = re.compile(r"http://testserver(/confirm/\S+)")


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "web-test-secret")


@pytest.fixture
def web_settings(tmp_path, store_url):
    return make_settings(tmp_path, store_url, web={"base_url": "http://testserver"})


@pytest.fixture
def client(web_settings, engine):
    with TestClient(create_app(web_settings, engine)) as c:
        yield c


def csrf(client: TestClient, path: str = "/subscribe") -> str:
    page = client.get(path)
    assert page.status_code == 200, page.text
    return CSRF_RE.search(page.text).group(1)


def sign_up(client: TestClient, email: str, **fields) -> object:
    data = {"csrf_token": csrf(client), "email": email, "name": "", "language": "en", **fields}
    return client.post("/subscribe", data=data)


def outbox(settings) -> list:
    folder = Path(settings.delivery.outbox_dir)
    files = sorted(folder.glob("*.eml"), key=lambda p: p.stat().st_mtime_ns) if folder.exists() else []
    return [message_from_bytes(p.read_bytes(), policy=policy.default) for p in files]


def confirm_path(message) -> str:
    return LINK_RE.search(message.get_body(("plain",)).get_content()).group(1)


def pending_link(settings, engine, subscriber: Subscriber, **choices) -> str:
    """A confirmation link for a sign-up request stored as the subscribe form would store it."""
    wanted = Subscriber(email=subscriber.email, **choices)
    nonce = signups.record_signup_request(engine, subscriber.id, wanted, "192.0.2.1")
    return confirm_url(settings, subscriber.id, nonce)


def form_token(html: str, action: str) -> str:
    """The CSRF token of the form on the page that posts to `action`."""
    form = re.search(r'<form[^>]*action="' + re.escape(action) + r'"[^>]*>(.*?)</form>', html, re.S).group(1)
    return CSRF_RE.search(form).group(1)


def confirm(client: TestClient, path: str):
    page = client.get(path)
    match = CSRF_RE.search(page.text)
    return client.post(path, data={"csrf_token": match.group(1) if match else csrf(client)})


def test_double_opt_in(client, web_settings, engine):
    answer = sign_up(client, "Reader@Example.org", name="Rita <Reader>", language="fr",
                     series=["esa-economy-trade", "esa-digital-technology"], want_events="1")
    assert answer.status_code == 200 and "Consultez votre boîte de réception" in answer.text
    pending = store.get_subscriber(engine, "reader@example.org")
    assert pending.status == SubscriberStatus.PENDING and pending.consent_ip == "testclient"
    (mail,) = outbox(web_settings)
    assert mail["To"].addresses[0].addr_spec == "reader@example.org"
    assert mail["To"].addresses[0].display_name == "" and "Rita" not in mail.as_string()  # nothing typed is mailed
    assert mail["From"] == web_settings.delivery.sender
    assert mail["Subject"] == "Confirmez votre abonnement à la lettre d’Europa Progressiva Foundation"
    assert mail["Content-Language"] == "fr" and mail["Message-ID"]
    path = confirm_path(mail)

    page = client.get(path)
    assert page.status_code == 200 and "Confirmer mon abonnement" in page.text
    assert store.get_subscriber(engine, pending.id).status == SubscriberStatus.PENDING  # GET changes nothing
    done = client.post(path, data={"csrf_token": CSRF_RE.search(page.text).group(1)})
    assert done.status_code == 200 and "Vous êtes abonné·e" in done.text
    now = store.get_subscriber(engine, pending.id)
    assert (now.status, now.name, now.language, now.series, now.want_events, now.want_media) == (
        SubscriberStatus.CONFIRMED, "Rita <Reader>", "fr", ("esa-economy-trade", "esa-digital-technology"), True, False)
    assert (now.consent_method, now.consent_ip) == ("web", "testclient") and now.consent_at
    prefs = re.search(r'href="(http://testserver/preferences/[^"]+)"', done.text).group(1)
    assert client.get(prefs).status_code == 200
    again = client.post(path, data={"csrf_token": CSRF_RE.search(page.text).group(1)})
    assert again.status_code == 200 and "Vous êtes abonné·e" in again.text  # repeating is harmless
    record = store.subscriber_record(engine, "reader@example.org")
    assert [e["event"] for e in record["events"]] == ["signup", "confirmed"]
    assert record["signup_requests"] == []  # used up: the form's choices and IP are kept nowhere else


def test_confirmation_link_carries_no_name_or_ip(client, web_settings, engine):
    from digest.signing import CONFIRM

    sign_up(client, "tok@example.org", name="Tomasz Okonkwo")
    token = confirm_path(outbox(web_settings)[0]).rsplit("/", 1)[1]
    payload = TokenSigner(web_settings).load(CONFIRM, token)
    assert set(payload) == {"i", "n"}  # the subscriber id and the request's nonce, nothing else
    (request,) = store.subscriber_record(engine, "tok@example.org")["signup_requests"]
    assert (request["name"], request["ip"], request["nonce"]) == ("Tomasz Okonkwo", "testclient", payload["n"])


def test_a_line_break_in_the_name_never_reaches_the_email_headers(client, web_settings, engine):
    sign_up(client, "crlf@example.org", name="Eve\r\nBcc: victim@example.net\r\nX-Injected: 1")
    (path,) = sorted(Path(web_settings.delivery.outbox_dir).glob("*.eml"))
    raw = path.read_bytes()
    headers = raw.split(b"\r\n\r\n", 1)[0] if b"\r\n\r\n" in raw else raw.split(b"\n\n", 1)[0]
    names = [line.split(b":", 1)[0].lower() for line in headers.splitlines() if line and not line[:1].isspace()]
    assert b"bcc" not in names and b"x-injected" not in names and names.count(b"to") == 1
    to = next(line for line in headers.splitlines() if line.lower().startswith(b"to:"))
    assert to == b"To: crlf@example.org"
    assert b"victim" not in raw and b"Eve" not in raw
    saved = confirm(client, confirm_path(outbox(web_settings)[0]))
    assert saved.status_code == 200
    assert store.get_subscriber(engine, "crlf@example.org").name == "Eve Bcc: victim@example.net X-Injected: 1"


def test_one_confirmation_email_per_address_per_cooldown(client, web_settings, engine):
    pages = [sign_up(client, "often@example.org", name=f"Try {i}").text for i in range(4)]
    assert len(set(pages)) == 1  # the same page every time: nothing tells the cooldown applied
    assert [m["To"].addresses[0].addr_spec for m in outbox(web_settings)] == ["often@example.org"]
    assert len(store.subscriber_record(engine, "often@example.org")["signup_requests"]) == 1


def test_cooldown_zero_sends_for_every_signup(tmp_path, store_url, engine):
    settings = make_settings(tmp_path, store_url, web={"base_url": "http://testserver", "confirm_mail_cooldown_hours": 0})
    with TestClient(create_app(settings, engine)) as client:
        sign_up(client, "twice@example.org", language="de")
        sign_up(client, "twice@example.org", language="fr")
    first, second = outbox(settings)
    assert first["Content-Language"] == "de" and second["Content-Language"] == "fr"


def test_the_cooldown_ends_after_its_hours(engine):
    from datetime import UTC, datetime, timedelta

    s = store.add_subscriber(engine, Subscriber(email="cool@example.org"), event="signup")
    start = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    assert signups.record_signup_request(engine, s.id, s, "ip", hour, start)
    assert signups.record_signup_request(engine, s.id, s, "ip", hour, start + timedelta(minutes=59)) is None
    assert signups.record_signup_request(engine, s.id, s, "ip", hour, start + timedelta(minutes=61))


def test_old_confirmation_links_never_undo_an_opt_out(client, web_settings, engine):
    sign_up(client, "undo@example.org")
    path = confirm_path(outbox(web_settings)[0])
    assert confirm(client, path).status_code == 200
    s = store.get_subscriber(engine, "undo@example.org")
    assert s.status == SubscriberStatus.CONFIRMED
    one_click = TestClient(client.app).post(subscriber_links(web_settings, s).unsubscribe_url,
                                            data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200
    replay = confirm(client, path)
    assert replay.status_code == 400 and "This link is not valid" in replay.text
    assert client.get(path).status_code == 400
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.UNSUBSCRIBED


def test_a_link_sent_before_staff_removed_a_pending_signup_is_dead(client, web_settings, engine):
    sign_up(client, "staff-removed@example.org")
    path = confirm_path(outbox(web_settings)[0])
    s = store.get_subscriber(engine, "staff-removed@example.org")
    store.set_status(engine, s.id, SubscriberStatus.UNSUBSCRIBED, detail="staff")
    assert confirm(client, path).status_code == 400
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.UNSUBSCRIBED


@pytest.mark.parametrize("status", [SubscriberStatus.COMPLAINED, SubscriberStatus.BOUNCED])
def test_complained_or_bounced_are_never_confirmed_by_a_link(client, web_settings, engine, status):
    s = store.add_subscriber(engine, Subscriber(email="cb@example.org"), event="signup")
    path = pending_link(web_settings, engine, s)
    store.set_status(engine, s.id, status)
    # Even a request recorded after the status change (as a race could leave it) confirms nothing.
    late = pending_link(web_settings, engine, s)
    for link in (path, late):
        answer = confirm(client, link.replace("http://testserver", ""))
        assert answer.status_code == 400 and "This link is not valid" in answer.text
    assert store.get_subscriber(engine, s.id).status == status


def test_repeated_signups_reveal_nothing(client, web_settings, engine):
    first = sign_up(client, "same@example.org")
    store.confirm_subscriber(engine, store.get_subscriber(engine, "same@example.org"), "web", "")
    second = sign_up(client, "same@example.org")
    stranger = sign_up(client, "stranger@example.org")
    assert first.status_code == second.status_code == stranger.status_code == 200
    assert first.text == second.text == stranger.text
    recipients = [m["To"].addresses[0].addr_spec for m in outbox(web_settings)]
    assert recipients == ["same@example.org", "stranger@example.org"]  # no mail to a confirmed subscriber


def test_bounced_and_complained_get_no_mail_but_unsubscribed_can_return(client, web_settings, engine):
    for email, status in (("b@example.org", SubscriberStatus.BOUNCED), ("c@example.org", SubscriberStatus.COMPLAINED),
                          ("u@example.org", SubscriberStatus.UNSUBSCRIBED)):
        s = store.add_subscriber(engine, Subscriber(email=email, status=SubscriberStatus.CONFIRMED))
        store.set_status(engine, s.id, status)
        assert sign_up(client, email, language="de").status_code == 200
    (mail,) = outbox(web_settings)
    assert mail["To"].addresses[0].addr_spec == "u@example.org"
    assert store.get_subscriber(engine, "u@example.org").status == SubscriberStatus.UNSUBSCRIBED  # until confirmed
    path = confirm_path(mail)
    page = client.get(path)
    client.post(path, data={"csrf_token": CSRF_RE.search(page.text).group(1)})
    back = store.get_subscriber(engine, "u@example.org")
    assert (back.status, back.language) == (SubscriberStatus.CONFIRMED, "de")


def test_erased_address_can_resubscribe_only_by_confirming(client, web_settings, engine):
    keys = suppression_keys(web_settings)
    store.add_subscriber(engine, Subscriber(email="e@example.org", status=SubscriberStatus.CONFIRMED))
    store.erase_subscriber(engine, "e@example.org", keys)
    sign_up(client, "e@example.org")
    assert suppressions.is_suppressed(engine, "e@example.org", keys)
    path = confirm_path(outbox(web_settings)[0])
    page = client.get(path)
    client.post(path, data={"csrf_token": CSRF_RE.search(page.text).group(1)})
    assert not suppressions.is_suppressed(engine, "e@example.org", keys)
    assert store.get_subscriber(engine, "e@example.org").status == SubscriberStatus.CONFIRMED


def test_signups_whose_link_expired_are_forgotten(client, web_settings, engine):
    from datetime import UTC, datetime, timedelta

    long_ago = datetime.now(UTC) - timedelta(hours=web_settings.web.confirm_hours + 1)
    stale = store.add_subscriber(engine, Subscriber(email="stale@example.org"), long_ago, event="signup")
    sign_up(client, "fresh@example.org")
    assert store.get_subscriber(engine, stale.id) is None
    assert store.get_subscriber(engine, "fresh@example.org").status == SubscriberStatus.PENDING


def test_a_late_second_signup_keeps_its_link_past_the_first_ones_expiry(client, web_settings, engine):
    from datetime import UTC, datetime, timedelta

    now, hour = datetime.now(UTC), timedelta(hours=1)
    early = store.add_subscriber(engine, Subscriber(email="late@example.org"), now - 100 * hour, event="signup")
    wanted = Subscriber(email="late@example.org", language="de")
    nonce = signups.record_signup_request(engine, early.id, wanted, "192.0.2.1", now=now - hour)
    sign_up(client, "someone-else@example.org")  # purges the sign-ups whose links expired
    answer = confirm(client, confirm_url(web_settings, early.id, nonce).replace("http://testserver", ""))
    assert answer.status_code == 200
    back = store.get_subscriber(engine, early.id)
    assert (back.status, back.language) == (SubscriberStatus.CONFIRMED, "de")


def test_invalid_input_is_shown_escaped(client, web_settings, engine):
    answer = sign_up(client, '<script>alert("x")</script>', name="<b>bold</b>", series=["<i>nope</i>"])
    assert answer.status_code == 400
    assert "<script>alert" not in answer.text and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in answer.text
    assert "&lt;b&gt;bold&lt;/b&gt;" in answer.text and "<b>bold" not in answer.text
    assert "Please enter a valid email address." in answer.text
    assert "Please choose among the listed series." in answer.text
    assert 'aria-invalid="true"' in answer.text
    assert store.count_by_status(engine)["pending"] == 0 and outbox(web_settings) == []


def test_page_language_follows_accept_language_and_query(client):
    assert 'lang="de"' in client.get("/subscribe", headers={"accept-language": "de-AT,de;q=0.9,en;q=0.5"}).text
    assert 'lang="fr"' in client.get("/subscribe", headers={"accept-language": "es, fr;q=0.4"}).text
    assert 'lang="en"' in client.get("/subscribe?lang=en", headers={"accept-language": "de"}).text


def test_csrf_is_required_on_every_form(client, web_settings, engine):
    fresh = TestClient(client.app)
    assert fresh.post("/subscribe", data={"email": "x@example.org"}).status_code == 403
    assert fresh.post("/subscribe", data={"email": "x@example.org", "csrf_token": csrf(client)}).status_code == 403
    assert client.post("/subscribe", data={"email": "x@example.org", "csrf_token": "0" * 64}).status_code == 403
    s = store.add_subscriber(engine, Subscriber(email="c@example.org", status=SubscriberStatus.CONFIRMED))
    links = subscriber_links(web_settings, s)
    assert client.post(links.preferences_url, data={"action": "save", "language": "de"}).status_code == 403
    assert client.post(links.unsubscribe_url, data={}).status_code == 403
    pending = store.add_subscriber(engine, Subscriber(email="p@example.org"))
    assert client.post(pending_link(web_settings, engine, pending), data={}).status_code == 403
    assert store.get_subscriber(engine, s.id) == s
    assert store.get_subscriber(engine, pending.id).status == SubscriberStatus.PENDING
    assert outbox(web_settings) == []


def test_preferences_change(client, web_settings, engine):
    s = store.add_subscriber(engine, Subscriber(email="p@example.org", status=SubscriberStatus.CONFIRMED,
                                                language="de"))
    url = subscriber_links(web_settings, s).preferences_url
    page = client.get(url)
    assert page.status_code == 200 and 'lang="de"' in page.text and "p@example.org" in page.text
    assert page.text.count("checked") == 5  # every series (= all) and both sections
    token = CSRF_RE.search(page.text).group(1)
    saved = client.post(url, data={"csrf_token": token, "action": "save", "language": "en",
                                   "series": ["esa-digital-technology"], "want_media": "1"})
    assert saved.status_code == 200 and "Your preferences are saved." in saved.text
    now = store.get_subscriber(engine, s.id)
    assert (now.language, now.series, now.want_events, now.want_media, now.status) == (
        "en", ("esa-digital-technology",), False, True, SubscriberStatus.CONFIRMED)
    bad = client.post(url, data={"csrf_token": token, "action": "save", "language": "xx"})
    assert bad.status_code == 400 and store.get_subscriber(engine, s.id) == now
    bad = client.post(url, data={"csrf_token": token, "action": "save", "language": "en", "series": ["zzz"]})
    assert bad.status_code == 400 and store.get_subscriber(engine, s.id) == now
    assert store.subscriber_record(engine, "p@example.org")["subscriber"]["source"] == "reader"


def test_unsubscribe_from_preferences_and_resubscribe(client, web_settings, engine):
    s = store.add_subscriber(engine, Subscriber(email="p@example.org", status=SubscriberStatus.CONFIRMED))
    url = subscriber_links(web_settings, s).preferences_url
    page = client.get(url)
    token = CSRF_RE.search(page.text).group(1)
    action = re.search(r'action="(/unsubscribe/[^"]+)"', page.text).group(1)
    assert client.post(action, data={"csrf_token": token}).status_code == 403  # the save form's token
    assert client.post(action, data={"csrf_token": form_token(page.text, action)}).status_code == 200
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.UNSUBSCRIBED
    page = client.get(url)
    assert "Subscribe again" in page.text
    back = client.post(url, data={"csrf_token": token, "action": "resubscribe"})
    assert back.status_code == 200 and "You are subscribed" in back.text
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.CONFIRMED


def test_one_click_unsubscribe(web_settings, engine, client):
    s = store.add_subscriber(engine, Subscriber(email="o@example.org", status=SubscriberStatus.CONFIRMED))
    url = subscriber_links(web_settings, s).unsubscribe_url
    page = client.get(url)
    assert page.status_code == 200 and "o@example.org" in page.text
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.CONFIRMED  # GET never changes anything
    mailbox = TestClient(client.app)  # no cookies, no CSRF token: as a mailbox provider posts
    first = mailbox.post(url, data={"List-Unsubscribe": "One-Click"})
    assert first.status_code == 200 and "You are unsubscribed" in first.text
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.UNSUBSCRIBED
    assert mailbox.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200  # harmless again
    events = [e["event"] for e in store.subscriber_record(engine, "o@example.org")["events"]]
    assert events.count("unsubscribed") == 1
    assert client.get(url).status_code == 200 and "You are unsubscribed" in client.get(url).text


def test_one_click_multipart_and_own_form(web_settings, engine, client):
    a = store.add_subscriber(engine, Subscriber(email="a@example.org", status=SubscriberStatus.CONFIRMED))
    b = store.add_subscriber(engine, Subscriber(email="b@example.org", status=SubscriberStatus.CONFIRMED))
    url_a = subscriber_links(web_settings, a).unsubscribe_url
    answer = TestClient(client.app).post(url_a, files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200
    assert store.get_subscriber(engine, a.id).status == SubscriberStatus.UNSUBSCRIBED
    url_b = subscriber_links(web_settings, b).unsubscribe_url
    page = client.get(url_b)
    assert client.post(url_b, data={"csrf_token": CSRF_RE.search(page.text).group(1)}).status_code == 200
    assert store.get_subscriber(engine, b.id).status == SubscriberStatus.UNSUBSCRIBED
    record = store.subscriber_record(engine, "b@example.org")
    assert record["events"][-1]["detail"] == "web"
    assert record["events"][-1]["issue_number"] is None  # never received an issue


def test_unsubscribe_is_attributed_to_the_last_issue_received(web_settings, engine, client):
    from datetime import UTC, datetime

    from digest.store import schema

    s = store.add_subscriber(engine, Subscriber(email="i@example.org", status=SubscriberStatus.CONFIRMED))
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for number, status in ((3, "sent"), (4, "sent"), (5, "queued")):
            conn.execute(schema.issues.insert().values(number=number, status="sent", window_start=now.replace(year=2000 + number),
                                                       window_end=now.replace(year=2001 + number), dropped=[], pinned=[],
                                                       manifest={}, created_at=now, updated_at=now))
            conn.execute(schema.deliveries.insert().values(issue_number=number, subscriber_id=s.id, status=status))
    url = subscriber_links(web_settings, s).unsubscribe_url
    assert TestClient(client.app).post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    last = store.subscriber_record(engine, "i@example.org")["events"][-1]
    assert (last["event"], last["detail"], last["issue_number"]) == ("unsubscribed", "one-click", 4)


def test_bad_tokens_all_get_the_same_page_and_change_nothing(web_settings, engine, client, monkeypatch):
    s = store.add_subscriber(engine, Subscriber(email="t@example.org", status=SubscriberStatus.CONFIRMED))
    pending = store.add_subscriber(engine, Subscriber(email="pend@example.org"))
    signer = TokenSigner(web_settings)
    good_unsub = signer.sign(UNSUBSCRIBE, s.id)
    real = time.time()
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real - (web_settings.web.confirm_hours + 1) * 3600)
        expired = pending_link(web_settings, engine, pending).rsplit("/", 1)[1]
    withdrawn = confirm_url(web_settings, pending.id, "no-such-request").rsplit("/", 1)[1]
    monkeypatch.setenv("DIGEST_SECRET", "attacker-secret")
    forged = TokenSigner(web_settings).sign(UNSUBSCRIBE, s.id)
    monkeypatch.setenv("DIGEST_SECRET", "web-test-secret")
    tampered = good_unsub.replace(good_unsub.split(".")[0], TokenSigner(web_settings).sign(UNSUBSCRIBE, 999).split(".")[0])
    wrong_purpose = signer.sign(PREFERENCES, s.id)
    cases = [("get", f"/unsubscribe/{forged}"), ("post", f"/unsubscribe/{forged}"),
             ("get", f"/unsubscribe/{tampered}"), ("post", f"/unsubscribe/{tampered}"),
             ("post", f"/unsubscribe/{wrong_purpose}"), ("get", f"/preferences/{good_unsub}"),
             ("post", f"/preferences/{forged}"), ("get", f"/confirm/{expired}"), ("post", f"/confirm/{expired}"),
             ("get", f"/confirm/{withdrawn}"), ("post", f"/confirm/{withdrawn}"),
             ("get", "/confirm/not-a-token"), ("get", f"/unsubscribe/{good_unsub}x")]
    bodies = set()
    for method, path in cases:
        if method == "get":
            answer = client.get(path)
        else:
            answer = client.post(path, data={"List-Unsubscribe": "One-Click", "csrf_token": csrf(client),
                                             "action": "save", "language": "de"})
        assert answer.status_code == 400, (method, path)
        bodies.add(answer.text)
    assert len(bodies) == 1 and "This link is not valid" in bodies.pop()
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.CONFIRMED
    assert store.get_subscriber(engine, s.id).language == "en"
    assert store.get_subscriber(engine, pending.id).status == SubscriberStatus.PENDING


def test_links_survive_key_rotation(tmp_path, store_url, engine, monkeypatch):
    settings = make_settings(tmp_path, store_url, web={"base_url": "http://testserver"})
    s = store.add_subscriber(engine, Subscriber(email="r@example.org", status=SubscriberStatus.CONFIRMED))
    monkeypatch.setenv("DIGEST_SECRET", "old-key")
    url = subscriber_links(settings, s).unsubscribe_url
    monkeypatch.setenv("DIGEST_SECRET", "new-key,old-key")
    with TestClient(create_app(settings, engine)) as rotated:
        assert rotated.get(url).status_code == 200
    monkeypatch.setenv("DIGEST_SECRET", "new-key")
    with TestClient(create_app(settings, engine)) as retired:
        assert retired.get(url).status_code == 400
        assert retired.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 400
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.CONFIRMED


def test_erased_subscriber_links_are_dead(web_settings, engine, client):
    s = store.add_subscriber(engine, Subscriber(email="gone@example.org", status=SubscriberStatus.CONFIRMED))
    links = subscriber_links(web_settings, s)
    store.erase_subscriber(engine, "gone@example.org", suppression_keys(web_settings))
    assert client.get(links.preferences_url).status_code == 400
    assert TestClient(client.app).post(links.unsubscribe_url, data={"List-Unsubscribe": "One-Click"}).status_code == 200


def test_rate_limits(tmp_path, store_url, engine):
    settings = make_settings(tmp_path, store_url, web={"base_url": "http://testserver", "subscribe_burst": 2,
                                                       "subscribe_rate_per_minute": 1.0, "unsubscribe_burst": 3,
                                                       "unsubscribe_rate_per_minute": 1.0})
    with TestClient(create_app(settings, engine)) as client:
        token = csrf(client)
        codes = [client.post("/subscribe", data={"csrf_token": token, "email": f"r{i}@example.org"}).status_code
                 for i in range(3)]
        assert codes == [200, 200, 429]
        limited = client.post("/subscribe", data={"csrf_token": token, "email": "x@example.org"})
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 60
        assert "Too many requests" in limited.text
        assert store.get_subscriber(engine, "r2@example.org") is None
        s = store.add_subscriber(engine, Subscriber(email="u@example.org", status=SubscriberStatus.CONFIRMED))
        url = subscriber_links(settings, s).unsubscribe_url
        codes = [client.get(url).status_code for _ in range(4)]  # a mail provider's link scanner
        assert codes == [200, 200, 200, 429]
        # The provider's RFC 8058 one-click POST, from the same IP, still goes through: its token verifies.
        mailbox = TestClient(client.app)
        assert mailbox.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200
        assert store.get_subscriber(engine, s.id).status == SubscriberStatus.UNSUBSCRIBED
        assert mailbox.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200  # and again
        # Posts whose token does not verify are what is limited.
        blocked = mailbox.post("/unsubscribe/guessed-token", data={"List-Unsubscribe": "One-Click"})
        assert blocked.status_code == 429 and blocked.headers["retry-after"]


def test_security_headers_and_static(client):
    page = client.get("/subscribe")
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp and "default-src 'self'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
    assert "<script" not in page.text and "style=" not in page.text
    css = client.get("/static/site.css")
    assert css.status_code == 200 and "text/css" in css.headers["content-type"]
    assert client.get("/static/../app.py").status_code == 404


def test_https_base_url_sets_secure_cookie(tmp_path, store_url, engine):
    settings = make_settings(tmp_path, store_url, web={"base_url": "https://news.example.org"})
    with TestClient(create_app(settings, engine)) as client:
        assert "Secure" in client.get("/subscribe").headers["set-cookie"]


def test_oversized_form_is_refused(client, engine):
    token = csrf(client)
    answer = client.post("/subscribe", data={"csrf_token": token, "email": "big@example.org", "name": "x" * 70_000})
    assert answer.status_code == 413
    assert store.get_subscriber(engine, "big@example.org") is None


def test_a_chunked_body_is_capped_too(client, engine):
    from urllib.parse import urlencode

    start = urlencode({"csrf_token": csrf(client), "email": "chunked@example.org", "name": ""}).encode()
    sent = []

    def body():  # no Content-Length: httpx sends it chunked
        yield start
        for _ in range(32):
            sent.append(1)
            yield b"x" * 65_536

    answer = client.post("/subscribe", content=body(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert answer.status_code == 413 and "Too much sent at once" in answer.text
    assert store.get_subscriber(engine, "chunked@example.org") is None
    small = client.post("/subscribe", content=iter([start]), headers={"content-type": "application/x-www-form-urlencoded"})
    assert small.status_code == 200  # a chunked form within the limit is read as usual
    assert store.get_subscriber(engine, "chunked@example.org").status == SubscriberStatus.PENDING


def test_failed_confirmation_send_is_logged(web_settings, engine, caplog):
    memory = MemoryTransport()
    memory.replies["fail@example.org"] = [(550, "no such user")]
    with TestClient(create_app(web_settings, engine, transport_factory=lambda: memory)) as client:
        assert sign_up(client, "fail@example.org").status_code == 200
        assert sign_up(client, "ok@example.org").status_code == 200
    assert "confirmation email for subscriber" in caplog.text and "no such user" in caplog.text
    assert [m.recipients for m in memory.outbox] == [("ok@example.org",)]
    assert memory.closed


def test_a_confirmation_email_that_could_not_be_sent_does_not_use_up_the_cooldown(tmp_path, store_url, engine,
                                                                                  caplog):
    """The SMTP server is down at the first sign-up: the next one, once it is up, gets the link."""
    from conftest import free_port, start_smtp_server

    port = free_port()  # nothing listens there yet
    settings = make_settings(tmp_path, store_url, web={"base_url": "https://testserver"},
                             delivery={"transport": "smtp", "smtp": {"host": "127.0.0.1", "port": port,
                                                                     "connections": 1, "timeout": 5}})
    with TestClient(create_app(settings, engine), base_url="https://testserver") as client:
        down = sign_up(client, "patient@example.org")
        assert "confirmation email for subscriber" in caplog.text and "not sent" in caplog.text
        assert store.subscriber_record(engine, "patient@example.org")["signup_requests"] == []  # withdrawn
        server, controller = start_smtp_server(port)
        try:
            up = sign_up(client, "patient@example.org")
            again = sign_up(client, "patient@example.org")  # the cooldown holds for an email that went out
        finally:
            controller.stop()
        assert down.status_code == up.status_code == again.status_code == 200
        assert down.text == up.text == again.text  # the page says nothing about the mail server
        (mail,) = server.for_recipient("patient@example.org")
        assert confirm(client, re.search(r"https://testserver(/confirm/\S+)", mail.get_body(("plain",)).get_content()).group(1)).status_code == 200
    assert store.get_subscriber(engine, "patient@example.org").status == SubscriberStatus.CONFIRMED


@pytest.mark.slow
def test_digest_serve_answers_on_the_given_port(tmp_path):
    """`digest serve` as a real process: the subscribe page answers, with its security headers."""
    import os
    import subprocess
    import sys

    import httpx
    from conftest import free_port

    port = free_port()
    config = tmp_path / "digest.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path}/serve.db"\n[web]\nbase_url = "http://127.0.0.1:{port}"\n',
                      encoding="utf-8")
    env = {**os.environ, "DIGEST_SECRET": "serve-secret"}
    proc = subprocess.Popen([sys.executable, "-c", "from digest.cli import main; main()", "--config", str(config),
                             "serve", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/subscribe", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stdout.read().decode()
                assert time.monotonic() < deadline, "digest serve did not answer"
                time.sleep(0.2)
        assert answer.status_code == 200 and "Subscribe to the digest" in answer.text
        assert answer.headers["x-frame-options"] == "DENY" and "server" not in answer.headers
        token = "eyJzZWNyZXQiOjF9.aaaa.bbbbbbbb"
        assert httpx.get(f"http://127.0.0.1:{port}/unsubscribe/{token}", timeout=5).status_code == 400
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    log = proc.stdout.read().decode()
    assert "GET /unsubscribe/[token]" in log and token not in log  # the access log never holds working links


HTML_VALIDATE = Path(__file__).resolve().parent / "node_modules" / ".bin" / "html-validate"


def test_every_public_page_is_valid_html(tmp_path, sqlite_url):
    """html-validate's recommended rules on each page kind (SQLite only: markup does not depend on the store)."""
    import json
    import subprocess

    if not HTML_VALIDATE.exists():
        pytest.skip("tests/node_modules missing: run `make test` (npm install in tests/)")
    settings = make_settings(tmp_path, sqlite_url, web={"base_url": "http://testserver"})
    engine = open_store(sqlite_url)
    active = store.add_subscriber(engine, Subscriber(email="a@example.org", status=SubscriberStatus.CONFIRMED))
    gone = store.add_subscriber(engine, Subscriber(email="g@example.org", status=SubscriberStatus.UNSUBSCRIBED))
    pending = store.add_subscriber(engine, Subscriber(email="p@example.org"))
    with TestClient(create_app(settings, engine)) as client:
        token = csrf(client)
        pages = {
            "subscribe": client.get("/subscribe").text,
            "subscribe-errors": client.post("/subscribe", data={"csrf_token": token, "email": "x", "series": ["?"]}).text,
            "check-inbox": client.post("/subscribe", data={"csrf_token": token, "email": "n@example.org"}).text,
            "confirm": client.get(pending_link(settings, engine, pending)).text,
            "preferences": client.get(subscriber_links(settings, active).preferences_url).text,
            "preferences-inactive": client.get(subscriber_links(settings, gone).preferences_url).text,
            "unsubscribe": client.get(subscriber_links(settings, active).unsubscribe_url).text,
            "invalid": client.get("/unsubscribe/forged").text,
            "csrf": client.post("/subscribe", data={}).text,
        }
    engine.dispose()
    config = tmp_path / "htmlvalidate.json"
    # Series checkboxes share the name "series" on purpose (a multi-valued field).
    rules = {"form-dup-name": ["error", {"shared": ["radio", "checkbox", "button", "reset", "submit"]}]}
    config.write_text(json.dumps({"root": True, "extends": ["html-validate:recommended"], "rules": rules}),
                      encoding="utf-8")
    files = []
    for name, html in pages.items():
        files.append(tmp_path / f"{name}.html")
        files[-1].write_text(html, encoding="utf-8")
    report = tmp_path / "report.json"
    result = subprocess.run([str(HTML_VALIDATE), "--config", str(config), "--formatter", f"json={report}",
                             *map(str, files)], capture_output=True, text=True, timeout=60)
    messages = [(Path(r["filePath"]).stem, m["ruleId"], m["message"])
                for r in json.loads(report.read_text() or "[]") for m in r["messages"]]
    assert messages == [], sorted({m[1:] for m in messages})
    assert result.returncode == 0, result.stderr


def test_links_in_a_test_send_say_so_and_change_nothing(client, web_settings, engine):
    """A staff test copy's links name no subscriber (id 0): the pages say it was a test, never "unsubscribed"."""
    from digest.deliver.editions import STAFF_ID

    reader = store.add_subscriber(engine, Subscriber(email="real@example.org", status=SubscriberStatus.CONFIRMED))
    links = subscriber_links(web_settings, Subscriber(email="staff@example.org", id=STAFF_ID))
    for url in (links.unsubscribe_url, links.preferences_url):
        path = url.removeprefix("http://testserver")
        page = client.get(path)
        assert page.status_code == 200 and "A link from a test copy" in page.text and "nothing" in page.text
    one_click = client.post(links.unsubscribe_url.removeprefix("http://testserver"),
                            data={"List-Unsubscribe": "One-Click"})
    assert one_click.status_code == 200 and "A link from a test copy" in one_click.text
    assert "You are unsubscribed" not in one_click.text
    assert store.get_subscriber(engine, reader.id).status == SubscriberStatus.CONFIRMED
