"""The subscriber use cases (digest.pipeline.signup and .subscribers) called directly, on SQLite and PostgreSQL.

The web pages and the CLI are tested through their front doors elsewhere; here each use case's
outcome is checked against the store, with no front door in between.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest

from digest.deliver.outbox import MemoryTransport
from digest.models import Subscriber, SubscriberStatus
from digest.pipeline import signup
from digest.pipeline.signup import ChoicesForm, SignupForm
from digest.pipeline.subscribers import (
    add_subscriber,
    erase_subscriber,
    export_subscribers,
    list_subscribers,
    remove_subscriber,
    show_subscriber,
)
from digest.signing import PREFERENCES, UNSUBSCRIBE, TokenSigner, suppression_keys
from digest.store import subscribers as store
from digest.store import suppressions
from digest.subscriber_fields import InvalidSubscriber, make_subscriber, parse_choices

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
IP = "198.51.100.7"


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "use-case-secret")


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def confirm_token(memory: MemoryTransport) -> str:
    """The token in the newest confirmation email the memory transport holds."""
    mail = message_from_bytes(memory.outbox[-1].data, policy=policy.default)
    url = next(word for word in mail.get_body(("plain",)).get_content().split() if "/confirm/" in word)
    return token_of(url)


# --- one cleaning rule ----------------------------------------------------------------------------

def test_make_subscriber_names_every_bad_field_and_reports_the_first(settings):
    with pytest.raises(InvalidSubscriber) as caught:
        make_subscriber(settings, "not-an-address", "", "xx", ["nope"])
    assert caught.value.fields == ("email", "language", "series")
    assert str(caught.value).startswith("invalid address")
    with pytest.raises(InvalidSubscriber) as caught:
        parse_choices(settings, "fr", "esa-economy-trade;nope")
    assert caught.value.fields == ("series",) and "unknown series 'nope'" in str(caught.value)
    assert parse_choices(settings, "", (), default_language="de") == ("de", ())


# --- sign up, confirm -----------------------------------------------------------------------------

def test_sign_up_then_confirm(settings, engine):
    memory = MemoryTransport()
    form = SignupForm(email="Reader@Example.org", name="Rita\r\nBcc: x@y.org", language="fr",
                      series=("esa-economy-trade",), want_media=False)
    outcome = signup.sign_up(settings, engine, form, IP, NOW)
    assert outcome.accepted and outcome.language == "fr" and outcome.confirmation is not None
    pending = store.get_subscriber(engine, "reader@example.org")
    assert (pending.status, pending.consent_ip) == (SubscriberStatus.PENDING, IP)
    sent = signup.send_confirmation(settings, engine, outcome.confirmation, lambda: memory)
    assert sent.sent and memory.closed and memory.outbox[0].recipients == ("reader@example.org",)
    token = confirm_token(memory)

    looked = signup.read_confirmation(settings, engine, token)
    assert looked.valid and looked.request is not None and looked.language == "fr"
    assert store.get_subscriber(engine, pending.id).status == SubscriberStatus.PENDING  # reading changes nothing
    done = signup.confirm_subscription(settings, engine, token, NOW)
    assert done.confirmed and done.request is None
    assert done.preferences_url.startswith(f"{settings.web.base_url.rstrip('/')}/preferences/")
    now = store.get_subscriber(engine, pending.id)
    assert (now.status, now.name, now.language, now.series, now.want_media, now.consent_ip) == (
        SubscriberStatus.CONFIRMED, "Rita Bcc: x@y.org", "fr", ("esa-economy-trade",), False, IP)
    again = signup.confirm_subscription(settings, engine, token, NOW)
    assert again.valid and not again.confirmed  # a harmless repeat


def test_a_bad_sign_up_stores_nothing_and_names_its_fields(settings, engine):
    outcome = signup.sign_up(settings, engine, SignupForm(email="x", language="es", series=("?",)), IP, NOW)
    assert not outcome.accepted and outcome.invalid_fields == ("email", "language", "series")
    assert outcome.confirmation is None and list(store.iter_subscribers(engine)) == []


@pytest.mark.parametrize("status", [SubscriberStatus.CONFIRMED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED])
def test_no_confirmation_is_due_for_confirmed_bounced_or_complained(settings, engine, status):
    s = store.add_subscriber(engine, Subscriber(email="known@example.org", status=SubscriberStatus.CONFIRMED))
    store.set_status(engine, s.id, status)
    outcome = signup.sign_up(settings, engine, SignupForm(email="known@example.org"), IP, NOW)
    assert outcome.accepted and outcome.confirmation is None
    assert store.get_subscriber(engine, s.id).status == status


def test_one_confirmation_per_cooldown_unless_it_could_not_be_sent(settings, engine, caplog):
    memory = MemoryTransport()
    memory.replies["wait@example.org"] = [(451, "try later")]
    first = signup.sign_up(settings, engine, SignupForm(email="wait@example.org"), IP, NOW)
    failed = signup.send_confirmation(settings, engine, first.confirmation, lambda: memory)
    assert (failed.sent, failed.withdrawn, failed.error) == (False, True, "try later")
    assert "not sent: try later" in caplog.text
    second = signup.sign_up(settings, engine, SignupForm(email="wait@example.org"), IP, NOW + timedelta(minutes=1))
    assert signup.send_confirmation(settings, engine, second.confirmation, lambda: memory).sent
    third = signup.sign_up(settings, engine, SignupForm(email="wait@example.org"), IP, NOW + timedelta(minutes=2))
    assert third.accepted and third.confirmation is None  # the cooldown holds for an email that went out


def test_a_transport_that_cannot_start_withdraws_the_request(settings, engine):
    def broken() -> MemoryTransport:
        raise OSError("no route to the relay")

    outcome = signup.sign_up(settings, engine, SignupForm(email="relay@example.org"), IP, NOW)
    sent = signup.send_confirmation(settings, engine, outcome.confirmation, broken)
    assert not sent.sent and sent.withdrawn and "no route to the relay" in sent.error
    assert store.subscriber_record(engine, "relay@example.org")["signup_requests"] == []


def test_bad_confirm_tokens_lead_nowhere(settings, engine):
    for token in ("", "not-a-token", TokenSigner(settings).sign(PREFERENCES, 1)):
        assert not signup.read_confirmation(settings, engine, token).valid
        assert not signup.confirm_subscription(settings, engine, token, NOW).valid


# --- preferences, resubscribe, unsubscribe ---------------------------------------------------------

def test_preferences_are_saved_checked_and_only_for_active_subscribers(settings, engine):
    s = store.add_subscriber(engine, Subscriber(email="p@example.org", status=SubscriberStatus.CONFIRMED,
                                                language="de"))
    token = TokenSigner(settings).sign(PREFERENCES, s.id)
    found = signup.read_preferences(settings, engine, token)
    assert found.valid and found.active and found.subscriber == s
    assert signup.read_unsubscribe(settings, engine, found.unsubscribe_token).subscriber == s

    bad = signup.save_preferences(settings, engine, token, ChoicesForm(language="xx", series=("zzz",)), NOW)
    assert not bad.saved and bad.invalid_fields == ("language", "series")
    assert store.get_subscriber(engine, s.id) == s
    kept = signup.save_preferences(settings, engine, token, ChoicesForm(series=("esa-digital-technology",),
                                                                        want_events=False), NOW)
    assert kept.saved and (kept.subscriber.language, kept.subscriber.series) == ("de", ("esa-digital-technology",))
    assert store.subscriber_record(engine, "p@example.org")["subscriber"]["source"] == "reader"

    store.set_status(engine, s.id, SubscriberStatus.UNSUBSCRIBED)
    inactive = signup.save_preferences(settings, engine, token, ChoicesForm(language="en"), NOW)
    assert inactive.valid and not inactive.active and not inactive.saved
    assert store.get_subscriber(engine, s.id).language == "de"
    back = signup.resubscribe(settings, engine, token, IP, NOW)
    assert back.confirmed and back.subscriber.status == SubscriberStatus.CONFIRMED
    assert store.get_subscriber(engine, s.id).consent_ip == IP
    assert not signup.read_preferences(settings, engine, token + "x").valid


def test_resubscribing_drops_the_erasure_hash(settings, engine):
    keys = suppression_keys(settings)
    store.erase_subscriber(engine, "e@example.org", keys)
    s = store.add_subscriber(engine, Subscriber(email="e@example.org", status=SubscriberStatus.UNSUBSCRIBED))
    assert suppressions.is_erased(engine, "e@example.org", keys)
    signup.resubscribe(settings, engine, TokenSigner(settings).sign(PREFERENCES, s.id), IP, NOW)
    assert not suppressions.is_erased(engine, "e@example.org", keys)


def test_unsubscribe_once_and_attributes_nothing_without_a_delivery(settings, engine):
    s = store.add_subscriber(engine, Subscriber(email="u@example.org", status=SubscriberStatus.CONFIRMED))
    token = TokenSigner(settings).sign(UNSUBSCRIBE, s.id)
    assert signup.read_unsubscribe(settings, engine, token).active
    first = signup.unsubscribe(settings, engine, token, "one-click", NOW)
    assert first.unsubscribed and first.subscriber.status == SubscriberStatus.UNSUBSCRIBED
    second = signup.unsubscribe(settings, engine, token, "one-click", NOW)
    assert second.genuine and not second.unsubscribed and not second.active
    events = store.subscriber_record(engine, "u@example.org")["events"]
    assert [(e["event"], e["detail"], e["issue_number"]) for e in events][-1] == ("unsubscribed", "one-click", None)
    forged = signup.unsubscribe(settings, engine, TokenSigner(settings).sign(PREFERENCES, s.id), "web", NOW)
    assert not forged.genuine


# --- staff ----------------------------------------------------------------------------------------

def test_staff_add_says_what_it_did(settings, engine):
    added = add_subscriber(settings, engine, "New@Example.org", language="fr", now=NOW)
    assert added.added and not added.refused and added.subscriber.email == "new@example.org"
    assert add_subscriber(settings, engine, "new@example.org", name="Nina", now=NOW).updated
    store.add_subscriber(engine, Subscriber(email="pend@example.org"), event="signup")
    assert add_subscriber(settings, engine, "pend@example.org", now=NOW).confirmed
    with pytest.raises(InvalidSubscriber) as caught:
        add_subscriber(settings, engine, "nope", series=["zzz"], now=NOW)
    assert caught.value.fields == ("email", "series")


def test_staff_never_bring_back_an_opt_out_or_an_erasure(settings, engine):
    s = store.add_subscriber(engine, Subscriber(email="b@example.org", status=SubscriberStatus.CONFIRMED))
    store.set_status(engine, s.id, SubscriberStatus.BOUNCED)
    refused = add_subscriber(settings, engine, "b@example.org", now=NOW)
    assert refused.refused and refused.opted_out == SubscriberStatus.BOUNCED
    assert add_subscriber(settings, engine, "b@example.org", reactivate_bounced=True, now=NOW).reactivated
    assert store.get_subscriber(engine, s.id).status == SubscriberStatus.CONFIRMED

    erase_subscriber(settings, engine, "gone@example.org", NOW)
    store.add_subscriber(engine, Subscriber(email="gone@example.org"), event="signup")  # their own sign-up waits
    erased = add_subscriber(settings, engine, "gone@example.org", now=NOW)
    assert erased.refused and erased.erased and erased.signup_waiting and erased.opted_out is None
    assert store.get_subscriber(engine, "gone@example.org").status == SubscriberStatus.PENDING


def test_remove_erase_and_show(settings, engine):
    add_subscriber(settings, engine, "r@example.org", now=NOW)
    assert remove_subscriber(settings, engine, "nobody@example.org", NOW).found is False
    removed = remove_subscriber(settings, engine, "R@example.org", NOW)
    assert removed.unsubscribed and removed.email == "r@example.org"
    again = remove_subscriber(settings, engine, "r@example.org", NOW)
    assert again.found and not again.unsubscribed and again.status == SubscriberStatus.UNSUBSCRIBED
    shown = show_subscriber(settings, engine, "r@example.org")
    assert [e["event"] for e in shown.record["events"]] == ["subscribed", "unsubscribed"]
    assert erase_subscriber(settings, engine, "r@example.org", NOW).existed
    gone = show_subscriber(settings, engine, "r@example.org")
    assert gone.record is None and gone.erased
    assert show_subscriber(settings, engine, "never@example.org").erased is False
    with pytest.raises(InvalidSubscriber):
        erase_subscriber(settings, engine, "not an address", NOW)


def test_list_and_export_filter_and_refuse_an_unknown_series(settings, engine):
    add_subscriber(settings, engine, "all@example.org", now=NOW)
    add_subscriber(settings, engine, "one@example.org", series=["esa-economy-trade"], now=NOW)
    wanted = [s.email for s in list_subscribers(settings, engine, None, "esa-digital-technology")]
    assert wanted == ["all@example.org"]
    with pytest.raises(InvalidSubscriber, match="unknown series 'zzz'"):
        list_subscribers(settings, engine, None, "zzz")
    out = io.StringIO()
    assert export_subscribers(settings, engine, out, "json", SubscriberStatus.CONFIRMED) == 2
    assert [json.loads(line)["email"] for line in out.getvalue().splitlines()] == ["all@example.org",
                                                                                  "one@example.org"]
    csv_out = io.StringIO()
    assert export_subscribers(settings, engine, csv_out, "csv", series_id="esa-economy-trade") == 2
    assert csv_out.getvalue().splitlines()[0].startswith("email,name,language,series,want_events")
    with pytest.raises(ValueError, match="unknown export format"):
        export_subscribers(settings, engine, io.StringIO(), "xml")
