"""`digest subscribers import` / `export` on real list files, on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import DATA, SERIES

from digest.cli import main
from digest.listfile import ListFileError, read_list_file
from digest.models import Subscriber, SubscriberStatus
from digest.signing import suppression_keys
from digest.store import subscribers as store
from digest.store import suppressions

LISTS = DATA / "subscribers"


def write_config(tmp_path: Path, store_url: str) -> Path:
    series = "\n".join(f'[[series]]\nid = "{s["id"]}"\nname = "{s["name"]}"\n' for s in SERIES)
    path = tmp_path / "digest.toml"
    path.write_text(f'[store]\nurl = "{store_url}"\n\n{series}', encoding="utf-8")
    return path


@pytest.fixture
def cli(tmp_path, store_url, engine, monkeypatch):
    """Run `digest …` against this test's store; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("DIGEST_SECRET", "test-secret")
    config = write_config(tmp_path, store_url)

    def run(*args: str, input: str | None = None):
        result = CliRunner().invoke(main, ["--config", str(config), *args], input=input)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return run


def export_to_fresh_store(cli, tmp_path: Path):
    """`subscribers export` from this test's store into a file, and a fresh store with its own config.

    Returns (the exported file, the fresh store's engine, a function running `digest …` against it).
    """
    from digest.store import open_store

    code, out, _ = cli("subscribers", "export")
    assert code == 0
    exported = tmp_path / "exported.csv"
    exported.write_text(out, encoding="utf-8")
    other_url = f"sqlite:///{tmp_path / 'other.db'}"
    other = open_store(other_url)
    (tmp_path / "other").mkdir()
    config = write_config(tmp_path / "other", other_url)
    return exported, other, lambda *args: CliRunner().invoke(main, ["--config", str(config), *args])


def statuses(engine) -> dict[str, str]:
    return {s.email: s.status.value for s in store.iter_subscribers(engine)}


def test_report_names_every_kind_of_bad_row(cli, engine):
    code, out, _ = cli("subscribers", "import", str(LISTS / "every_bad_row.csv"), "--json")
    report = json.loads(out)
    assert code == 1  # rows were rejected
    assert (report["added"], report["updated"], report["unchanged"]) == (3, 0, 0)
    rejected = {r["line"]: r["reason"] for r in report["rejected"]}
    assert rejected[3].startswith("invalid address")
    assert rejected[4].startswith("unknown series 'esa-space'")
    assert rejected[5].startswith("unknown language 'it'")
    assert rejected[7] == "duplicate: the address is already on line 2"
    assert rejected[9].startswith("invalid address")
    assert rejected[11] == "duplicate: the address is already on line 8"
    assert set(rejected) == {3, 4, 5, 7, 9, 11}
    assert report["ignored_columns"] == ["notes"]
    bob = store.get_subscriber(engine, "bob@example.org")
    assert bob.name == 'Bob "The Builder" Jones' and bob.language == "en"
    assert bob.series == ("esa-economy-trade", "esa-digital-technology")
    assert bob.status == SubscriberStatus.CONFIRMED and bob.consent_method == "import" and bob.consent_at
    assert store.get_subscriber(engine, "carla@example.org").name == '=HYPERLINK("http://evil")'


def test_human_report_lists_lines_and_reasons(cli):
    code, out, _ = cli("subscribers", "import", str(LISTS / "every_bad_row.csv"))
    assert code == 1
    assert out.splitlines()[0] == "added 3, updated 0, unchanged 0, rejected 6, suppressed 0"
    assert "line 4: rejected: unknown series 'esa-space'" in out
    assert "ignored columns: notes" in out


def test_reimport_counts_unchanged_and_updates(cli, engine, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("email,name,language,series\na@example.org,A,en,\nb@example.org,B,fr,\n", encoding="utf-8")
    assert cli("subscribers", "import", str(listing))[0] == 0
    listing.write_text("email,name,language,series\na@example.org,A,en,\nb@example.org,Bea,de,esa-economy-trade\n"
                       "c@example.org,,,\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing))
    assert code == 0
    assert out.splitlines()[0] == "added 1, updated 1, unchanged 1, rejected 0, suppressed 0"
    b = store.get_subscriber(engine, "b@example.org")
    assert (b.name, b.language, b.series) == ("Bea", "de", ("esa-economy-trade",))
    assert store.get_subscriber(engine, "c@example.org").language == "en"  # site.language default


def test_semicolon_bom_crlf_file_from_a_spreadsheet(cli, engine):
    code, out, _ = cli("subscribers", "import", str(LISTS / "semicolon_bom_crlf.csv"))
    assert code == 0, out
    jean = store.get_subscriber(engine, "jean@example.fr")
    assert jean.series == ("esa-security-defence", "esa-economy-trade") and jean.language == "fr"
    assert store.get_subscriber(engine, "klaus@example.de").name == "Klaus Müller"


@pytest.mark.parametrize("name, message", [
    ("latin1.csv", "not UTF-8 text (line 2)"),
    ("no_header.csv", "the first line looks like data"),
    ("no_email_column.csv", "no 'email' column"),
    ("missing.csv", "no such file"),
])
def test_unusable_files_are_refused_before_anything_is_stored(cli, engine, name, message):
    code, out, err = cli("subscribers", "import", str(LISTS / name))
    assert code == 2
    assert message in err
    assert statuses(engine) == {}


def test_unterminated_quote_is_a_clear_error(cli):
    code, _, err = cli("subscribers", "import", str(LISTS / "unterminated_quote.csv"))
    assert code == 2 and "line 2: not readable as CSV: a quoted cell opens on this line and is never closed" in err


def test_a_quote_that_never_closes_after_a_full_batch_stores_nothing(cli, engine, tmp_path):
    """The whole file is read before the first row is stored, and the error names the line the quote opens on."""
    listing = tmp_path / "broken.csv"
    with listing.open("w", encoding="utf-8") as fh:
        fh.write("email,name,language,series\n")
        for i in range(2500):  # more than one import batch (2,000 rows) of good rows: lines 2 to 2501
            fh.write(f"user{i}@example.org,User {i},en,\n")
        fh.write('broken@example.org,"Broken, never closed,en,\n')  # line 2502
        fh.write("late@example.org,Late,en,\n")
    code, out, err = cli("subscribers", "import", str(listing))
    assert code == 2 and out == ""
    assert f"{listing}: line 2502: not readable as CSV: a quoted cell opens on this line" in err
    assert statuses(engine) == {}


@pytest.mark.parametrize("content, line", [
    # A quoted cell over two lines closes; the next record's quote opens on line 5, not where its record starts.
    ('email,name,x\nml@example.org,"one\ntwo"\nq@example.org,"He said ""hi""",\nx@example.org,"a\nb","open\nmore,\n', 6),
    ('email;name\r\na@example.org;"ok ""quoted"" text"\r\nb@example.org;\r\n"multi\r\nline";"unclosed\r\nrest\r\n', 5),
    ('email,name\n"unclosed@example.org,Name\n', 2),
])
def test_the_line_where_an_unclosed_quote_opens_is_named(cli, engine, tmp_path, content, line):
    listing = tmp_path / "broken.csv"
    listing.write_bytes(content.encode())
    code, _, err = cli("subscribers", "import", str(listing))
    assert code == 2 and f"line {line}: not readable as CSV: a quoted cell opens on this line" in err, err
    assert statuses(engine) == {}


def test_text_after_a_closing_quote_is_refused_before_anything_is_stored(cli, engine, tmp_path):
    listing = tmp_path / "broken.csv"
    good = "".join(f"good{i}@example.org,Good\n" for i in range(2001))  # lines 2 to 2002: a full batch
    listing.write_text(f'email,name\n{good}bad@example.org,"Bad" name\n', encoding="utf-8")
    code, _, err = cli("subscribers", "import", str(listing))
    assert code == 2 and "line 2003: not readable as CSV (',' expected after '\"')" in err, err
    assert statuses(engine) == {}


def test_suppression_survives_reimport(cli, engine, tmp_path, settings):
    listing = tmp_path / "list.csv"
    rows = ["unsub", "bounce", "complain", "erase", "keep"]
    listing.write_text("email,name,language,series\n" + "".join(f"{r}@example.org,{r.title()},en,\n" for r in rows),
                       encoding="utf-8")
    assert cli("subscribers", "import", str(listing))[0] == 0
    ids = {s.email.split("@")[0]: s.id for s in store.iter_subscribers(engine)}
    assert cli("subscribers", "remove", "unsub@example.org")[0] == 0
    store.set_status(engine, ids["bounce"], SubscriberStatus.BOUNCED)
    store.set_status(engine, ids["complain"], SubscriberStatus.COMPLAINED)
    assert cli("subscribers", "erase", "erase@example.org", "--yes")[0] == 0

    code, out, _ = cli("subscribers", "import", str(listing), "--json")
    report = json.loads(out)
    assert code == 0
    assert report["suppressed"] == [2, 3, 4, 5] and report["unchanged"] == 1 and report["added"] == 0
    assert statuses(engine) == {"unsub@example.org": "unsubscribed", "bounce@example.org": "bounced",
                                "complain@example.org": "complained", "keep@example.org": "confirmed"}
    assert suppressions.is_suppressed(engine, "ERASE@example.org", suppression_keys(settings))


def test_import_confirms_a_pending_web_signup(cli, engine, tmp_path):
    pending = store.add_subscriber(engine, Subscriber(email="p@example.org", consent_method="web",
                                                      consent_ip="192.0.2.1"), source="web", event="signup")
    listing = tmp_path / "list.csv"
    listing.write_text("email,name,language,series\np@example.org,Pat,en,\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing))
    assert out.startswith("added 0, updated 1")
    now = store.get_subscriber(engine, pending.id)
    assert now.status == SubscriberStatus.CONFIRMED and now.consent_method == "import" and now.consent_ip == ""
    events = [e["event"] for e in store.subscriber_record(engine, "p@example.org")["events"]]
    assert events == ["signup", "confirmed"]


def test_import_keeps_choices_the_reader_made(cli, engine, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("email,name,language,series\nr@example.org,R,en,\n", encoding="utf-8")
    cli("subscribers", "import", str(listing))
    reader = store.get_subscriber(engine, "r@example.org")
    from dataclasses import replace

    store.update_choices(engine, replace(reader, language="de", series=("esa-economy-trade",)), source="reader")
    listing.write_text("email,name,language,series\nr@example.org,Ruth,fr,\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing))
    after = store.get_subscriber(engine, "r@example.org")
    assert (after.name, after.language, after.series) == ("Ruth", "de", ("esa-economy-trade",))


def test_large_file_crosses_batches(cli, engine, tmp_path):
    listing = tmp_path / "big.csv"
    with listing.open("w", encoding="utf-8") as fh:
        fh.write("email,name,language,series\n")
        for i in range(2500):
            fh.write(f"user{i}@example.org,User {i},{'enfrde'[i % 3 * 2:i % 3 * 2 + 2]},\n")
        fh.write("user7@example.org,dup,en,\n")
    code, out, _ = cli("subscribers", "import", str(listing))
    assert out.splitlines()[0] == "added 2500, updated 0, unchanged 0, rejected 1, suppressed 0"
    assert "line 2502: rejected: duplicate: the address is already on line 9" in out
    assert sum(1 for _ in store.iter_confirmed(engine, batch=700)) == 2500


def test_export_guards_formulas_and_reimports_unchanged(cli, engine, tmp_path):
    cli("subscribers", "import", str(LISTS / "every_bad_row.csv"))
    code, out, _ = cli("subscribers", "export")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    carla = next(r for r in rows if r["email"] == "carla@example.org")
    assert carla["name"] == "'=HYPERLINK(\"http://evil\")"
    assert all(not r[k].startswith(("=", "+", "-", "@")) for r in rows for k in r)
    exported = tmp_path / "exported.csv"
    exported.write_text(out, encoding="utf-8")
    code, again, _ = cli("subscribers", "import", str(exported))
    assert again.splitlines()[0] == "added 0, updated 0, unchanged 3, rejected 0, suppressed 0"
    assert store.get_subscriber(engine, "carla@example.org").name == '=HYPERLINK("http://evil")'


def test_export_json_and_filters(cli, engine, tmp_path):
    cli("subscribers", "import", str(LISTS / "every_bad_row.csv"))
    cli("subscribers", "remove", "carla@example.org")
    code, out, _ = cli("subscribers", "export", "--format", "json", "--status", "confirmed")
    emails = [json.loads(line)["email"] for line in out.splitlines()]
    assert emails == ["anna.schmidt@example.de", "bob@example.org"]
    target = tmp_path / "out.csv"
    code, out, _ = cli("subscribers", "export", "--series", "esa-economy-trade", "--output", str(target))
    assert code == 0 and out == ""
    assert [r["email"] for r in csv.DictReader(target.open(encoding="utf-8"))] == ["bob@example.org", "carla@example.org"]


def test_an_export_file_is_the_owners_alone_whatever_the_umask(cli, tmp_path):
    """Personal data: a new export file is 0600, and one that was readable by others is made private."""
    cli("subscribers", "import", str(LISTS / "every_bad_row.csv"))
    fresh, older = tmp_path / "fresh.csv", tmp_path / "older.csv"
    older.write_text("left by hand\n", encoding="utf-8")
    older.chmod(0o644)
    previous = os.umask(0o022)
    try:
        for target in (fresh, older):
            code, _, _ = cli("subscribers", "export", "--output", str(target))
            assert code == 0
    finally:
        os.umask(previous)
    assert [stat.S_IMODE(t.stat().st_mode) for t in (fresh, older)] == [0o600, 0o600]
    assert "left by hand" not in older.read_text(encoding="utf-8") and "bob@example.org" in older.read_text(encoding="utf-8")


def test_read_list_file_streams_rows(tmp_path, settings):
    listing = tmp_path / "tab.csv"
    listing.write_text("email\tname\nt@example.org\tTab Person\n", encoding="utf-8")
    report, rows = read_list_file(listing, settings)
    assert report.delimiter == "\t"
    (row,) = list(rows)
    assert (row.line, row.subscriber.email, row.subscriber.name) == (2, "t@example.org", "Tab Person")
    with pytest.raises(ListFileError, match="is a folder"):
        read_list_file(tmp_path, settings)


def test_section_choices_survive_export_then_import_into_another_store(cli, engine, tmp_path, sqlite_url):
    from dataclasses import replace

    ana = store.add_subscriber(engine, Subscriber(email="ana@example.org", name="Ana", status=SubscriberStatus.CONFIRMED))
    store.update_choices(engine, replace(ana, want_events=False, want_media=True))
    exported, other, other_cli = export_to_fresh_store(cli, tmp_path)
    result = other_cli("subscribers", "import", str(exported))
    assert result.exit_code == 0, result.output
    moved = store.get_subscriber(other, "ana@example.org")
    assert (moved.want_events, moved.want_media) == (False, True)
    assert "ignored columns" not in result.output  # every exported column is read back
    assert moved.created_at == ana.created_at  # the history starts when they first subscribed, not at the move
    other.dispose()


def test_created_at_is_kept_for_new_rows_and_a_bad_one_rejects_its_row(cli, engine, tmp_path):
    from datetime import UTC, datetime

    kept = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    store.add_subscriber(engine, Subscriber(email="old@example.org", status=SubscriberStatus.CONFIRMED), kept)
    listing = tmp_path / "list.csv"
    listing.write_text("email,created_at\nnew@example.org,2025-01-02T03:04:05+01:00\nbad@example.org,last spring\n"
                       "old@example.org,2026-01-01T00:00:00+00:00\nplain@example.org,\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing), "--json")
    report = json.loads(out)
    assert code == 1 and report["ignored_columns"] == [] and report["added"] == 2
    assert report["rejected"] == [{"line": 3, "reason": "created_at is 'last spring': use an ISO date and time "
                                                        "such as 2026-11-23T09:00:00+00:00"}]
    assert store.get_subscriber(engine, "new@example.org").created_at == datetime(2025, 1, 2, 2, 4, 5, tzinfo=UTC)
    assert store.get_subscriber(engine, "old@example.org").created_at == kept  # a stored row keeps its own
    assert store.get_subscriber(engine, "plain@example.org").created_at > kept  # empty: stored now
    assert store.get_subscriber(engine, "bad@example.org") is None


def test_a_list_without_section_columns_leaves_stored_choices_alone(cli, engine, tmp_path):
    from dataclasses import replace

    bo = store.add_subscriber(engine, Subscriber(email="bo@example.org", name="Bo", status=SubscriberStatus.CONFIRMED))
    store.update_choices(engine, replace(bo, want_media=False))
    plain = tmp_path / "plain.csv"
    plain.write_text("email,name,language,series\nbo@example.org,Bo B.,en,\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(plain))
    assert code == 0 and out.startswith("added 0, updated 1")
    again = store.get_subscriber(engine, "bo@example.org")
    assert (again.name, again.want_events, again.want_media) == ("Bo B.", True, False)


def test_a_section_flag_that_is_not_yes_or_no_rejects_its_row(cli, engine, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("email,name,language,series,want_events\ncy@example.org,Cy,en,,maybe\n"
                   "di@example.org,Di,en,,no\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(bad))
    assert code == 1 and "line 2: rejected: want_events is 'maybe': use true or false" in out
    assert store.get_subscriber(engine, "di@example.org").want_events is False


def test_export_then_import_keeps_opt_outs_and_consent(cli, engine, tmp_path):
    """Moving a list to a fresh store never brings back someone who left, nor confirms a pending sign-up."""
    from datetime import UTC, datetime

    consented = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
    people = {}
    for email, status in (("stays", "confirmed"), ("left", "unsubscribed"), ("dead", "bounced"),
                          ("spam", "complained"), ("wait", "pending")):
        added = store.add_subscriber(engine, Subscriber(
            email=f"{email}@example.org", name=email.title(), status=SubscriberStatus.CONFIRMED if status != "pending"
            else SubscriberStatus.PENDING, consent_at=consented if status != "pending" else None,
            consent_method="web", consent_ip="198.51.100.9"))
        if status not in ("confirmed", "pending"):
            store.set_status(engine, added.id, SubscriberStatus(status))
        people[f"{email}@example.org"] = status
    exported, other, other_cli = export_to_fresh_store(cli, tmp_path)
    result = other_cli("subscribers", "import", str(exported), "--json")
    report = json.loads(result.stdout)
    assert result.exit_code == 0, result.output
    assert (report["added"], report["suppressed"]) == (2, [3, 4, 5])  # stays + wait; left, dead, spam
    assert statuses(other) == people
    assert [s.email for s in store.iter_confirmed(other)] == ["stays@example.org"]
    stays = store.get_subscriber(other, "stays@example.org")
    assert (stays.consent_at, stays.consent_method, stays.consent_ip) == (consented, "web", "198.51.100.9")
    assert store.get_subscriber(other, "wait@example.org").consent_at is None  # no consent yet
    again = other_cli("subscribers", "import", str(exported), "--json")
    assert json.loads(again.stdout)["suppressed"] == [3, 4, 5] and statuses(other) == people  # pending stays pending
    other.dispose()


def test_an_opt_out_in_the_file_applies_to_a_confirmed_subscriber(cli, engine, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("email,name\nann@example.org,Ann\n", encoding="utf-8")
    cli("subscribers", "import", str(listing))
    listing.write_text("email,name,status\nann@example.org,Ann,Unsubscribed\nbo@example.org,Bo,maybe\n",
                       encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing), "--json")
    report = json.loads(out)
    assert code == 1 and report["suppressed"] == [2]
    assert report["rejected"] == [{"line": 3, "reason": "status is 'maybe': use one of pending, confirmed, "
                                                        "unsubscribed, bounced, complained (or leave it empty)"}]
    assert statuses(engine) == {"ann@example.org": "unsubscribed"}
    events = store.subscriber_record(engine, "ann@example.org")["events"]
    assert (events[-1]["event"], events[-1]["detail"]) == ("unsubscribed", "import")


def test_an_opt_out_in_the_file_is_stored_with_its_batch_or_not_at_all(cli, engine, tmp_path, settings):
    """The opt-out is part of the batch's transaction: if writing it fails, nothing of the batch is kept."""
    from sqlalchemy import event

    listing = tmp_path / "list.csv"
    listing.write_text("email\nann@example.org\n", encoding="utf-8")
    cli("subscribers", "import", str(listing))
    listing.write_text("email,status\nann@example.org,unsubscribed\nnew@example.org,\n", encoding="utf-8")

    def fail_the_opt_out(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("UPDATE SUBSCRIBERS SET STATUS"):
            raise OSError("the database went away")  # as a crash right after the rest of the batch

    event.listen(engine, "before_cursor_execute", fail_the_opt_out)
    try:
        report, rows = read_list_file(listing, settings)
        with pytest.raises(OSError, match="the database went away"):
            store.import_rows(engine, rows, suppression_keys(settings), report)
    finally:
        event.remove(engine, "before_cursor_execute", fail_the_opt_out)
    assert statuses(engine) == {"ann@example.org": "confirmed"}  # all of the batch rolled back, not half of it

    code, out, _ = cli("subscribers", "import", str(listing), "--json")
    assert code == 0 and json.loads(out)["suppressed"] == [2]
    assert statuses(engine) == {"ann@example.org": "unsubscribed", "new@example.org": "confirmed"}


def test_an_unsubscribed_address_stays_suppressed_whatever_its_case(cli, engine, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("email\nmixed.case@example.org\n", encoding="utf-8")
    cli("subscribers", "import", str(listing))
    cli("subscribers", "remove", "mixed.case@example.org")
    listing.write_text("email,name\n  Mixed.CASE@EXAMPLE.org ,Again\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing), "--json")
    report = json.loads(out)
    assert code == 0 and report["suppressed"] == [2] and report["added"] == report["updated"] == 0
    (only,) = store.iter_subscribers(engine)
    assert (only.email, only.status, only.name) == ("mixed.case@example.org", SubscriberStatus.UNSUBSCRIBED, "")


@pytest.mark.parametrize("content, line", [
    ("email;name;language;series\nsc@example.org;Sc;fr;esa-security-defence;esa-economy-trade\n", 2),
    ("email,name,language,series\nok@example.org,Ok,en,\ndoe@example.org,Doe, John,en,\n", 3),
    ("email,series\none@example.org,esa-security-defence,esa-economy-trade\n", 2),
])
def test_rows_with_more_cells_than_columns_are_rejected(cli, engine, tmp_path, content, line):
    listing = tmp_path / "list.csv"
    listing.write_text(content, encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing), "--json")
    report = json.loads(out)
    assert code == 1
    (rejected,) = report["rejected"]
    assert rejected["line"] == line and rejected["reason"].startswith("more cells than columns: quote the series cell")
    assert "sc@example.org" not in statuses(engine) and "doe@example.org" not in statuses(engine)


def test_empty_columns_a_spreadsheet_adds_are_harmless(cli, engine, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("email,name,,\ntrail@example.org,Trail,,\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing))
    assert code == 0 and store.get_subscriber(engine, "trail@example.org").name == "Trail"
    assert "ignored columns: (column 3, no name), (column 4, no name)" in out


def test_a_column_named_twice_is_refused(cli, engine, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text("email,Email,name\nfirst@example.org,second@example.org,N\n", encoding="utf-8")
    code, _, err = cli("subscribers", "import", str(listing))
    assert code == 2 and "the header names the column 'email' twice (columns 1 and 2)" in err
    assert statuses(engine) == {}


def test_rows_are_numbered_as_a_spreadsheet_does_across_multi_line_cells(cli, engine, tmp_path):
    listing = tmp_path / "list.csv"
    listing.write_text('email,name\nml@example.org,"Line one\nline two\nline three"\nbad-address,X\n\n'
                       'ml@example.org,again\n', encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing), "--json")
    rejected = {r["line"]: r["reason"] for r in json.loads(out)["rejected"]}
    assert set(rejected) == {3, 5}  # physical lines 5 and 7
    assert rejected[3].startswith("invalid address")
    assert rejected[5] == "duplicate: the address is already on line 2"
    assert store.get_subscriber(engine, "ml@example.org").name == "Line one line two line three"


def test_export_has_created_at_in_csv_and_json(cli, engine):
    from datetime import UTC, datetime

    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    store.add_subscriber(engine, Subscriber(email="c@example.org", status=SubscriberStatus.CONFIRMED), when)
    code, out, _ = cli("subscribers", "export")
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["created_at"] == "2026-01-02T03:04:05+00:00"
    code, out, _ = cli("subscribers", "export", "--format", "json")
    assert json.loads(out)["created_at"] == "2026-01-02T03:04:05+00:00"
    assert store.get_subscriber(engine, "c@example.org").created_at == when


def test_a_name_that_splits_into_a_formula_in_a_semicolon_locale_is_neutralised(cli, engine, tmp_path):
    store.add_subscriber(engine, Subscriber(email="ann@example.org", name="Ann;=1+1", status=SubscriberStatus.CONFIRMED))
    code, out, _ = cli("subscribers", "export")
    line = out.splitlines()[1]
    # What a spreadsheet in a French or German locale makes of the line: cells split at every ';'.
    assert all(not cell.startswith(("=", "+", "-", "@")) for cell in line.split(";"))
    exported = tmp_path / "exported.csv"
    exported.write_text(out, encoding="utf-8")
    code, again, _ = cli("subscribers", "import", str(exported))
    assert again.startswith("added 0, updated 0, unchanged 1")
    assert store.get_subscriber(engine, "ann@example.org").name == "Ann;=1+1"


def test_the_erasures_are_counted_once_per_command(cli, engine, tmp_path, monkeypatch, settings):
    """checked_suppression_keys counts the erasures per key once; import_rows and add reuse that check."""
    cli("subscribers", "erase", "gone@example.org", "--yes")
    counted = []
    real = suppressions.erasures_by_key
    monkeypatch.setattr(suppressions, "erasures_by_key", lambda engine: counted.append(1) or real(engine))
    listing = tmp_path / "list.csv"
    listing.write_text("email\ngone@example.org\nnew@example.org\n", encoding="utf-8")
    code, out, _ = cli("subscribers", "import", str(listing))
    assert code == 0 and out.startswith("added 1, updated 0, unchanged 0, rejected 0, suppressed 1")
    assert len(counted) == 1
    for command in (("add", "other@example.org"), ("show", "new@example.org"), ("erase", "x@example.org", "--yes")):
        counted.clear()
        assert cli("subscribers", *command)[0] == 0, command
        assert len(counted) == 1, command
    counted.clear()
    report, rows = read_list_file(listing, settings)
    store.import_rows(engine, rows, suppression_keys(settings), report)  # keys not checked yet: import_rows does
    assert len(counted) == 1 and report.suppressed == [2]
