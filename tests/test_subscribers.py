"""Subscribers: validation, the store functions other stages call, tokens, GDPR erase/show, the CLI."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from conftest import SERIES, make_settings
from sqlalchemy import inspect, select, text
from test_import import write_config

from digest.cli import main
from digest.listfile import safe_cell
from digest.models import Subscriber, SubscriberStatus
from digest.signing import (
    CONFIRM,
    PREFERENCES,
    SECRET_FILE,
    SUPPRESSION_KEY_FILE,
    UNSUBSCRIBE,
    TokenSigner,
    confirm_url,
    derived_keys,
    read_confirm_token,
    signing_secrets,
    subscriber_links,
    suppression_keys,
    verify,
)
from digest.store import schema, suppressions
from digest.store import subscribers as store
from digest.subscriber_fields import (
    InvalidSubscriber,
    clean_name,
    make_subscriber,
    normalise_email,
    parse_series,
)

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def secret(monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "newest-secret,older-secret")


def confirmed(email: str, **fields) -> Subscriber:
    return Subscriber(email=email, status=SubscriberStatus.CONFIRMED, consent_at=NOW, consent_method="admin", **fields)


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("  Jane.Doe@Example.ORG ", "jane.doe@example.org"),
    ("user+tag@bücher.de", "user+tag@xn--bcher-kva.de"),
])
def test_addresses_are_normalised(raw, expected):
    assert normalise_email(raw) == expected


@pytest.mark.parametrize("raw", ["", "plain", "a@b", "two@example.org, three@example.org", "x@example.org\r\nBcc: y@z.org",
                                 "jürgen@example.de", "a" * 65 + "@example.org"])
def test_invalid_addresses_are_refused(raw):
    with pytest.raises(InvalidSubscriber, match="invalid address"):
        normalise_email(raw)


TRICKY = ["Jane.Doe@Example.ORG", "a..b@x.org", ".a@x.org", "a.@x.org", "a@x", "a@-x.org", "a@x..org", "a@localhost",
          "a@example.invalid", "a@x.local", "a@123.45.67.89", "a@[1.2.3.4]", "a@x_y.org", "a@xn--bcher-kva.de",
          "a@bücher.de", "user+tag@sub.example.co.uk", '"quoted"@x.org', "a b@x.org", "a@x.org.", "A@B.C",
          "x@" + "a" * 63 + ".org", "x@" + "a" * 64 + ".org", "x@" + ("a" * 60 + ".") * 4 + "org",
          "y" * 30 + "@" + ("a" * 60 + ".") * 3 + "a" * 40 + ".org", "a@x.onion", "a@x.test", "a@@x.org", "a@x@y.org",
          "a@x.123", "a@mail.arpa", "a@home.arpa", "o'brien@example.ie", "{x}@example.org", "a@exa mple.org", "@x.org"]


@pytest.mark.parametrize("raw", TRICKY)
def test_fast_path_agrees_with_email_validator(raw):
    from digest.subscriber_fields import _validated

    def outcome(check):
        try:
            return check(raw)
        except InvalidSubscriber:
            return "invalid"

    assert outcome(normalise_email) == outcome(_validated)


def test_names_lose_control_characters_and_length():
    assert clean_name("  Ann\r\nBcc: x@y.org\t Lee\x00 ") == "Ann Bcc: x@y.org Lee"
    assert len(clean_name("x" * 1000)) == 200


def test_series_follow_configuration_order_and_all_means_empty(settings):
    assert parse_series("esa-digital-technology; esa-security-defence", settings) == (
        "esa-security-defence", "esa-digital-technology")
    assert parse_series(";".join(s["id"] for s in SERIES), settings) == ()
    assert parse_series("", settings) == ()
    with pytest.raises(InvalidSubscriber, match="unknown series 'nope'"):
        parse_series(["nope"], settings)


def test_make_subscriber_defaults_language_to_the_site(settings):
    s = make_subscriber(settings, "A@Example.org", "A", "", "")
    assert (s.email, s.language, s.series) == ("a@example.org", "en", ())
    with pytest.raises(InvalidSubscriber, match="unknown language 'es'"):
        make_subscriber(settings, "a@example.org", language="ES")


def test_safe_cell_guards_formulas():
    assert [safe_cell(v) for v in ("=1+1", "+31", "-2", "@SUM(A1)", "\tx", "ok", None)] == [
        "'=1+1", "'+31", "'-2", "'@SUM(A1)", "'\tx", "ok", ""]


@pytest.mark.parametrize("value, guarded", [
    ("Ann;=1+1", "Ann;'=1+1"),  # a `;`-locale spreadsheet splits the line there: "=1+1" would be a cell
    ("a;b;@SUM(A1)", "a;b;'@SUM(A1)"),
    ("Tab\t+HYPERLINK(x)", "Tab\t'+HYPERLINK(x)"),
    ("=x;-y", "'=x;'-y"),
    ("esa-a;esa-b", "esa-a;esa-b"),
    ("O'Neil; Ann", "O'Neil; Ann"),
    ("'=already", "''=already"),  # a genuine leading quote survives the round trip
    ("a;'=b", "a;''=b"),
])
def test_safe_cell_guards_every_part_a_spreadsheet_may_split_off(value, guarded):
    from digest.listfile import _unquote_cell

    assert safe_cell(value) == guarded
    assert _unquote_cell(safe_cell(value)) == value
    for part in guarded.replace("\t", ";").split(";"):
        assert not part.startswith(("=", "+", "-", "@"))


# --- store ----------------------------------------------------------------------------------------

def test_get_iterate_and_distinct_preferences(engine):
    a = store.add_subscriber(engine, confirmed("a@example.org", language="fr", series=("esa-economy-trade",)), NOW)
    store.add_subscriber(engine, confirmed("b@example.org", language="fr", series=("esa-economy-trade",)), NOW)
    store.add_subscriber(engine, confirmed("c@example.org", want_media=False), NOW)
    store.add_subscriber(engine, Subscriber(email="p@example.org", language="de"), NOW)  # pending
    assert store.add_subscriber(engine, confirmed("a@example.org"), NOW) is None
    assert store.get_subscriber(engine, a.id) == a
    assert store.get_subscriber(engine, " A@EXAMPLE.org") == a
    assert store.get_subscriber(engine, 999) is None
    assert store.get_subscriber(engine, "not an address") is None
    assert [s.email for s in store.iter_confirmed(engine, batch=1)] == ["a@example.org", "b@example.org", "c@example.org"]
    assert sorted(store.distinct_preferences(engine)) == [
        ((), True, False, "en"), (("esa-economy-trade",), True, True, "fr")]
    assert [s.email for s in store.iter_subscribers(engine, series="esa-economy-trade")] == [
        "a@example.org", "b@example.org", "c@example.org", "p@example.org"]
    assert store.count_by_status(engine) == {"pending": 1, "confirmed": 3, "unsubscribed": 0, "bounced": 0,
                                             "complained": 0}


def test_set_status_records_an_event_once(engine):
    a = store.add_subscriber(engine, confirmed("a@example.org"), NOW)
    assert store.set_status(engine, a.id, SubscriberStatus.UNSUBSCRIBED, NOW, detail="one-click")
    assert not store.set_status(engine, a.id, SubscriberStatus.UNSUBSCRIBED, NOW)
    assert not store.set_status(engine, 12345, SubscriberStatus.UNSUBSCRIBED, NOW)
    events = store.subscriber_record(engine, "a@example.org")["events"]
    assert [(e["event"], e["detail"]) for e in events] == [("subscribed", "admin"), ("unsubscribed", "one-click")]
    assert store.get_subscriber(engine, a.id).status == SubscriberStatus.UNSUBSCRIBED


def test_record_bounce_marks_bounced_at_threshold(engine):
    a = store.add_subscriber(engine, confirmed("a@example.org"), NOW)
    assert store.record_bounce(engine, a.id, threshold=2, now=NOW, detail="550 no such user") is False
    assert store.get_subscriber(engine, a.id).status == SubscriberStatus.CONFIRMED
    assert store.record_bounce(engine, a.id, threshold=2, now=NOW) is True
    assert store.get_subscriber(engine, a.id).status == SubscriberStatus.BOUNCED


def test_is_suppressed(engine, settings):
    keys = suppression_keys(settings)
    a = store.add_subscriber(engine, confirmed("a@example.org"), NOW)
    assert not suppressions.is_suppressed(engine, "a@example.org", keys)
    assert not suppressions.is_suppressed(engine, "never@example.org", keys)
    store.set_status(engine, a.id, SubscriberStatus.COMPLAINED, NOW)
    assert suppressions.is_suppressed(engine, "A@example.org", keys)
    store.erase_subscriber(engine, "a@example.org", keys, NOW)
    assert suppressions.is_suppressed(engine, "a@example.org", keys)


def _add_delivery(engine, subscriber_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(schema.issues.insert().values(
            number=1, status="sent", window_start=NOW, window_end=NOW.replace(day=24), dropped=[], pinned=[],
            manifest={}, created_at=NOW, updated_at=NOW))
        conn.execute(schema.deliveries.insert().values(issue_number=1, subscriber_id=subscriber_id, status="sent",
                                                       message_id="<1.2@example.org>", sent_at=NOW))


def every_stored_text(engine) -> str:
    """Every value of every row of every table, as one string."""
    chunks = []
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                chunks.extend(str(v) for v in row)
    return "\n".join(chunks)


def test_erase_leaves_no_personal_data(engine, settings):
    keys = suppression_keys(settings)
    gone = store.add_subscriber(engine, confirmed("Zoe.Quill@example.org", name="Zoë Quillfeather",
                                                  consent_ip="198.51.100.77"), NOW)
    gone = store.get_subscriber(engine, "zoe.quill@example.org")
    kept = store.add_subscriber(engine, confirmed("kept@example.org", name="Kept Person"), NOW)
    store.set_status(engine, gone.id, SubscriberStatus.UNSUBSCRIBED, NOW, detail="web 198.51.100.77")
    _add_delivery(engine, gone.id)
    before = every_stored_text(engine)
    assert "zoe.quill@example.org" in before and "198.51.100.77" in before

    assert store.erase_subscriber(engine, "ZOE.QUILL@example.org", keys, NOW) is True
    after = every_stored_text(engine)
    for personal in ("zoe.quill", "Zoë", "Quillfeather", "198.51.100.77"):
        assert personal not in after
    assert "kept@example.org" in after and "Kept Person" in after
    assert store.subscriber_record(engine, "zoe.quill@example.org") is None
    with engine.connect() as conn:
        assert conn.execute(select(schema.deliveries)).all() == []
        events = conn.execute(select(schema.subscriber_events.c.subscriber_id, schema.subscriber_events.c.event,
                                     schema.subscriber_events.c.detail)).all()
    assert (None, "unsubscribed", "") in events and (None, "erased", "") in events  # counts survive
    assert store.get_subscriber(engine, kept.id) == kept
    assert store.erase_subscriber(engine, "zoe.quill@example.org", keys, NOW) is False  # harmless again


def test_erased_ids_are_never_reused(engine, settings):
    first = store.add_subscriber(engine, confirmed("first@example.org"), NOW)
    store.erase_subscriber(engine, "first@example.org", suppression_keys(settings), NOW)
    second = store.add_subscriber(engine, confirmed("second@example.org"), NOW)
    assert second.id > first.id  # an old link for `first` can never reach `second`


def test_purge_unconfirmed_forgets_old_pending_signups(engine):
    from datetime import timedelta

    old = store.add_subscriber(engine, Subscriber(email="old@example.org", name="Olga", consent_ip="203.0.113.5"),
                               NOW - timedelta(days=4), event="signup")
    recent = store.add_subscriber(engine, Subscriber(email="new@example.org"), NOW, event="signup")
    kept = store.add_subscriber(engine, confirmed("kept@example.org"), NOW - timedelta(days=30))
    assert store.purge_unconfirmed(engine, NOW - timedelta(days=3)) == 1
    assert store.get_subscriber(engine, old.id) is None
    assert store.get_subscriber(engine, recent.id) is not None and store.get_subscriber(engine, kept.id) is not None
    text_left = every_stored_text(engine)
    assert "old@example.org" not in text_left and "Olga" not in text_left and "203.0.113.5" not in text_left
    assert store.purge_unconfirmed(engine, NOW - timedelta(days=3)) == 0


def test_purge_unconfirmed_keeps_a_pending_row_whose_latest_link_is_still_valid(engine):
    from datetime import timedelta

    from digest.store import signups

    hour = timedelta(hours=1)
    again = store.add_subscriber(engine, Subscriber(email="again@example.org"), NOW - 100 * hour, event="signup")
    signups.record_signup_request(engine, again.id, again, "198.51.100.7", now=NOW - 100 * hour)
    nonce = signups.record_signup_request(engine, again.id, again, "198.51.100.7", now=NOW - hour)
    gone = store.add_subscriber(engine, Subscriber(email="gone@example.org"), NOW - 100 * hour, event="signup")
    signups.record_signup_request(engine, gone.id, gone, "198.51.100.8", now=NOW - 80 * hour)
    assert store.purge_unconfirmed(engine, NOW - 72 * hour) == 1
    assert store.get_subscriber(engine, gone.id) is None
    assert store.get_subscriber(engine, again.id).status == SubscriberStatus.PENDING
    assert signups.find_signup_request(engine, again.id, nonce) is not None  # the new link still confirms


def test_subscriber_record_has_row_events_and_deliveries(engine):
    a = store.add_subscriber(engine, confirmed("a@example.org", name="A"), NOW)
    _add_delivery(engine, a.id)
    record = store.subscriber_record(engine, "a@example.org")
    assert record["subscriber"]["email"] == "a@example.org" and record["subscriber"]["consent_method"] == "admin"
    assert record["events"][0]["event"] == "subscribed"
    assert record["deliveries"][0]["issue_number"] == 1 and record["deliveries"][0]["status"] == "sent"
    json.dumps(record)  # JSON-ready


# --- tokens ---------------------------------------------------------------------------------------

def test_links_are_absolute_and_verify_for_their_purpose_only(settings):
    s = confirmed("a@example.org", id=42)
    links = subscriber_links(settings, s)
    assert links.unsubscribe_url.startswith("http://127.0.0.1:8080/unsubscribe/")
    assert links.preferences_url.startswith("http://127.0.0.1:8080/preferences/")
    unsub = links.unsubscribe_url.rsplit("/", 1)[1]
    prefs = links.preferences_url.rsplit("/", 1)[1]
    assert verify(settings, unsub, UNSUBSCRIBE) == 42
    assert verify(settings, prefs, PREFERENCES) == 42
    assert verify(settings, unsub, PREFERENCES) is None
    assert verify(settings, prefs, UNSUBSCRIBE) is None
    assert verify(settings, unsub[:-2] + ("AA" if not unsub.endswith("AA") else "BB"), UNSUBSCRIBE) is None
    assert verify(settings, "garbage", UNSUBSCRIBE) is None
    assert verify(settings, unsub, "nonsense") is None
    with pytest.raises(ValueError, match="stored subscriber"):
        subscriber_links(settings, confirmed("b@example.org"))


def test_confirm_tokens_carry_only_the_id_and_a_nonce_and_expire(settings, monkeypatch):
    token = confirm_url(settings, 7, "n0nce").rsplit("/", 1)[1]
    assert TokenSigner(settings).load(CONFIRM, token) == {"i": 7, "n": "n0nce"}
    confirm = read_confirm_token(settings, token)
    assert (confirm.subscriber_id, confirm.nonce) == (7, "n0nce")
    assert verify(settings, token, CONFIRM) == 7
    assert read_confirm_token(settings, TokenSigner(settings).sign(CONFIRM, {"i": 7})) is None
    assert read_confirm_token(settings, TokenSigner(settings).sign(CONFIRM, {"i": True, "n": "x"})) is None
    real = time.time()
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real - settings.web.confirm_hours * 3600 - 60)
        old = confirm_url(settings, 7, "n0nce").rsplit("/", 1)[1]
    assert verify(settings, old, CONFIRM) is None
    assert verify(settings, old, CONFIRM, max_age=settings.web.confirm_hours * 3600 + 3600) == 7


def test_key_rotation_keeps_old_links_working(settings, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET", "old-key")
    token = TokenSigner(settings).sign(UNSUBSCRIBE, 5)
    monkeypatch.setenv("DIGEST_SECRET", "new-key, old-key")
    assert verify(settings, token, UNSUBSCRIBE) == 5
    fresh = TokenSigner(settings).sign(UNSUBSCRIBE, 5)
    monkeypatch.setenv("DIGEST_SECRET", "new-key")
    assert verify(settings, token, UNSUBSCRIBE) is None  # the old key was retired
    assert verify(settings, fresh, UNSUBSCRIBE) == 5  # new links were signed with the newest key


def test_without_a_secret_one_is_generated_once_and_kept(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("DIGEST_SECRET", raising=False)
    settings = make_settings(tmp_path)
    with caplog.at_level(logging.WARNING, logger="digest.signing"):
        first = signing_secrets(settings)
    assert "no signing secret in the environment" in caplog.text
    path = tmp_path / SECRET_FILE
    assert path.exists() and oct(path.stat().st_mode & 0o777) == "0o600"
    assert signing_secrets(make_settings(tmp_path)) == first
    token = TokenSigner(settings).sign(PREFERENCES, 3)
    assert verify(make_settings(tmp_path), token, PREFERENCES) == 3


# --- command line ---------------------------------------------------------------------------------

@pytest.fixture
def cli(tmp_path, store_url, engine):
    config = write_config(tmp_path, store_url)

    def run(*args: str, input: str | None = None):
        result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return run


def test_cli_add_list_remove(cli, engine):
    assert cli("subscribers", "add", "New@Example.org", "--name", "New", "--language", "fr",
               "--series", "esa-economy-trade", "--no-media")[0] == 0
    new = store.get_subscriber(engine, "new@example.org")
    assert (new.status, new.language, new.series, new.want_media, new.consent_method) == (
        SubscriberStatus.CONFIRMED, "fr", ("esa-economy-trade",), False, "admin")
    code, out, _ = cli("subscribers", "add", "new@example.org", "--name", "Renamed")
    assert (code, out.strip()) == (0, "updated new@example.org")
    code, out, _ = cli("subscribers", "list")
    assert out == "new@example.org\tconfirmed\ten\tall\tRenamed\n"
    assert cli("subscribers", "remove", "new@example.org")[:2] == (0, "unsubscribed new@example.org\n")
    assert cli("subscribers", "remove", "new@example.org")[:2] == (0, "new@example.org is already unsubscribed\n")
    code, _, err = cli("subscribers", "add", "new@example.org")
    assert code == 1 and "only their own sign-up" in err
    assert cli("subscribers", "list", "--status", "confirmed")[1] == ""
    code, out, _ = cli("subscribers", "list", "--status", "unsubscribed", "--json", "--series", "esa-digital-technology")
    assert json.loads(out)["email"] == "new@example.org"


def test_cli_errors(cli):
    code, _, err = cli("subscribers", "add", "not-an-address")
    assert code == 2 and "invalid address" in err
    code, _, err = cli("subscribers", "add", "a@example.org", "--series", "nope")
    assert code == 2 and "unknown series 'nope'" in err
    code, _, err = cli("subscribers", "remove", "nobody@example.org")
    assert code == 1 and "is not a subscriber" in err
    code, _, err = cli("subscribers", "show", "nobody@example.org")
    assert code == 1 and "is not stored" in err


def test_cli_add_confirms_a_pending_subscriber(cli, engine):
    store.add_subscriber(engine, Subscriber(email="p@example.org"), NOW, event="signup")
    code, out, _ = cli("subscribers", "add", "p@example.org")
    assert out.strip() == "confirmed p@example.org (was pending)"
    assert store.get_subscriber(engine, "p@example.org").status == SubscriberStatus.CONFIRMED


def test_cli_erase_and_show(cli, engine):
    cli("subscribers", "add", "gdpr@example.org", "--name", "Greta")
    code, out, _ = cli("subscribers", "show", "GDPR@example.org", "--json")
    record = json.loads(out)
    assert code == 0 and record["subscriber"]["name"] == "Greta" and record["events"][0]["event"] == "subscribed"
    code, out, _ = cli("subscribers", "show", "gdpr@example.org")
    assert "name: Greta" in out and "events: 1, deliveries: 0" in out
    code, _, _ = cli("subscribers", "erase", "gdpr@example.org", input="n\n")
    assert code == 1 and store.get_subscriber(engine, "gdpr@example.org") is not None  # declined: kept
    code, out, _ = cli("subscribers", "erase", "gdpr@example.org", input="y\n")
    assert code == 0 and "erased gdpr@example.org" in out
    code, _, err = cli("subscribers", "show", "gdpr@example.org", "--json")
    assert code == 1 and "erased: only a keyed hash is kept" in err
    code, _, err = cli("subscribers", "add", "gdpr@example.org")
    assert code == 1 and "was erased" in err
    assert cli("subscribers", "erase", "other@example.org", "--yes")[1].strip().endswith("its hash is now suppressed")



def test_list_and_export_refuse_an_unknown_series(cli, engine):
    cli("subscribers", "add", "all@example.org")
    for command in ("list", "export"):
        code, out, err = cli("subscribers", command, "--series", "esa-secuirty-defence")
        assert code == 2 and out == "", command
        assert "--series: unknown series 'esa-secuirty-defence'" in err  # parse_series' words, as `add` says it
        assert "esa-security-defence, esa-economy-trade, esa-digital-technology" in err
        code, out, err = cli("subscribers", command, "--series", " ")
        assert code == 2 and out == "" and "--series needs a series id" in err, command


def test_cli_add_says_an_erased_address_signed_up_again_was_erased(cli, engine):
    """Erased, then signed up on the web (pending, hash still suppressed): `add` refuses for the erasure."""
    assert cli("subscribers", "erase", "back@example.org", "--yes")[0] == 0
    store.add_subscriber(engine, Subscriber(email="back@example.org", status=SubscriberStatus.PENDING,
                                            consent_method="web"), source="web", event="signup")
    code, out, err = cli("subscribers", "add", "back@example.org")
    assert code == 1 and out == ""
    assert "back@example.org was erased: only their own sign-up" in err and "theirs is waiting" in err
    assert "pending:" not in err
    assert store.get_subscriber(engine, "back@example.org").status == SubscriberStatus.PENDING
    code, _, err = cli("subscribers", "add", "plain@example.org")  # the usual case still adds
    assert code == 0 and store.get_subscriber(engine, "plain@example.org").status == SubscriberStatus.CONFIRMED


def test_an_import_never_confirms_an_erased_address_that_signed_up_again(cli, engine, tmp_path):
    """Erased, then signed up on the web (pending): an import must not vouch for it; its own link may."""
    assert cli("subscribers", "erase", "back@example.org", "--yes")[0] == 0
    store.add_subscriber(engine, Subscriber(email="back@example.org", status=SubscriberStatus.PENDING,
                                            consent_method="web"), source="web", event="signup")
    store.add_subscriber(engine, Subscriber(email="waiting@example.org", status=SubscriberStatus.PENDING,
                                            consent_method="web"), source="web", event="signup")
    listing = tmp_path / "list.csv"
    listing.write_text("email\nback@example.org\nwaiting@example.org\n", encoding="utf-8")
    code, out, err = cli("subscribers", "import", str(listing))
    assert code == 0, err
    assert store.get_subscriber(engine, "back@example.org").status == SubscriberStatus.PENDING
    assert store.get_subscriber(engine, "waiting@example.org").status == SubscriberStatus.CONFIRMED  # staff vouch
    assert "suppressed 1" in out and "lines 2\n" in out


def test_cli_add_reactivates_a_bounced_address_only_when_asked(cli, engine):
    cli("subscribers", "add", "b@example.org", "--name", "Bea")
    bounced = store.get_subscriber(engine, "b@example.org")
    store.record_bounce(engine, bounced.id, threshold=1, detail="550 mailbox full")
    code, _, err = cli("subscribers", "add", "b@example.org")
    assert code == 1 and "--reactivate-bounced" in err
    code, out, _ = cli("subscribers", "add", "b@example.org", "--reactivate-bounced", "--language", "de")
    assert (code, out.strip()) == (0, "reactivated b@example.org (had bounced)")
    record = store.subscriber_record(engine, "b@example.org")["subscriber"]
    assert (record["status"], record["bounce_count"], record["consent_method"], record["language"]) == (
        "confirmed", 0, "admin", "de")
    cli("subscribers", "add", "c@example.org")
    store.set_status(engine, store.get_subscriber(engine, "c@example.org").id, SubscriberStatus.COMPLAINED)
    code, _, err = cli("subscribers", "add", "c@example.org", "--reactivate-bounced")
    assert code == 1 and "complained: only their own sign-up" in err  # never re-added by staff
    assert store.get_subscriber(engine, "c@example.org").status == SubscriberStatus.COMPLAINED


def test_show_json_has_every_column_events_and_deliveries(cli, engine):
    cli("subscribers", "add", "all-of-it@example.org", "--name", "Al")
    s = store.get_subscriber(engine, "all-of-it@example.org")
    _add_delivery(engine, s.id)
    store.set_status(engine, s.id, SubscriberStatus.UNSUBSCRIBED, detail="web 198.51.100.7", issue_number=1)
    code, out, _ = cli("subscribers", "show", "all-of-it@example.org", "--json")
    record = json.loads(out)
    assert code == 0 and set(record) == {"subscriber", "events", "deliveries", "signup_requests"}
    assert set(record["subscriber"]) == {c.name for c in schema.subscribers.columns}
    assert record["subscriber"]["unsubscribed_at"] and record["subscriber"]["created_at"]
    assert [(e["event"], e["detail"]) for e in record["events"]] == [("subscribed", "admin"),
                                                                      ("unsubscribed", "web 198.51.100.7")]
    assert set(record["events"][0]) == {c.name for c in schema.subscriber_events.columns}
    (delivery,) = record["deliveries"]
    assert set(delivery) == {c.name for c in schema.deliveries.columns}
    assert delivery["message_id"] == "<1.2@example.org>"


# --- the suppression key of erasures -------------------------------------------------------------

def _list(tmp_path, *emails: str):
    listing = tmp_path / "list.csv"
    listing.write_text("email\n" + "".join(f"{e}\n" for e in emails), encoding="utf-8")
    return str(listing)


def test_erasures_survive_a_change_of_signing_secret(cli, engine, tmp_path, monkeypatch):
    assert cli("subscribers", "erase", "gone@example.org", "--yes")[0] == 0
    monkeypatch.setenv("DIGEST_SECRET", "a-brand-new-secret")  # set as the start-up warning advises
    code, out, _ = cli("subscribers", "import", _list(tmp_path, "Gone@Example.org", "new@example.org"), "--json")
    report = json.loads(out)
    assert code == 0 and report["suppressed"] == [2] and report["added"] == 1
    assert store.get_subscriber(engine, "gone@example.org") is None
    monkeypatch.setenv("DIGEST_SECRET", "a-brand-new-secret,newest-secret")
    code, _, err = cli("subscribers", "add", "gone@example.org")
    assert code == 1 and "was erased" in err


def test_import_and_add_refuse_while_an_erasures_key_is_missing(cli, engine, tmp_path, monkeypatch):
    cli("subscribers", "erase", "gone@example.org", "--yes")
    key_file = tmp_path / SUPPRESSION_KEY_FILE
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    backup = key_file.read_text(encoding="ascii")
    key_file.unlink()  # lost: the next command generates a new key
    listing = _list(tmp_path, "gone@example.org", "other@example.org")
    code, out, err = cli("subscribers", "import", listing)
    assert code == 2 and out == ""
    assert "(1 erasure) that are not among the suppression keys" in err and "no erased address came back" in err
    assert list(store.iter_subscribers(engine)) == []  # nothing stored
    code, _, err = cli("subscribers", "add", "gone@example.org")
    assert code == 2 and "not among the suppression keys" in err
    assert store.get_subscriber(engine, "gone@example.org") is None

    key_file.write_text(key_file.read_text(encoding="ascii") + backup, encoding="ascii")  # restored from the backup
    code, out, _ = cli("subscribers", "import", listing)
    assert code == 0 and out.startswith("added 1, updated 0, unchanged 0, rejected 0, suppressed 1")


def test_the_suppression_key_can_come_from_the_environment(cli, engine, tmp_path, monkeypatch):
    cli("subscribers", "erase", "gone@example.org", "--yes")
    key_file = tmp_path / SUPPRESSION_KEY_FILE
    (key,) = [line for line in key_file.read_text(encoding="ascii").splitlines() if not line.startswith("#")]
    key_file.unlink()
    monkeypatch.setenv("DIGEST_SUPPRESSION_KEY", f"{'ab' * 32}, {key}")  # a newer key first, the moved one after
    code, out, _ = cli("subscribers", "import", _list(tmp_path, "gone@example.org"))
    assert code == 0 and "suppressed 1" in out and not key_file.exists()
    monkeypatch.setenv("DIGEST_SUPPRESSION_KEY", "not-hex")
    code, _, err = cli("subscribers", "import", _list(tmp_path, "gone@example.org"))
    assert code == 2 and "$DIGEST_SUPPRESSION_KEY" in err and "is not a suppression key" in err


def _pre_0002_erasures(engine, keys_and_emails) -> None:
    from digest.suppression_keys import email_hash

    with engine.begin() as conn:  # rows as migration 0002 leaves them: key_id ""
        for key, email in keys_and_emails:
            conn.execute(schema.suppressions.insert().values(email_hash=email_hash(key, email), reason="erased",
                                                             created_at=NOW))


def test_erasures_from_before_the_suppression_key_are_adopted(cli, engine, settings, tmp_path, monkeypatch):
    from digest.suppression_keys import legacy_key_set_id

    legacy = derived_keys(settings, "suppression")  # how erasures were hashed before migration 0002
    _pre_0002_erasures(engine, [(legacy[0], "old@example.org")])
    code, out, _ = cli("subscribers", "import", _list(tmp_path, "old@example.org"))
    assert code == 0 and "suppressed 1" in out
    key_file = (tmp_path / SUPPRESSION_KEY_FILE).read_text(encoding="ascii")
    assert all(f"pre-0002 {key.hex()}\n" in key_file for key in legacy)
    with engine.connect() as conn:
        assert conn.execute(select(schema.suppressions.c.key_id)).scalars().all() == [legacy_key_set_id(legacy)]
    monkeypatch.setenv("DIGEST_SECRET", "changed-after-the-upgrade")
    code, out, _ = cli("subscribers", "import", _list(tmp_path, "OLD@example.org"))
    assert code == 0 and "suppressed 1" in out and store.get_subscriber(engine, "old@example.org") is None
    assert (tmp_path / SUPPRESSION_KEY_FILE).read_text(encoding="ascii") == key_file  # adopted once


@pytest.mark.parametrize("lost", [0, 1])
def test_losing_any_one_pre_0002_key_makes_import_and_add_refuse(cli, engine, settings, tmp_path, lost):
    """A pre-0002 erasure may be hashed with any key of the set: the set counts as present only whole."""
    legacy = derived_keys(settings, "suppression")  # one per signing secret: DIGEST_SECRET lists two
    assert len(legacy) == 2
    _pre_0002_erasures(engine, [(legacy[1], "older@example.org")])  # made under the older secret
    assert cli("subscribers", "import", _list(tmp_path, "older@example.org"))[1].startswith("added 0")
    key_file = tmp_path / SUPPRESSION_KEY_FILE
    lines = key_file.read_text(encoding="ascii").splitlines(keepends=True)
    key_file.write_text("".join(line for line in lines if legacy[lost].hex() not in line), encoding="ascii")

    code, out, err = cli("subscribers", "import", _list(tmp_path, "older@example.org", "new@example.org"))
    assert code == 2 and out == "" and "pre-0002:" in err and "restore all of them" in err
    code, _, err = cli("subscribers", "add", "older@example.org")
    assert code == 2 and "not among the suppression keys" in err
    assert list(store.iter_subscribers(engine)) == []  # nothing stored, the erased address not back


@pytest.mark.parametrize("page", ["docs/subscribers.md", "docs/web-public.md"])
def test_the_pages_link_to_files_and_sections_that_exist(page):
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    source = root / page

    def slugs(path: Path) -> set[str]:  # GitHub's heading anchors
        headings = re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M)
        return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}

    links = re.findall(r"\]\(([^)\s]+)\)", source.read_text(encoding="utf-8"))
    assert links
    for link in links:
        if link.startswith(("http://", "https://", "mailto:")):
            continue
        target, _, anchor = link.partition("#")
        path = (source.parent / target).resolve() if target else source
        assert path.exists(), f"{page} links {link}: no such file"
        if anchor:
            assert anchor in slugs(path), f"{page} links {link}: no such section"
    mentioned = re.findall(r"`((?:bench|docs)/[\w./-]+\.md)`", source.read_text(encoding="utf-8"))
    assert all((root / m).exists() for m in mentioned), mentioned
