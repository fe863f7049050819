"""Bounces and complaints that arrive after the send: `digest bounces import` end to end.

An issue goes out through a real SMTP server (aiosmtpd), then the DSN and ARF fixtures of
tests/data/bounces (see its README), filled in with the addresses and Message-IDs the ledger
holds, are imported from an mbox, a Maildir and single files, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import mailbox
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from send_helpers import NOW, add_confirmed, approved_issue, sample_issue, smtp_settings
from sqlalchemy import func, select

from digest.bounces import MalformedReport, ReportKind, parse_report, read_messages
from digest.cli import main
from digest.manifest import issue_to_manifest
from digest.models import SubscriberStatus, Window
from digest.pipeline.bounces import import_reports
from digest.pipeline.reports import delivery_report
from digest.pipeline.sending import send_issue
from digest.pipeline.subscribers import add_subscriber as staff_add
from digest.pipeline.subscribers import import_subscribers, show_subscriber
from digest.store.issues import approve_issue, create_issue
from digest.store.schema import bounce_reports, deliveries, subscriber_events, subscribers
from digest.store.subscribers import get_subscriber

DATA = Path(__file__).parent / "data" / "bounces"
MALFORMED = ("malformed_no_status_part.eml", "malformed_no_recipient.eml", "malformed_arf_no_type.eml",
             "not_a_report.eml")


def report(name: str, recipient: str = "reader@example.net", message_id: str = "<none@example.org>") -> bytes:
    """A fixture with its placeholders filled in."""
    data = (DATA / name).read_bytes()
    return data.replace(b"{{RECIPIENT}}", recipient.encode()).replace(b"{{MESSAGE_ID}}", message_id.encode())


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.mbox(path, create=True)
    for data in messages:
        box.add(data)
    box.flush()
    box.close()
    return path


def write_maildir(path: Path, messages: list[bytes]) -> Path:
    box = mailbox.Maildir(path, create=True)
    for data in messages:
        box.add(data)
    return path


def message_ids(engine, number: int) -> dict[str, str]:
    """address → the Message-ID the ledger recorded for issue `number`."""
    query = (select(subscribers.c.email, deliveries.c.message_id)
             .join(deliveries, deliveries.c.subscriber_id == subscribers.c.id)
             .where(deliveries.c.issue_number == number))
    with engine.connect() as conn:
        return dict(conn.execute(query).all())


def events_of(engine, email: str) -> list[tuple[str, int | None]]:
    subscriber = get_subscriber(engine, email)
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(subscriber_events.c.event, subscriber_events.c.issue_number)
            .where(subscriber_events.c.subscriber_id == subscriber.id).order_by(subscriber_events.c.id))]


def count_rows(engine, table) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


@pytest.fixture
def settings(tmp_path, store_url, smtp_server):
    return smtp_settings(tmp_path, store_url, smtp_server.port)


READERS = ("hard1", "hard2", "plain", "soft", "late", "angry", "fine")


@pytest.fixture
def sent(engine, settings):
    """Issue 1 sent to seven readers; returns (issue number, address → Message-ID)."""
    for name in READERS:
        add_confirmed(engine, f"{name}@example.net")
    number = approved_issue(engine, settings)
    send_issue(settings, engine, number)
    ids = message_ids(engine, number)
    assert len(ids) == len(READERS) and all(ids.values())
    return number, ids


def mailbox_messages(ids: dict[str, str]) -> list[bytes]:
    """One report per reader (fine@ gets none) plus an unmatched bounce and four malformed messages."""
    def about(name: str, fixture: str) -> bytes:
        return report(fixture, f"{name}@example.net", ids[f"{name}@example.net"])

    return [
        about("hard1", "postfix_hard.eml"),
        about("hard2", "gmail_hard.eml"),
        about("plain", "exim_plain_failed.eml"),
        about("soft", "exim_soft.eml"),
        about("late", "exim_delayed.eml"),
        about("angry", "arf_abuse.eml"),
        report("postfix_hard.eml", "stranger@example.com", "<never-sent@example.org>"),
        *(report(name, "fine@example.net", ids["fine@example.net"]) for name in MALFORMED),
    ]


def check_first_import(engine, number: int, summary) -> None:
    assert (summary.messages, summary.hard, summary.soft, summary.delayed, summary.complaints) == (11, 3, 1, 1, 1)
    assert (summary.bounced, summary.complained, summary.duplicates) == (3, 1, 0)
    assert [u.recipient for u in summary.unmatched] == ["stranger@example.com"]
    reasons = [m.reason for m in summary.malformed]
    assert len(reasons) == 4
    assert "without its message/delivery-status part" in reasons[0]
    assert "no usable Final-Recipient" in reasons[1]
    assert "no Feedback-Type" in reasons[2]
    assert "not a delivery status notification" in reasons[3]
    status = {name: get_subscriber(engine, f"{name}@example.net").status for name in READERS}
    assert status == {"hard1": SubscriberStatus.BOUNCED, "hard2": SubscriberStatus.BOUNCED,
                      "plain": SubscriberStatus.BOUNCED, "soft": SubscriberStatus.CONFIRMED,
                      "late": SubscriberStatus.CONFIRMED, "angry": SubscriberStatus.COMPLAINED,
                      "fine": SubscriberStatus.CONFIRMED}
    assert events_of(engine, "hard1@example.net")[-2:] == [("bounce", number), ("bounced", number)]
    assert events_of(engine, "angry@example.net")[-2:] == [("complaint", number), ("complained", number)]
    assert events_of(engine, "soft@example.net")[-1] == ("soft_bounce", number)
    assert events_of(engine, "late@example.net")[-1] == ("delayed", number)
    assert events_of(engine, "fine@example.net") == [("subscribed", None)]
    report_ = delivery_report(engine, number)
    assert (report_.bounced, report_.complaints, report_.soft_bounces, report_.delayed) == (3, 1, 1, 1)
    assert report_.sent == len(READERS)  # the ledger still says what the server accepted


def test_an_mbox_of_reports_marks_subscribers_and_importing_it_again_changes_nothing(engine, settings, sent,
                                                                                     tmp_path):
    number, ids = sent
    path = write_mbox(tmp_path / "bounces.mbox", mailbox_messages(ids))
    summary = import_reports(settings, engine, path, NOW + timedelta(days=1))
    check_first_import(engine, number, summary)
    assert [m.position for m in summary.malformed] == ["message 8", "message 9", "message 10", "message 11"]
    record = show_subscriber(settings, engine, "hard1@example.net").record
    assert record["subscriber"]["bounce_count"] == 1  # counted as send-time bounces are
    history = record["events"]
    bounce = next(e for e in history if e["event"] == "bounce")
    assert bounce["issue_number"] == number and "5.1.1" in bounce["detail"] and f"issue {number}" in bounce["detail"]

    events, keys = count_rows(engine, subscriber_events), count_rows(engine, bounce_reports)
    again = import_reports(settings, engine, path, NOW + timedelta(days=2))
    assert (again.hard, again.soft, again.delayed, again.complaints, again.bounced, again.complained) == (0,) * 6
    assert again.duplicates == 6 and len(again.malformed) == 4 and len(again.unmatched) == 1
    assert (count_rows(engine, subscriber_events), count_rows(engine, bounce_reports)) == (events, keys)


def test_a_maildir_gives_the_same_result(engine, settings, sent, tmp_path):
    number, ids = sent
    path = write_maildir(tmp_path / "Maildir", mailbox_messages(ids))
    summary = import_reports(settings, engine, path, NOW + timedelta(days=1))
    check_first_import(engine, number, summary)
    assert all(m.position.startswith("message ") for m in summary.malformed)


def test_a_maildir_is_read_in_delivery_order_not_in_the_order_its_names_sort_as_text(tmp_path):
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    # Delivered in this order within one second: the microseconds and the counter have no leading zeros.
    names = ["1733365000.M99P7Q9.host", "1733365000.M99P7Q10.host", "1733365000.M123456P7Q11.host",
             "1733365001.M5P7Q12.host", "1733365001.V801I3M60.host"]
    for n, name in enumerate(names):
        (tmp_path / "Maildir" / "new" / name).write_bytes(f"Subject: {n}\n\nbody\n".encode())
    assert box.keys()  # a Maildir the library reads
    read = [(position, data.split(b"\n", 1)[0]) for position, data in read_messages(tmp_path / "Maildir")]
    assert read == [(f"message {name}", f"Subject: {n}".encode()) for n, name in enumerate(names)]


def test_bounced_and_complained_readers_get_no_further_issue(engine, settings, sent, tmp_path, smtp_server):
    number, ids = sent
    import_reports(settings, engine, write_mbox(tmp_path / "b.mbox", mailbox_messages(ids)), NOW)
    second = _another_issue(engine, settings, 1)
    smtp_server.received.clear()
    send_issue(settings, engine, second)
    got = {rcpt for _, rcpts, _ in smtp_server.received for rcpt in rcpts}
    assert got == {"soft@example.net", "late@example.net", "fine@example.net"}


def test_a_complaint_is_for_good_neither_a_list_import_nor_staff_bring_it_back(engine, settings, sent, tmp_path):
    _, ids = sent
    path = tmp_path / "arf.eml"
    path.write_bytes(report("arf_abuse.eml", "redacted@mail.example.com", ids["angry@example.net"]))
    assert import_reports(settings, engine, path).complained == 1
    csv = tmp_path / "list.csv"
    csv.write_text("email,name,language,series\nangry@example.net,Angry Reader,en,\n", encoding="utf-8")
    result = import_subscribers(settings, engine, csv)
    assert result.suppressed and result.added == 0 and result.updated == 0
    assert staff_add(settings, engine, "angry@example.net", now=NOW).refused
    assert get_subscriber(engine, "angry@example.net").status == SubscriberStatus.COMPLAINED


def test_a_hard_bounce_never_turns_a_complaint_into_a_bounce(engine, settings, sent, tmp_path):
    _, ids = sent
    angry = ids["angry@example.net"]
    box = write_mbox(tmp_path / "b.mbox", [report("arf_abuse.eml", "x@mail.example.com", angry),
                                           report("postfix_hard.eml", "angry@example.net", angry)])
    summary = import_reports(settings, engine, box)
    assert (summary.complained, summary.hard, summary.bounced) == (1, 1, 0)
    assert get_subscriber(engine, "angry@example.net").status == SubscriberStatus.COMPLAINED


def _another_issue(engine, settings, weeks: int) -> int:
    issue = sample_issue()
    shift = timedelta(weeks=weeks)
    issue = replace(issue, window=Window(issue.window.start + shift, issue.window.end + shift))
    stored = create_issue(engine, issue, issue_to_manifest(issue, settings), NOW + shift)
    approve_issue(engine, stored.number, "editor@example.org", "v1", NOW + shift)
    return stored.number


def test_soft_bounces_count_as_a_hard_one_only_in_a_row(engine, tmp_path, store_url, smtp_server):
    """soft_bounce_limit = 2: issues 1 and 3 soft-bounce, 2 went through: no streak; then 2's report comes."""
    settings = smtp_settings(tmp_path, store_url, smtp_server.port, soft_bounce_limit=2)
    add_confirmed(engine, "soft@example.net")
    numbers = [approved_issue(engine, settings), _another_issue(engine, settings, 1), _another_issue(engine, settings, 2)]
    for number in numbers:
        send_issue(settings, engine, number)
    ids = [message_ids(engine, n)["soft@example.net"] for n in numbers]

    def soft(issue_index: int) -> Path:
        path = tmp_path / f"soft{issue_index}.eml"
        path.write_bytes(report("exim_soft.eml", "soft@example.net", ids[issue_index])
                         .replace(b"E1t9Xyz-000Abc-2Q", f"E1t9Xyz-{issue_index}".encode()))  # its own report id
        return path

    assert import_reports(settings, engine, soft(0)).bounced == 0
    assert import_reports(settings, engine, soft(2)).bounced == 0  # issue 2 went through in between
    assert get_subscriber(engine, "soft@example.net").status == SubscriberStatus.CONFIRMED
    summary = import_reports(settings, engine, soft(1))  # issue 2 soft-bounced after all: 2 and 3 in a row
    assert summary.bounced == 1
    assert get_subscriber(engine, "soft@example.net").status == SubscriberStatus.BOUNCED
    last = show_subscriber(settings, engine, "soft@example.net").record["events"][-1]
    assert last["event"] == "bounced" and "2 soft bounces in a row" in last["detail"]


def test_a_bounce_without_message_id_matches_the_latest_delivery(engine, settings, sent, tmp_path):
    number, _ = sent
    data = report("postfix_hard.eml", "hard1@example.net", "<unknown@example.org>")
    path = tmp_path / "one.eml"
    path.write_bytes(data.replace(b"Message-ID: <unknown@example.org>", b"X-Note: headers cut"))
    summary = import_reports(settings, engine, path)
    assert summary.bounced == 1 and events_of(engine, "hard1@example.net")[-1] == ("bounced", number)


# --- parsing alone ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind", "status"), [
    ("postfix_hard.eml", ReportKind.HARD, "5.1.1"),
    ("gmail_hard.eml", ReportKind.HARD, "5.1.1"),
    ("exim_plain_failed.eml", ReportKind.HARD, "5.1.1"),
    ("exim_soft.eml", ReportKind.SOFT, "4.2.2"),
    ("exim_delayed.eml", ReportKind.DELAYED, "4.2.2"),
    ("arf_abuse.eml", ReportKind.COMPLAINT, "abuse"),
])
def test_each_fixture_parses_to_its_kind_and_original_message_id(name, kind, status):
    (event,) = parse_report(report(name, "Reader@Example.NET", "<abc.1@example.org>"))
    assert (event.kind, event.status, event.original_message_id) == (kind, status, "<abc.1@example.org>")
    assert event.recipient == ("redacted@mail.example.com" if kind == ReportKind.COMPLAINT else "reader@example.net")
    assert parse_report(report(name, "Reader@Example.NET", "<abc.1@example.org>"))[0].key == event.key


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_reports_are_refused_with_a_reason(name):
    with pytest.raises(MalformedReport):
        parse_report(report(name))


def test_hostile_header_text_is_kept_on_one_line():
    data = report("postfix_hard.eml").replace(b"Diagnostic-Code: smtp; 550",
                                              b"Diagnostic-Code: =?utf-8?q?smtp=3B_x=0D=0AInjected:_1?= 550")
    (event,) = parse_report(data)
    assert "\r" not in event.detail and "\n" not in event.detail


def test_a_relayed_or_delivered_dsn_reports_nothing():
    data = report("postfix_hard.eml").replace(b"Action: failed", b"Action: delivered").replace(b"Status: 5.1.1",
                                                                                               b"Status: 2.0.0")
    assert parse_report(data) == ()


# --- the command line -----------------------------------------------------------------------------------

def _config(tmp_path, settings) -> str:
    path = tmp_path / "digest.toml"
    path.write_text(f'[store]\nurl = "{settings.store.url}"\n', encoding="utf-8")
    return str(path)


def test_digest_bounces_import_prints_a_summary_and_json(engine, settings, sent, tmp_path):
    _, ids = sent
    box = write_mbox(tmp_path / "bounces.mbox", mailbox_messages(ids))
    config = _config(tmp_path, settings)
    result = CliRunner().invoke(main, ["--config", config, "bounces", "import", str(box)])
    assert result.exit_code == 0, result.output
    assert ("11 messages: 3 hard bounces, 1 soft bounces, 1 delay warnings, 1 complaints, 1 unmatched, "
            "4 malformed, 0 already imported") in result.output
    assert "malformed: message 9: recipient block 1 has no usable Final-Recipient" in result.output
    shown = CliRunner().invoke(main, ["--config", config, "subscribers", "show", "hard1@example.net"])
    assert "  bounce  issue 1: dsn 5.1.1 smtp; 550 5.1.1" in shown.output and "  bounced  issue 1:" in shown.output
    again = CliRunner().invoke(main, ["--config", config, "bounces", "import", "--json", str(box)])
    data = json.loads(again.output)
    assert data["duplicates"] == 6 and data["hard"] == 0 and len(data["malformed"]) == 4


def test_digest_bounces_import_exit_codes(engine, settings, tmp_path):
    config = _config(tmp_path, settings)
    bad = tmp_path / "bad.eml"
    bad.write_bytes(report("not_a_report.eml"))
    refused = CliRunner().invoke(main, ["--config", config, "bounces", "import", str(bad)])
    assert refused.exit_code == 1 and "not a delivery status notification" in refused.output
    missing = CliRunner().invoke(main, ["--config", config, "bounces", "import", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    (tmp_path / "folder").mkdir()
    folder = CliRunner().invoke(main, ["--config", config, "bounces", "import", str(tmp_path / "folder")])
    assert folder.exit_code == 2 and "not a Maildir" in folder.output


def test_a_file_too_large_for_a_report_is_malformed_not_read_whole(engine, settings, tmp_path):
    from digest.bounces import MAX_REPORT_BYTES

    path = tmp_path / "huge.eml"
    path.write_bytes(report("postfix_hard.eml") + b"x" * MAX_REPORT_BYTES)
    summary = import_reports(settings, engine, path)
    assert summary.messages == 1 and "larger than" in summary.malformed[0].reason


def test_the_admin_delivery_report_shows_what_arrived_later(engine, settings, sent, tmp_path):
    import re

    from admin_fixtures import PASSWORD_HASH, log_in
    from starlette.testclient import TestClient

    from digest.web.app import create_app

    number, ids = sent
    box = write_mbox(tmp_path / "later.mbox", [
        report("exim_soft.eml", "soft@example.net", ids["soft@example.net"]),
        report("exim_delayed.eml", "late@example.net", ids["late@example.net"]),
        report("arf_abuse.eml", "x@mail.example.com", ids["angry@example.net"]),
        report("gmail_hard.eml", "hard2@example.net", ids["hard2@example.net"])])
    import_reports(settings, engine, box)
    web_settings = replace(settings, web=replace(settings.web, admin_password_hash=PASSWORD_HASH))
    with TestClient(create_app(web_settings, engine), base_url="https://testserver") as admin:
        assert log_in(admin).status_code == 303
        page = admin.get(f"/admin/issues/{number}/report").text
    figures = dict(re.findall(r'id="count-([\w-]+)">(\d+)<', page))
    assert (figures["bounced"], figures["complaints"], figures["soft-bounces"], figures["delayed"]) == ("1", "1", "1", "1")


def test_x_failed_recipients_names_the_recipient_a_dsn_block_lacks():
    data = report("malformed_no_recipient.eml").replace(b"Subject:", b"X-Failed-Recipients: Gone@Example.net\nSubject:", 1)
    (event,) = parse_report(data)
    assert (event.kind, event.recipient, event.status) == (ReportKind.HARD, "gone@example.net", "5.1.1")
