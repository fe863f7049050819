"""The admin's subscribers page on SQLite and PostgreSQL: search and filters counted in the store, one
subscriber's history, add, unsubscribe, erase after confirmation, CSV import after a dry run (other
tools' exports recognised, wrong encodings refused, a changed store refused), export; roles; and a
reload after every form changes nothing."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from admin_fixtures import admin_store, csrf_of, log_in
from sqlalchemy import text
from starlette.testclient import TestClient

from digest.list_columns import map_columns
from digest.models import Account, Role, Subscriber, SubscriberStatus
from digest.pipeline.accounts import add_account
from digest.pipeline.subscriber_import import ImportFileError, decode_upload
from digest.store.audit import list_events
from digest.store.subscribers import add_subscriber, get_subscriber, set_status
from digest.web.app import create_app

LISTS = Path(__file__).resolve().parent / "data" / "subscribers"


@pytest.fixture(autouse=True)
def _uploads_held_in_tmp_path(tmp_path, monkeypatch):
    """Held uploads go to this test's folder, not the system's temporary folder."""
    from digest.pipeline import subscriber_import

    monkeypatch.setattr(subscriber_import, "_hold_root", lambda: tmp_path / "held-imports")


@pytest.fixture(autouse=True)
def _no_password_from_the_environment(monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)


@pytest.fixture
def store(tmp_path, store_url):
    return admin_store(tmp_path, store_url, build=False)


@pytest.fixture
def admin(store):
    client = TestClient(create_app(store.settings, store.engine), base_url="https://testserver")
    with client:
        assert log_in(client).status_code == 303
        yield client


def csrf(admin) -> str:
    return csrf_of(admin.get("/admin/subscribers").text)


def upload(admin, name: str, data: bytes | None = None):
    data = (LISTS / name).read_bytes() if data is None else data
    return admin.post("/admin/subscribers/import", data={"csrf_token": csrf(admin)},
                      files={"file": (name, data, "text/csv")}, follow_redirects=False)


def apply_form(page_html: str) -> dict[str, str]:
    return {k: re.search(rf'name="{k}" value="([^"]+)"', page_html).group(1) for k in ("csrf_token", "digest", "sig")}


def sid(store, email: str) -> int:
    return get_subscriber(store.engine, email).id


# --- the column mapping (pure) ----------------------------------------------------------------------

@pytest.mark.parametrize(("name", "source"), [
    ("mailchimp_subscribed.csv", "Mailchimp"), ("mailchimp_unsubscribed.csv", "Mailchimp"),
    ("listmonk.csv", "listmonk"), ("substack.csv", "Substack"), ("buttondown.csv", "Buttondown"),
])
def test_exports_of_other_tools_are_recognised_by_their_header(name, source):
    header = next(csv.reader(io.StringIO((LISTS / name).read_text(encoding="utf-8"))))
    assert map_columns(header).source == source


def test_a_mailchimp_row_maps_names_consent_and_status():
    header = next(csv.reader((LISTS / "mailchimp_subscribed.csv").open(encoding="utf-8")))
    mapping = map_columns(header)
    row = mapping.row(["a@example.org", "Ana", "Silva"] + [""] * 3 + ["2024-03-01 09:12:44", "203.0.113.7",
                      "2024-03-01 09:13:05", "203.0.113.7"] + [""] * 12)
    assert row["email"] == "a@example.org" and row["name"] == "Ana Silva"
    assert row["consent_at"] == "2024-03-01 09:13:05" and row["consent_ip"] == "203.0.113.7"
    assert "status" not in row and "TAGS".lower() in mapping.ignored
    unsub = map_columns(["Email Address", "UNSUB_TIME"]).row(["x@example.org", "2024-01-01 00:00:00"])
    assert unsub["status"] == "unsubscribed"
    cleaned = map_columns(["Email Address", "CLEAN_TIME"]).row(["x@example.org", "not a date"])
    assert cleaned["status"] == "bounced"
    dates = map_columns(["email", "subscriber_type", "creation_date"])
    assert dates.source == "Buttondown" and dates.row(["x@example.org", "regular", "last Tuesday"])["created_at"] == ""
    assert map_columns(["email", "name", "series"]).source == ""  # digest's own format stays as it was


def test_the_encoding_of_an_upload():
    assert decode_upload((LISTS / "excel_utf16.csv").read_bytes()).startswith("Email Address\tFirst Name")
    assert decode_upload("\ufeffemail\nä@example.org\n".encode()) == "email\nä@example.org\n"
    with pytest.raises(ImportFileError, match=r"not UTF-8 text \(line 2\).*CSV UTF-8"):
        decode_upload((LISTS / "excel_windows1252.csv").read_bytes())
    with pytest.raises(ImportFileError, match="empty"):
        decode_upload(b"  \n")


# --- search, history, export ------------------------------------------------------------------------

def test_search_and_filters_are_counted_and_paged_in_the_store(store, admin):
    now = datetime.now(UTC)
    for i in range(60):
        add_subscriber(store.engine, Subscriber(f"reader{i:02d}@example.org", name=f"Reader {i}", language="fr",
                                                series=("esa-economy-trade",), status=SubscriberStatus.CONFIRMED), now)
    set_status(store.engine, sid(store, "reader07@example.org"), SubscriberStatus.UNSUBSCRIBED, now)
    page = admin.get("/admin/subscribers", params={"language": "fr"})
    assert "61 subscribers match · page 1 of 2" in page.text and "reader59@example.org" in page.text
    assert "reader00@example.org" not in page.text
    second = admin.get("/admin/subscribers", params={"language": "fr", "page": "2"})
    assert "reader00@example.org" in second.text and "page 2 of 2" in second.text
    assert "1 subscriber matches" in admin.get("/admin/subscribers", params={"q": "READER07"}).text
    unsubscribed = admin.get("/admin/subscribers", params={"status": "unsubscribed"}).text
    assert "reader07@example.org" in unsubscribed and "reader08@example.org" not in unsubscribed
    # Anna follows one series, Bob all of them (so every series), Carla and the 60 economy-trade.
    defence = admin.get("/admin/subscribers", params={"series": "esa-security-defence"}).text
    assert "2 subscribers match" in defence and "anna@example.org" in defence and "bob@example.org" in defence
    trade = admin.get("/admin/subscribers", params={"series": "esa-economy-trade"}).text
    assert "62 subscribers match" in trade
    assert "0 subscribers match" in admin.get("/admin/subscribers", params={"q": "100%_"}).text  # wildcards are text


def test_one_subscribers_history_and_the_export(store, admin):
    anna = sid(store, "anna@example.org")
    page = admin.get(f"/admin/subscribers/{anna}")
    assert page.status_code == 200 and "Anna Müller" in page.text and "European Strategic Autonomy" in page.text
    assert 'id="consent"' in page.text and 'id="history"' in page.text
    assert admin.get("/admin/subscribers/999999").status_code == 404
    exported = admin.get("/admin/subscribers/export.csv", params={"series": "esa-security-defence"})
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["email"] for r in rows) == ["anna@example.org", "bob@example.org"]
    add_subscriber(store.engine, Subscriber("x@example.org", name="=HYPERLINK(\"http://evil\")",
                                            status=SubscriberStatus.CONFIRMED))
    everyone = admin.get("/admin/subscribers/export.csv").text
    assert "'=HYPERLINK" in everyone  # formula-safe


# --- add, unsubscribe, erase --------------------------------------------------------------------------

def test_add_then_unsubscribe_then_erase_each_ending_in_a_redirect(store, admin):
    token = csrf(admin)
    added = admin.post("/admin/subscribers/add", data={"csrf_token": token, "email": "New@Example.org", "name": "Neu",
                                                       "language": "de", "series": "esa-economy-trade",
                                                       "want_events": "yes"}, follow_redirects=False)
    assert added.status_code == 303
    new = get_subscriber(store.engine, "new@example.org")
    assert new.status == SubscriberStatus.CONFIRMED and new.consent_method == "admin"
    assert new.series == ("esa-economy-trade",) and new.want_events and not new.want_media
    assert "Subscriber added" in admin.get(added.headers["location"]).text
    bad = admin.post("/admin/subscribers/add", data={"csrf_token": token, "email": "not an address"})
    assert bad.status_code == 400 and "Not added" in bad.text and 'value="not an address"' in bad.text

    out = admin.post(f"/admin/subscribers/{new.id}/unsubscribe", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303 and get_subscriber(store.engine, new.id).status == SubscriberStatus.UNSUBSCRIBED
    again = admin.post(f"/admin/subscribers/{new.id}/unsubscribe", data={"csrf_token": token}, follow_redirects=False)
    assert again.headers["location"].endswith("done=already-out")
    refused = admin.post("/admin/subscribers/add", data={"csrf_token": token, "email": "new@example.org"})
    assert refused.status_code == 409 and get_subscriber(store.engine, new.id).status == SubscriberStatus.UNSUBSCRIBED

    # Erasing needs the confirmation page's box; without it, back to that page and nothing changes.
    unconfirmed = admin.post(f"/admin/subscribers/{new.id}/erase", data={"csrf_token": token}, follow_redirects=False)
    assert unconfirmed.headers["location"] == f"/admin/subscribers/{new.id}/erase"
    assert get_subscriber(store.engine, new.id) is not None
    confirm_page = admin.get(f"/admin/subscribers/{new.id}/erase")
    assert "cannot be undone" in confirm_page.text
    erased = admin.post(f"/admin/subscribers/{new.id}/erase", data={"csrf_token": token, "confirm": "yes"},
                        follow_redirects=False)
    assert erased.status_code == 303 and get_subscriber(store.engine, "new@example.org") is None
    assert "Erased" in admin.get(erased.headers["location"]).text
    # The same POST again (a resubmitted form) finds nothing and changes nothing.
    assert admin.post(f"/admin/subscribers/{new.id}/erase", data={"csrf_token": token, "confirm": "yes"}).status_code == 404
    readd = admin.post("/admin/subscribers/add", data={"csrf_token": token, "email": "new@example.org"})
    assert readd.status_code == 409 and "erased" in readd.text


def test_forms_need_the_csrf_token_and_the_role(store, admin, tmp_path):
    anna = sid(store, "anna@example.org")
    assert admin.post(f"/admin/subscribers/{anna}/erase", data={"confirm": "yes"}).status_code == 403
    assert get_subscriber(store.engine, anna) is not None
    add_account(store.settings, store.engine, "ed@example.org", Role.EDITOR, password="editor password 1",
                actor=Account(email="", role=Role.ADMIN))
    editor = TestClient(create_app(store.settings, store.engine), base_url="https://testserver")
    with editor:
        assert log_in(editor, "ed@example.org", "editor password 1").status_code == 303
        assert editor.get(f"/admin/subscribers/{anna}").status_code == 200
        token = csrf_of(editor.get("/admin/subscribers").text)
        assert editor.get(f"/admin/subscribers/{anna}/erase").status_code == 403
        assert editor.post(f"/admin/subscribers/{anna}/erase", data={"csrf_token": token, "confirm": "yes"}).status_code == 403
    assert get_subscriber(store.engine, anna) is not None


# --- import ---------------------------------------------------------------------------------------------

def test_a_mailchimp_export_is_imported_after_a_dry_run(store, admin):
    held = upload(admin, "mailchimp_subscribed.csv")
    assert held.status_code == 303 and held.headers["location"].startswith("/admin/subscribers/import/")
    dry = admin.get(held.headers["location"])
    assert "read as a <strong>Mailchimp</strong> export" in dry.text
    counts = {k: int(re.search(rf'id="count-{k}">(\d+)<', dry.text).group(1))
              for k in ("added", "updated", "unchanged", "suppressed", "rejected")}
    assert counts == {"added": 2, "updated": 0, "unchanged": 1, "suppressed": 0, "rejected": 2}
    assert "Import these 2" in dry.text and "already stored with these details" in dry.text
    assert "An email address must have an @-sign" in dry.text  # a reason per line
    assert get_subscriber(store.engine, "ana.silva@example.org") is None  # a dry run writes nothing
    assert admin.get(held.headers["location"]).text.count("count-added") == 1  # a reload: the same dry run

    form = apply_form(dry.text)
    done = admin.post(held.headers["location"] + "/apply", data=form, follow_redirects=False)
    assert done.status_code == 303
    ana = get_subscriber(store.engine, "ana.silva@example.org")
    assert ana.name == "Ana Silva" and ana.status == SubscriberStatus.CONFIRMED and ana.consent_method == "import"
    assert ana.consent_ip == "203.0.113.7" and ana.consent_at == datetime(2024, 3, 1, 9, 13, 5, tzinfo=UTC)
    assert get_subscriber(store.engine, "francois.dupont@example.org").name == "François Dupont"
    history = admin.get(f"/admin/subscribers/{ana.id}").text
    assert "import of mailchimp_subscribed.csv by Anna" in history
    landing = admin.get(done.headers["location"]).text
    assert "Imported mailchimp_subscribed.csv: 2 added" in landing
    # Applying again (a resubmitted form) finds the upload gone: nothing changes.
    before = admin.get("/admin/subscribers").text.count("@example.org")
    assert admin.post(held.headers["location"] + "/apply", data=form).status_code == 410
    assert admin.get("/admin/subscribers").text.count("@example.org") == before
    assert any(e.action == "subscribers.import" for e in list_events(store.engine))


def test_the_dry_run_reasons_and_opt_outs_of_other_tools(store, admin):
    now = datetime.now(UTC)
    add_subscriber(store.engine, Subscriber("lena@example.org", "Lena", status=SubscriberStatus.CONFIRMED), now)
    dry = admin.get(upload(admin, "listmonk.csv").headers["location"]).text
    assert "read as a <strong>listmonk</strong> export" in dry
    assert re.search(r'id="count-updated">1<', dry) and re.search(r'id="count-suppressed">1<', dry)
    assert "status &#39;archived&#39; is not a listmonk status" in dry and "name changes" in dry
    assert "marks unsubscribed" in dry
    dry = admin.get(upload(admin, "mailchimp_unsubscribed.csv").headers["location"]).text
    assert re.search(r'id="count-suppressed">1<', dry) and "never mailed" in dry
    dry = admin.get(upload(admin, "buttondown.csv").headers["location"]).text
    assert re.search(r'id="count-added">2<', dry) and re.search(r'id="count-suppressed">1<', dry)
    assert "waiting for its owner" in dry
    dry = admin.get(upload(admin, "substack.csv").headers["location"]).text
    assert re.search(r'id="count-added">1<', dry) and re.search(r'id="count-suppressed">1<', dry)
    utf16 = admin.get(upload(admin, "excel_utf16.csv").headers["location"]).text
    assert re.search(r'id="count-added">1<', utf16) and "zoe@example.org" in utf16
    own = admin.get(upload(admin, "semicolon_bom_crlf.csv").headers["location"]).text
    assert "read as a" not in own and not re.search(r'id="count-added">0<', own)


def test_a_second_apply_of_the_same_upload_imports_nothing(store):
    from digest.pipeline.subscriber_import import UploadGone, apply_import, hold_upload, plan_import

    held = hold_upload((LISTS / "substack.csv").read_bytes(), "substack.csv", "owner")
    plan = plan_import(store.settings, store.engine, held.path)
    report = apply_import(store.settings, store.engine, held, plan.digest, datetime.now(UTC))
    assert report.added == 1 and report.suppressed == [3]
    assert get_subscriber(store.engine, "muted@example.org").status == SubscriberStatus.UNSUBSCRIBED
    with store.engine.connect() as conn:
        details = set(conn.execute(text("select detail from subscriber_events")).scalars())
    assert "import of substack.csv by the command line" in details
    with pytest.raises(UploadGone):
        apply_import(store.settings, store.engine, held, plan.digest, datetime.now(UTC))


def test_an_import_is_refused_when_the_store_changed_since_its_dry_run(store, admin):
    location = upload(admin, "mailchimp_subscribed.csv").headers["location"]
    form = apply_form(admin.get(location).text)
    # Meanwhile someone else adds Ana: the dry run would now say "updated", not "added".
    add_subscriber(store.engine, Subscriber("ana.silva@example.org", "A. Silva", status=SubscriberStatus.CONFIRMED))
    refused = admin.post(location + "/apply", data=form)
    assert refused.status_code == 409 and "nothing was imported" in refused.text
    assert get_subscriber(store.engine, "ana.silva@example.org").name == "A. Silva"
    assert get_subscriber(store.engine, "francois.dupont@example.org") is None
    # The page shows the new dry run, whose own form imports it.
    done = admin.post(location + "/apply", data=apply_form(refused.text), follow_redirects=False)
    assert done.status_code == 303 and get_subscriber(store.engine, "ana.silva@example.org").name == "Ana Silva"


def test_a_forged_digest_or_another_session_imports_nothing(store, admin):
    location = upload(admin, "mailchimp_subscribed.csv").headers["location"]
    form = {**apply_form(admin.get(location).text), "sig": "0" * 64}
    assert admin.post(location + "/apply", data=form).status_code == 400
    other = TestClient(create_app(store.settings, store.engine), base_url="https://testserver")
    with other:
        log_in(other, "Someone else")
        assert other.get(location).status_code == 410
    assert get_subscriber(store.engine, "ana.silva@example.org") is None


@pytest.mark.parametrize(("name", "data", "words"), [
    ("excel_windows1252.csv", None, "probably in a Windows encoding"),
    ("latin1.csv", None, "not UTF-8 text (line 2)"),
    ("no_email_column.csv", None, "email"),
    ("unterminated_quote.csv", None, "never closed"),
    ("empty.csv", b"", "empty"),
])
def test_bad_files_get_a_clear_message_and_nothing_is_saved(store, admin, name, data, words):
    before = admin.get("/admin/subscribers").text.count("@example.org")
    held = upload(admin, name, data)
    answer = admin.get(held.headers["location"]) if held.status_code == 303 else held
    assert answer.status_code == 400 and words in answer.text and "Nothing was imported" in answer.text
    assert admin.get("/admin/subscribers").text.count("@example.org") == before


def test_an_opted_out_address_is_never_brought_back_by_an_import(store, admin):
    set_status(store.engine, sid(store, "bob@example.org"), SubscriberStatus.UNSUBSCRIBED)
    data = b"Email Address,First Name,Last Name\nbob@example.org,Bob,\n"
    location = upload(admin, "bob.csv", data).headers["location"]
    dry = admin.get(location).text
    assert re.search(r'id="count-suppressed">1<', dry) and "only their own sign-up brings them back" in dry
    admin.post(location + "/apply", data=apply_form(dry))
    assert get_subscriber(store.engine, "bob@example.org").status == SubscriberStatus.UNSUBSCRIBED


# --- the command line's dry run ---------------------------------------------------------------------

def test_the_command_line_dry_run_stores_nothing_and_says_why(store, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from digest.cli import main

    monkeypatch.setenv("DIGEST_SECRET", "test-secret")
    series = "\n".join(f'[[series]]\nid = "{s.id}"\nname = "{s.name}"\n' for s in store.settings.series)
    config = tmp_path / "cli.toml"
    config.write_text(f'[store]\nurl = "{store.settings.store.url}"\n\n{series}', encoding="utf-8")
    run = CliRunner().invoke(main, ["--config", str(config), "subscribers", "import", "--dry-run",
                                    str(LISTS / "mailchimp_subscribed.csv")])
    assert run.exit_code == 1  # rows would be rejected
    assert "dry run of a Mailchimp export, nothing stored: added 2, updated 0, unchanged 1" in run.stdout
    assert "line 5: rejected: invalid address" in run.stdout and "line 3: unchanged: bob@example.org" in run.stdout
    assert get_subscriber(store.engine, "ana.silva@example.org") is None
    as_json = CliRunner().invoke(main, ["--config", str(config), "subscribers", "import", "--dry-run", "--json",
                                        str(LISTS / "substack.csv")])
    report = json.loads(as_json.stdout)
    assert as_json.exit_code == 0 and report["source"] == "Substack" and report["suppressed"] == 1
    assert {"line": 3, "outcome": "suppressed", "email": "muted@example.org",
            "reason": "new address the file marks unsubscribed: stored as unsubscribed, never mailed"} in report["lines"]
    bad = CliRunner().invoke(main, ["--config", str(config), "subscribers", "import", "--dry-run",
                                    str(LISTS / "latin1.csv")])
    assert bad.exit_code == 2 and "not UTF-8 text (line 2)" in bad.stderr


def test_a_site_whose_series_live_in_the_store(tmp_path, store_url):
    """No [[series]] in digest.toml: the page offers, filters and exports by the store's series."""
    from admin_fixtures import PASSWORD_HASH

    from digest.config import settings_from_dict
    from digest.pipeline.series_settings import add_series
    from digest.store import open_store

    settings = settings_from_dict({"store": {"url": store_url}, "web": {"admin_password_hash": PASSWORD_HASH}},
                                  base_dir=tmp_path)
    engine = open_store(settings.store.url)
    add_series(settings, engine, "climate", "Climate Policy")
    add_series(settings, engine, "trade", "Trade Policy")  # one series chosen out of one would mean "all"
    try:
        with TestClient(create_app(settings, engine), base_url="https://testserver") as client:
            assert log_in(client).status_code == 303
            page = client.get("/admin/subscribers").text
            assert '<option value="climate">Climate Policy</option>' in page
            added = client.post("/admin/subscribers/add", data={"csrf_token": csrf_of(page), "email": "c@example.org",
                                                                "series": "climate"}, follow_redirects=False)
            assert added.status_code == 303 and get_subscriber(engine, "c@example.org").series == ("climate",)
            assert "Climate Policy" in client.get(added.headers["location"]).text
            assert "1 subscriber matches" in client.get("/admin/subscribers", params={"series": "climate"}).text
            exported = client.get("/admin/subscribers/export.csv", params={"series": "climate"}).text
            assert "c@example.org" in exported
    finally:
        engine.dispose()
