"""What the admin pages show, checked against the data: the drafts list, the preview's languages, the
send time once it has passed, the delivery report from a real send, the subscribers chart, and
hostile feed titles and editorial text escaped on every admin and archive page."""

from __future__ import annotations

import ast
import html
import re
from collections import Counter
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from admin_fixtures import READERS, admin_store, csrf_of, log_in
from compose_fixtures import NOW
from starlette.testclient import TestClient

import digest.web
from digest.manifest import issue_subject
from digest.models import IssueStatus, Subscriber, SubscriberStatus
from digest.pipeline.sending import send_issue
from digest.store.issues import approve_issue, get_issue, get_summary
from digest.store.runs import IssueTiming, record_run, set_send_time
from digest.store.subscribers import add_subscriber, get_subscriber, record_bounce, set_status
from digest.web.admin_preview import send_note
from digest.web.app import create_app

ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture(autouse=True)
def _no_password_from_the_environment(monkeypatch):
    monkeypatch.delenv("DIGEST_ADMIN_PASSWORD_HASH", raising=False)


@pytest.fixture
def store(tmp_path, sqlite_url):
    return admin_store(tmp_path, sqlite_url)


def signed_in(store) -> TestClient:
    client = TestClient(create_app(store.settings, store.engine), base_url="https://testserver")
    assert log_in(client).status_code == 303
    return client


@pytest.fixture
def admin(store):
    with signed_in(store) as client:
        yield client


def approve_page(store, admin):
    """Approve issue 1 with the page's form; the response is the page it lands on."""
    csrf = csrf_of(admin.get("/admin/issues/1").text)
    return admin.post("/admin/issues/1/approve", data={"version": get_issue(store.engine, 1).version, "csrf_token": csrf})


# --- the drafts list and the preview's languages ------------------------------------------------------

def test_the_issues_list_shows_each_drafts_number_subject_and_status(store, admin):
    row = re.compile(r'<td class="num">1</td>\s*<td><span class="badge draft">draft</span></td>\s*'
                     r'<td><a href="/admin/issues/1">([^<]*)</a></td>')
    (shown,) = row.findall(admin.get("/admin/issues").text)
    assert html.unescape(shown) == issue_subject(store.issue, store.settings)  # the default subject
    csrf = csrf_of(admin.get("/admin/issues/1").text)
    admin.post("/admin/issues/1/editorial", data={"csrf_token": csrf, "intro": "", "subject": "Our week in Brussels"})
    assert row.findall(admin.get("/admin/issues").text) == ["Our week in Brussels"]
    approve_page(store, admin)
    assert re.search(r'<td class="num">1</td>\s*<td><span class="badge approved">approved</span></td>\s*'
                     r'<td><a href="/admin/issues/1">Our week in Brussels</a>', admin.get("/admin/issues").text)


@pytest.mark.parametrize("lang, labels", [
    ("fr", ["Événements à venir", "Dans les médias", "Afficher dans votre navigateur"]),
    ("de", ["Kommende Veranstaltungen", "In den Medien", "Im Browser ansehen"]),
    ("en", ["Upcoming events", "In the media", "View in your browser"]),
])
def test_the_language_switch_shows_the_full_edition_in_that_language(admin, lang, labels):
    others = {"fr": "Dans les médias", "de": "In den Medien", "en": "In the media"}
    for fmt in ("html", "text"):
        preview = html.unescape(admin.get(f"/admin/issues/1/preview?lang={lang}&format={fmt}").text)
        assert all(label in preview for label in labels), (fmt, [label for label in labels if label not in preview])
        assert not any(label in preview for code, label in others.items() if code != lang)
    assert f'lang="{lang}"' in admin.get(f"/admin/issues/1/preview?lang={lang}").text
    page = admin.get(f"/admin/issues/1?lang={lang}").text
    assert f'<option value="{lang}" selected>' in page and f"the full edition ({lang})" in page
    assert f"lang={lang}" in re.search(r'<iframe id="preview"[^>]*src="([^"]+)"', page).group(1)


# --- when it goes out ----------------------------------------------------------------------------------

def test_a_send_time_that_has_passed_says_it_goes_out_when_approved(store, admin):
    set_send_time(store.engine, 1, datetime.now(UTC) - timedelta(hours=2))
    page = admin.get("/admin/issues/1").text
    assert "At once when approved" in page and "has passed" in page
    approved = approve_page(store, admin)
    assert get_summary(store.engine, 1).status == IssueStatus.APPROVED
    assert "goes out now" in approved.text and "at the send time shown" not in approved.text
    assert "Now: its send time" in approved.text


def test_a_send_time_ahead_is_shown_as_is(store, admin):
    when = (datetime.now(store.settings.site.tz) + timedelta(days=2)).replace(second=0, microsecond=0)
    set_send_time(store.engine, 1, when.astimezone(UTC))
    page = admin.get("/admin/issues/1").text
    assert f'<dd id="send-due">{when:%d %b %Y, %H:%M}</dd>' in page and "has passed" not in page
    assert "It goes out at the send time shown" in approve_page(store, admin).text


def test_an_issue_approved_long_before_its_missed_send_time_is_said_to_wait(store):
    now = datetime.now(UTC)
    timing = IssueTiming(number=1, status="approved", created_at=now - timedelta(days=5), window_end=now,
                         approved_at=now - timedelta(days=4), send_at=now - timedelta(days=3), sent_at=None)
    assert "fresh approval" in send_note(store.settings, timing, now)
    assert send_note(store.settings, timing, now - timedelta(days=4)) == ""  # still ahead then


def test_the_web_layer_builds_no_sql():
    """Queries live in digest.store; the web front door only passes an Engine along (and catches IntegrityError)."""
    for path in sorted(Path(digest.web.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("sqlalchemy") for a in node.names), path.name
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = {a.name for a in node.names}
                assert not node.module.endswith("schema"), f"{path.name} imports {node.module}"
                if node.module == "sqlalchemy":
                    assert names <= {"Engine"}, f"{path.name} builds queries with {sorted(names - {'Engine'})}"


# --- the delivery report from a real send ----------------------------------------------------------------

def test_the_delivery_report_counts_each_bounced_subscriber_once(tmp_path, store_url, smtp_server):
    store = admin_store(tmp_path, store_url, delivery={
        "transport": "smtp", "bounce_threshold": 2, "smtp": {"host": smtp_server.host, "port": smtp_server.port}})
    for reader in ("bob@example.org", "carla@example.org"):
        smtp_server.replies[reader] = ["550 5.1.1 no such user"]
    # Carla bounced once before: this issue's bounce reaches the threshold (a `bounce` and a `bounced`
    # event); Bob's is his first (a `bounce` event only).
    carla = get_subscriber(store.engine, "carla@example.org")
    record_bounce(store.engine, carla.id, threshold=2, detail="an earlier issue")
    approve_issue(store.engine, 1, by="Anna", version=store.issue.version)
    send_issue(store.settings, store.engine, 1)
    assert get_subscriber(store.engine, "carla@example.org").status == SubscriberStatus.BOUNCED
    with signed_in(store) as admin:
        report = admin.get("/admin/issues/1/report").text
    figures = dict(re.findall(r'id="count-(\w+)">(\d+)<', report))
    assert figures["sent"] == "1" and figures["failed"] == "2" and figures["bounced"] == "2"


def test_the_report_shows_the_issues_own_notes_however_many_others_came_since(store, admin):
    """The notes are the issue's newest, not those among the run log's newest 200 (fetches add many)."""
    record_run(store.engine, "send", "sent", "issue 1 (a note of its own)", issue_number=1,
               now=datetime.now(UTC) - timedelta(days=2))
    for n in range(250):
        record_run(store.engine, "fetch", "ok", f"fetch {n}", now=datetime.now(UTC) - timedelta(hours=1))
    report = admin.get("/admin/issues/1/report").text
    assert "issue 1 (a note of its own)" in report and "fetch 1" not in report


# --- the subscribers chart ----------------------------------------------------------------------------------

def test_the_subscribers_chart_shows_the_weeks_sign_ups_and_leaves(store, admin):
    now = datetime.now(UTC)
    signups = [now - timedelta(weeks=1), now - timedelta(weeks=1, hours=3), now - timedelta(weeks=3), now]
    for n, at in enumerate(signups):
        add_subscriber(store.engine, Subscriber(email=f"new{n}@example.org", status=SubscriberStatus.CONFIRMED), now=at)
    leaves = [(READERS[1].email, SubscriberStatus.UNSUBSCRIBED, now - timedelta(weeks=3)),
              (READERS[2].email, SubscriberStatus.COMPLAINED, now), ("new0@example.org", SubscriberStatus.BOUNCED, now)]
    for email, status, at in leaves:
        set_status(store.engine, get_subscriber(store.engine, email).id, status, now=at)

    tz = store.settings.site.tz
    monday = lambda t: (t.astimezone(tz).date() - timedelta(days=t.astimezone(tz).weekday()))  # noqa: E731
    expected_in = Counter(monday(t) for t in signups + [NOW] * len(READERS))  # admin_store adds READERS at NOW
    expected_out = Counter(monday(at) for _, _, at in leaves)
    page = admin.get("/admin/subscribers").text
    bars_in = re.findall(r'height="([\d.]+)" fill="#2f6fbd"><title>week of (\d\d \w+): (\d+) sign-ups</title>', page)
    bars_out = re.findall(r'height="([\d.]+)" fill="#d9822b"><title>week of (\d\d \w+): (\d+) left</title>', page)
    assert len(bars_in) == len(bars_out) == 12
    weeks = [monday(now) - timedelta(weeks=11 - i) for i in range(12)]
    assert [(label, int(n)) for _, label, n in bars_in] == [(f"{w:%d %b}", expected_in[w]) for w in weeks]
    assert [(label, int(n)) for _, label, n in bars_out] == [(f"{w:%d %b}", expected_out[w]) for w in weeks]
    peak = max(max(expected_in.values()), max(expected_out.values()))
    assert f'text-anchor="end" font-size="11" fill="#5b6675">{peak}</text>' in page
    tallest = max(float(h) for h, _, _ in bars_in + bars_out)
    for height, _, n in bars_in + bars_out:  # bar heights in proportion to the counts
        assert float(height) == pytest.approx(tallest * int(n) / peak, abs=0.1)


# --- hostile text, escaped everywhere ---------------------------------------------------------------------

# RSS titles as a hostile feed writes them (XML-escaped); parsing keeps what survives as plain text.
HOSTILE_TITLES_XML = [
    "&lt;script&gt;alert('t1')&lt;/script&gt;Scripted",
    "Unclosed &lt;img src=x onerror=alert('t2')//",
    "Hearts &lt;3 &lt;script",
    "Encoded &amp;amp;lt;b onmouseover=alert('t4')&amp;amp;gt;bold&amp;amp;lt;/b&amp;amp;gt;",
]
HOSTILE_SUBJECT = "<script>alert('subject')</script> & \"more\""
HOSTILE_INTRO = "<img src=x onerror=alert('intro')> & <b>bold</b>"


def hostile_feed(tmp_path) -> dict:
    items = "".join(
        f"<item><title>{title}</title><link>https://www.example.org/hostile/{n}/</link>"
        f"<pubDate>Wed, 18 Nov 2026 1{n}:00:00 +0000</pubDate>"
        "<category>European Strategic Autonomy series – Security &amp; Defence</category>"
        f'<guid isPermaLink="false">hostile-{n}</guid><description>&lt;p&gt;d&lt;/p&gt;</description></item>'
        for n, title in enumerate(HOSTILE_TITLES_XML))
    path = tmp_path / "hostile.rss"
    path.write_text('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Hostile</title>'
                    f"<link>https://www.example.org/</link><description>x</description>{items}</channel></rss>",
                    encoding="utf-8")
    return {"name": "Hostile", "url": str(path), "kind": "brief"}


class _Markup(HTMLParser):
    """Collects the elements and attributes a browser would build from a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.scripts: list[str] = []  # each <script>'s src ("" for an inline one)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        if tag == "script":
            self.scripts.append(dict(attrs).get("src") or "")


def assert_escaped(body: str, texts: list[str], where: str) -> None:
    """Each text is on the page (once unescaped), never raw, and no script or handler came of it: the
    only scripts are the admin's own files (the issue page's preview height)."""
    for text in texts:
        assert text in html.unescape(body), (where, text)
        if any(c in text for c in "<>&"):
            assert text not in body, (where, text)
    markup = _Markup()
    markup.feed(body)
    assert all(src.startswith("/admin/static/") for src in markup.scripts), (where, markup.scripts)
    assert not [a for a in markup.attributes if a.startswith("on")], where


def test_hostile_titles_subject_and_intro_are_escaped_on_every_page(tmp_path, sqlite_url):
    store = admin_store(tmp_path, sqlite_url, extra_feeds=(hostile_feed(tmp_path),),
                        web={"base_url": "https://digest.example.org"})
    titles = [e.item.title for s in store.issue.sections for e in s.entries if "/hostile/" in e.item.url]
    assert len(titles) == len(HOSTILE_TITLES_XML)
    assert sum("<" in t or "&" in t for t in titles) >= 2, titles  # markup-like text reached the store
    with signed_in(store) as admin:
        csrf = csrf_of(admin.get("/admin/issues/1").text)
        saved = admin.post("/admin/issues/1/editorial",
                           data={"csrf_token": csrf, "subject": HOSTILE_SUBJECT, "intro": HOSTILE_INTRO})
        assert saved.status_code == 200
        everything = [HOSTILE_SUBJECT, HOSTILE_INTRO, *titles]
        assert_escaped(admin.get("/admin/issues").text, [HOSTILE_SUBJECT], "issues list")
        assert_escaped(admin.get("/admin/issues/1").text, everything, "issue page")
        assert_escaped(admin.get("/admin/issues/1/preview").text, [HOSTILE_INTRO, *titles], "preview")
        approve_issue(store.engine, 1, by="Anna", version=get_issue(store.engine, 1).version)
        send_issue(store.settings, store.engine, 1)
        assert_escaped(admin.get("/admin/issues/1/report").text, [HOSTILE_SUBJECT], "report")
        assert_escaped(admin.get("/admin/archive").text, [HOSTILE_SUBJECT], "admin archive")
        assert_escaped(admin.get("/archive/").text, [HOSTILE_SUBJECT], "archive index")
        assert_escaped(admin.get("/archive/1").text, [HOSTILE_INTRO, *titles], "archive page")
        assert_escaped(admin.get("/archive/series/esa-security-defence").text, [HOSTILE_SUBJECT, *titles],
                       "series page")
        feed = admin.get("/archive/feed.atom").content
    assert_escaped(feed.decode("utf-8"), [HOSTILE_SUBJECT, *titles], "atom feed")
    (entry,) = ET.fromstring(feed).findall(f"{ATOM}entry")
    assert entry.find(f"{ATOM}title").text == HOSTILE_SUBJECT
    summary = entry.find(f"{ATOM}summary").text
    assert HOSTILE_INTRO in summary and all(t in summary for t in titles)
