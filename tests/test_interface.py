"""Acceptance tests: the real `digest` console script against INTERFACE's promises, taken literally.

Every test runs `.venv/bin/digest` as a subprocess on a config in tmp_path made from the bundled
sample feeds (`digest/data/samples/`, as `digest demo` copies them) and `subscribers/sample.csv`.
No output of a command may contain a traceback: errors are clear messages with exit codes 0/1/2.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
from collections import Counter
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from pathlib import Path
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import feedparser
import pytest
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "digest" / "data" / "samples"
SAMPLE_LIST = ROOT / "subscribers" / "sample.csv"
DIGEST = Path(sys.executable).parent / "digest"
if not DIGEST.exists():  # pragma: no cover - a venv without the console script next to python
    DIGEST = Path(shutil.which("digest") or "digest")
BRUSSELS = ZoneInfo("Europe/Brussels")
SINCE, UNTIL = "2026-11-16", "2026-11-23"
WINDOW = (datetime(2026, 11, 16, tzinfo=BRUSSELS), datetime(2026, 11, 23, tzinfo=BRUSSELS))
ITEM_KEYS = {"key", "kind", "title", "url", "published", "authors", "series", "also_in", "language",
             "summary_html", "event", "media", "related"}
SECTION_KEYS = {"id", "type", "title", "series", "items"}
TABLE_COMMANDS = ["init", "demo", "fetch", "build", "render", "subscribers", "approve", "send", "worker",
                  "serve", "run", "status"]


def digest(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run the real console script; never a traceback, whatever the outcome."""
    environment = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
    environment.update({"COLUMNS": "200", "DIGEST_SECRET": "acceptance-test-secret-0123456789"}, **(env or {}))
    done = subprocess.run([str(DIGEST), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=timeout, check=False)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    return done


def sample_site(tmp_path: Path) -> Path:
    """A copy of the sample feeds and config (as `digest demo` makes it); returns the config path."""
    site = tmp_path / "site"
    shutil.copytree(SAMPLES, site, ignore=shutil.ignore_patterns("*.db", "*.db-*", "outbox", "__pycache__"))
    return site / "digest.toml"


def json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_file(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


# --- the command table ----------------------------------------------------------------------------

def test_every_command_in_the_table_exists_and_has_help(tmp_path):
    top = digest("--help", cwd=tmp_path)
    assert top.returncode == 0
    for command in TABLE_COMMANDS:
        assert command in top.stdout
    # (The other commands and subcommands run for real in the tests below.)
    expected = {
        ("fetch",): ["--json"], ("build",): ["--since", "--until", "--json"],
        ("render",): ["--issue", "--subscriber", "--out"], ("send",): ["--issue", "--test"],
        ("serve",): ["--host", "--port"], ("approve",): ["NUMBER"], ("init",): ["DIRECTORY"],
        ("subscribers",): ["import", "export", "add", "remove", "list"], ("worker",): [], ("run",): [],
    }
    for command, options in expected.items():
        done = digest(*command, "--help", cwd=tmp_path)
        assert done.returncode == 0, (command, done.stderr)
        for option in options:
            assert option in done.stdout, (command, option)


def test_usage_errors_exit_2_with_a_message(tmp_path):
    config = sample_site(tmp_path)
    unknown = digest("frobnicate", cwd=tmp_path)
    assert unknown.returncode == 2 and "frobnicate" in unknown.stderr
    bad_date = digest("--config", str(config), "build", "--since", "last tuesday", cwd=tmp_path)
    assert bad_date.returncode == 2 and "--since" in bad_date.stderr
    missing = digest("render", "--issue", "1", cwd=tmp_path)
    assert missing.returncode == 2 and "--out" in missing.stderr


# --- configuration --------------------------------------------------------------------------------

def _config_naming(feed_name: str, folder: Path) -> Path:
    # A feed pointing at a file that is not there: `fetch --json` names the config that was read.
    return write_file(folder / "digest.toml", f'[[feeds]]\nname = "{feed_name}"\nurl = "missing.xml"\n')


def _feed_names(done: subprocess.CompletedProcess) -> list[str]:
    return [line["name"] for line in json_lines(done.stdout)]


def test_config_is_found_by_option_then_environment_then_current_folder(tmp_path):
    cwd = tmp_path / "cwd"
    _config_naming("from-cwd", cwd)
    from_env = _config_naming("from-env", tmp_path / "env")
    from_option = _config_naming("from-option", tmp_path / "option")
    env = {"DIGEST_CONFIG": str(from_env)}
    assert _feed_names(digest("--config", str(from_option), "fetch", "--json", cwd=cwd, env=env)) == ["from-option"]
    assert _feed_names(digest("fetch", "--json", cwd=cwd, env=env)) == ["from-env"]
    assert _feed_names(digest("fetch", "--json", cwd=cwd)) == ["from-cwd"]
    nowhere = digest("fetch", cwd=tmp_path)
    assert nowhere.returncode == 2 and "digest.toml" in nowhere.stderr and "digest init" in nowhere.stderr


@pytest.mark.parametrize(("body", "key"), [
    ('[site]\nnmae = "x"\n', "site.nmae"),
    ('colour = "red"\n', "colour"),
    ('[delivery.smtp]\nhots = "mail"\n', "delivery.smtp.hots"),
    ('[[feeds]]\nname = "a"\nurl = "a.xml"\nknd = "brief"\n', "feeds[0].knd"),
    ('[[series]]\nid = "s"\nname = "S"\nalias = ["x"]\n', "series[0].alias"),
])
def test_an_unknown_key_exits_2_naming_it(tmp_path, body, key):
    config = write_file(tmp_path / "digest.toml", body)
    done = digest("--config", str(config), "status", cwd=tmp_path)
    assert done.returncode == 2
    assert key in done.stderr


def test_relative_paths_are_relative_to_the_config_file(tmp_path):
    config = sample_site(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = digest("--config", str(config), "fetch", "--json", cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert {line["status"] for line in json_lines(done.stdout)} == {"ok"}
    assert (config.parent / "digest-demo.db").is_file()  # store.url = "sqlite:///digest-demo.db"
    assert list(elsewhere.iterdir()) == []


# --- series matching ------------------------------------------------------------------------------

SERIES_CONFIG = """
[site]
timezone = "Europe/Brussels"

[store]
url = "sqlite:///series.db"

[[feeds]]
name = "Publications"
url = "feed.xml"
kind = "brief"

[[series]]
id = "sd"
name = "European Strategic Autonomy – Security & Defence"
aliases = ["ESA series: Security and Defense"]

[[series]]
id = "et"
name = "European Strategic Autonomy – Economy & Trade"
"""

# (category text as it appears in the XML, series ids it must match)
CATEGORIES = [
    ("European Strategic Autonomy – Security &amp; Defence", ["sd"]),
    ("  european  strategic autonomy - SECURITY and defence ", ["sd"]),
    ("European Strategic Autonomy — Security &amp;amp; Defence", ["sd"]),
    ("European Strategic Autonomy &amp;#8211; Security &amp;#038; Defence", ["sd"]),
    ("ESA series: Security and Defense", ["sd"]),
    ("esa SERIES:  security &amp; defense", ["sd"]),
    ("Security &amp; Defence", []),
    ("European Strategic Autonomy – Security &amp; Defense", []),
    ("European Strategic Autonomy series – Security &amp; Defence", []),
    ("European Strategic Autonomy – Economy and Trade", ["et"]),
]
RELATIVE = len(CATEGORIES)  # one more item, with a relative link


def _series_feed(path: Path) -> None:
    items = "".join(
        f"<item><title>Item {i}</title><link>https://www.example.org/p/{i}/</link>"
        f"<guid>https://www.example.org/?p={i}</guid><pubDate>Wed, 18 Nov 2026 10:{i:02d}:00 +0100</pubDate>"
        f"<category>{category}</category></item>"
        for i, (category, _) in enumerate(CATEGORIES))
    items += (f"<item><title>Relative</title><link>/p/relative/</link><guid>https://www.example.org/?p={RELATIVE}</guid>"
              "<pubDate>Wed, 18 Nov 2026 11:00:00 +0100</pubDate></item>"
              "<item><title>Both</title><link>https://www.example.org/p/both/</link><guid>https://www.example.org/?p=99</guid>"
              "<pubDate>Wed, 18 Nov 2026 12:00:00 +0100</pubDate><category>European Strategic Autonomy – Economy &amp; Trade"
              "</category><category>European Strategic Autonomy – Security &amp; Defence</category></item>")
    path.write_text('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>P</title>'
                    f"<link>https://www.example.org/</link>{items}</channel></rss>", encoding="utf-8")


def test_series_matching_tolerates_case_space_dashes_and_entities_only(tmp_path):
    config = write_file(tmp_path / "site" / "digest.toml", SERIES_CONFIG)
    _series_feed(config.parent / "feed.xml")
    assert digest("--config", str(config), "fetch", cwd=tmp_path).returncode == 0
    done = digest("--config", str(config), "build", "--since", SINCE, "--until", UNTIL, "--json", "-", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    series_of = {item["title"]: item["series"] for s in manifest["sections"] for item in s["items"]}
    assert series_of == {f"Item {i}": expected for i, (_, expected) in enumerate(CATEGORIES)} | {
        "Relative": [], "Both": ["sd", "et"]}
    by_section = {s["id"]: [i["title"] for i in s["items"]] for s in manifest["sections"]}
    assert len(by_section["sd"]) == 7 and len(by_section["et"]) == 1 and len(by_section["more"]) == 4
    # In several series: in the first (config order), listing the others.
    (both,) = [i for i in manifest["sections"][0]["items"] if i["title"] == "Both"]
    assert manifest["sections"][0]["id"] == "sd" and both["also_in"] == ["et"]
    (relative,) = [i for s in manifest["sections"] for i in s["items"] if i["title"] == "Relative"]
    assert relative["url"] == "https://www.example.org/p/relative/"  # `url` is absolute


# --- init and demo --------------------------------------------------------------------------------

def test_init_writes_a_commented_config_and_creates_the_store(tmp_path):
    done = digest("init", "mysite", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = tmp_path / "mysite" / "digest.toml"
    text = config.read_text(encoding="utf-8")
    assert text.count("#") > 10 and "[[feeds]]" in text and "[[series]]" in text
    assert (tmp_path / "mysite" / "digest.db").is_file()
    assert "[[feeds]]" in done.stderr + done.stdout  # the next step names the tables to edit
    config.write_text(text + "\n# my edit\n", encoding="utf-8")
    again = digest("init", "mysite", cwd=tmp_path)
    assert again.returncode == 0 and config.read_text(encoding="utf-8").endswith("# my edit\n")
    status = digest("status", cwd=tmp_path / "mysite")  # ./digest.toml in the current folder
    assert status.returncode == 0, status.stderr


def test_demo_runs_the_whole_job_into_a_folder_and_says_where_to_look(tmp_path):
    done = digest("demo", "--dir", str(tmp_path / "demo"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    outbox = tmp_path / "demo" / "outbox"
    assert len(list(outbox.glob("*.eml"))) == sum(1 for _ in SAMPLE_LIST.open(encoding="utf-8")) - 1
    assert str(outbox.resolve()) in done.stdout
    edition = tmp_path / "demo" / "edition" / "issue.html"
    assert edition.is_file() and str(edition.resolve()) in done.stdout
    # It ends with how to open the demo issue in the admin, saying what is there: the issue is sent,
    # so there is nothing left to approve, but its preview and its delivery report.
    with sqlite3.connect(tmp_path / "demo" / "digest-demo.db") as db:
        assert db.execute("SELECT status FROM issues WHERE number = 1").fetchone() == ("sent",)
    ending = done.stdout.split("Store:", 1)[1]
    assert "approve" not in ending.lower()
    assert "already sent: its preview and delivery report" in ending
    assert f"--config {(tmp_path / 'demo' / 'digest.toml').resolve()} serve" in ending
    assert "http://127.0.0.1:8080/admin/issues/1 (password: demo)" in ending
    assert "http://127.0.0.1:8080/admin/issues/1/report" in ending
    # The demo recreates its folder, so it never deletes one that holds something else.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    refused = digest("demo", "--dir", "mine", cwd=tmp_path)
    assert refused.returncode == 2 and (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep me"


# --- fetch ----------------------------------------------------------------------------------------

def test_fetch_json_reports_every_feed_and_exits_1_when_one_failed(tmp_path):
    config = sample_site(tmp_path)
    text = config.read_text(encoding="utf-8").replace('url = "news.xml"', 'url = "nwes.xml"')
    config.write_text(text, encoding="utf-8")
    done = digest("--config", str(config), "fetch", "--json", cwd=tmp_path)
    assert done.returncode == 1
    reports = {line["name"]: line for line in json_lines(done.stdout)}
    assert list(reports) == ["Publications", "Events", "News", "Magazine", "In the media"]
    for report in reports.values():
        assert {"name", "url", "status", "items", "new", "updated", "message"} <= set(report)
        assert report["status"] in ("ok", "warning", "error", "not_modified")
    assert reports["News"]["status"] == "error" and "nwes.xml" in reports["News"]["message"]
    assert reports["Publications"]["status"] == "ok" and reports["Publications"]["new"] == 15
    # "Nothing new" is not an error (and builds nothing).
    empty = digest("--config", str(config), "build", "--since", "2020-01-01", "--until", "2020-01-08", "--json", "-",
                   cwd=tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert "nothing new" in empty.stderr.lower() and json.loads(empty.stdout)["issue"] is None
    # The good feeds were stored: their items make the issue.
    built = digest("--config", str(config), "build", "--since", SINCE, "--until", UNTIL, "--json", "-", cwd=tmp_path)
    manifest = json.loads(built.stdout)
    assert sum(len(s["items"]) for s in manifest["sections"]) > 10
    feeds = {f["name"]: f["status"] for f in manifest["feeds"]}
    assert feeds["News"] == "error" and feeds["Publications"] == "ok"
    table = digest("--config", str(config), "fetch", cwd=tmp_path)
    assert table.returncode == 1
    rows = {line.split("│")[0].strip(): line for line in table.stdout.splitlines() if "│" in line}
    assert list(rows) == list(reports)  # one line per feed (not a terminal: nothing wraps)
    assert "error" in rows["News"] and "nwes.xml" in rows["News"] and "not_modified" in rows["Events"]


def test_python_dash_m_digest_is_the_same_command_line(tmp_path):
    """README: `python -m digest …` is the same command line (e.g. from a virtualenv not on PATH)."""
    config = sample_site(tmp_path)
    environment = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
    done = subprocess.run([sys.executable, "-m", "digest", "--config", str(config), "fetch", "--json"], cwd=tmp_path,
                          env=environment, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    reports = json_lines(done.stdout)
    assert [r["name"] for r in reports] == ["Publications", "Events", "News", "Magazine", "In the media"]
    assert all(r["status"] in ("ok", "warning") and r["new"] > 0 for r in reports)


def test_fetch_over_http_then_not_modified(tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(SAMPLES))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        config = write_file(tmp_path / "digest.toml", "".join(
            f'[[feeds]]\nname = "{name}"\nurl = "{base}/{name}"\nkind = "{kind}"\n'
            for name, kind in (("publications.xml", "brief"), ("media.xml", "media"), ("gone.xml", "news"))))
        first = digest("--config", str(config), "fetch", "--json", cwd=tmp_path)
        second = digest("--config", str(config), "fetch", "--json", cwd=tmp_path)
    finally:
        server.shutdown()
        server.server_close()
    assert first.returncode == 1 and second.returncode == 1  # gone.xml: 404
    assert [line["status"] for line in json_lines(first.stdout)] == ["ok", "ok", "error"]
    assert "404" in json_lines(first.stdout)[2]["message"]
    assert [line["status"] for line in json_lines(second.stdout)] == ["not_modified", "not_modified", "error"]


# --- build: the manifest --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fetched(tmp_path_factory) -> Path:
    """The sample site, fetched and with the sample list imported; returns the config path."""
    config = sample_site(tmp_path_factory.mktemp("fetched"))
    assert digest("--config", str(config), "fetch", cwd=config.parent).returncode == 0
    imported = digest("--config", str(config), "subscribers", "import", str(SAMPLE_LIST), cwd=config.parent)
    assert imported.returncode == 0, imported.stderr
    return config


@pytest.fixture(scope="module")
def manifest(fetched) -> dict:
    done = digest("--config", str(fetched), "build", "--since", SINCE, "--until", UNTIL, "--json", "-",
                  cwd=fetched.parent)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # stdout holds the manifest only


def _items(manifest: dict) -> list[dict]:
    return [item for section in manifest["sections"] for item in section["items"]]


def _offset(value: str) -> timedelta:
    return datetime.fromisoformat(value).utcoffset()


def test_the_manifest_has_exactly_the_promised_shape(manifest):
    issue = manifest["issue"]
    assert issue["number"] >= 1 and issue["status"] == "draft"
    assert issue["window"] == {"start": "2026-11-16T00:00:00+01:00", "end": "2026-11-23T00:00:00+01:00"}
    sections = manifest["sections"]
    assert [s["id"] for s in sections] == ["esa-security-defence", "esa-economy-trade", "esa-digital-technology",
                                            "events", "media", "more"]
    for section in sections:
        assert SECTION_KEYS <= set(section)
        if section["type"] == "series":
            assert section["series"] == section["id"]
        else:
            assert section["type"] == section["id"] and section["series"] is None
    titles = {s["id"]: s["title"] for s in sections}
    assert titles["esa-security-defence"] == "European Strategic Autonomy series – Security & Defence"
    assert (titles["events"], titles["media"], titles["more"]) == ("Upcoming events", "In the media", "More from us")
    for item in _items(manifest):
        assert ITEM_KEYS <= set(item), item["title"]
        assert isinstance(item["authors"], list) and isinstance(item["series"], list)
        assert isinstance(item["also_in"], list)
        assert item["url"].startswith("https://")
        assert _offset(item["published"]) == datetime.fromisoformat(item["published"]).astimezone(BRUSSELS).utcoffset()
        for link in item["related"]:
            assert {"key", "kind", "title", "url"} <= set(link) <= {"key", "kind", "title", "url", "language", "editions"}
            assert link["url"].startswith("https://")
    assert {f["name"] for f in manifest["feeds"]} == {"Publications", "Events", "News", "Magazine", "In the media"}
    assert all({"name", "url", "status", "message"} <= set(f) for f in manifest["feeds"])


def test_events_are_upcoming_with_start_end_location_and_online(manifest):
    (events,) = [s for s in manifest["sections"] if s["id"] == "events"]
    assert events["items"]
    starts = []
    for item in events["items"]:
        assert item["kind"] == "event"
        assert {"start", "end", "location", "online"} <= set(item["event"])
        assert isinstance(item["event"]["online"], bool)
        start = datetime.fromisoformat(item["event"]["start"])
        assert WINDOW[1] <= start < WINDOW[1] + timedelta(days=60)
        assert _offset(item["event"]["start"]) == start.astimezone(BRUSSELS).utcoffset()
        starts.append(start)
    assert starts == sorted(starts)
    # Whenever they were announced: this one was published on 5 November, before the window.
    assert "Madrid Forum on Social Europe" in [i["title"] for i in events["items"]]
    debate = next(i for i in events["items"] if i["title"] == "Who pays for European defence? A debate")
    assert debate["event"]["location"] == "HQ Brussels" and debate["event"]["online"] is False


def test_media_mentions_are_unwrapped_with_outlet_and_language(manifest):
    (media,) = [s for s in manifest["sections"] if s["id"] == "media"]
    by_host = {urlsplit(i["url"]).hostname: i for i in media["items"]}
    for item in media["items"]:
        assert item["kind"] == "media" and "google." not in item["url"]
        assert item["media"]["outlet"]
    apa = by_host["apa.at"]
    assert apa["url"] == "https://apa.at/news/eu-soll-ruestung-gemeinsam-einkaufen/"
    assert apa["media"]["outlet"] == "Austria Presse Agentur" and apa["language"] == "de"
    assert by_host["www.lesoir.be"]["language"] == "fr"


def _sample_entries(name: str) -> list:
    return feedparser.parse((SAMPLES / name).read_bytes()).entries


def _in_window(entry) -> bool:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    when = datetime(*parsed[:6], tzinfo=ZoneInfo("UTC"))
    return WINDOW[0] <= when < WINDOW[1]


def _real_url(link: str) -> str:
    parts = urlsplit(link)
    return parse_qs(parts.query)["url"][0] if parts.hostname == "www.google.com" else link


def test_every_new_item_of_the_window_appears_exactly_once(manifest):
    items = _items(manifest)
    assert len({i["key"] for i in items}) == len(items)
    placed = Counter(i["url"] for i in items if i["kind"] != "event")
    expected = {e.link for name in ("publications.xml", "news.xml", "magazine.rdf")
                for e in _sample_entries(name) if _in_window(e)}
    expected |= {_real_url(e.link) for e in _sample_entries("media.xml") if _in_window(e)}
    assert set(placed) == expected and set(placed.values()) == {1}
    # Events new in the window that start within the horizon are listed too.
    events = {i["url"] for s in manifest["sections"] if s["id"] == "events" for i in s["items"]}
    upcoming = {e.link for e in _sample_entries("events.xml")
                if _in_window(e) and WINDOW[1] <= _local(e.ev_startdate) < WINDOW[1] + timedelta(days=60)}
    assert upcoming and upcoming <= events


def _local(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=BRUSSELS)


def test_an_item_sits_in_its_first_series_and_lists_the_others(manifest):
    order = ["esa-security-defence", "esa-economy-trade", "esa-digital-technology"]  # config order
    for section in manifest["sections"]:
        for item in section["items"]:
            if section["type"] == "series":
                mine = sorted(item["series"], key=order.index)
                assert mine[0] == section["id"] and item["also_in"] == mine[1:]
            elif section["type"] == "more":
                assert item["series"] == [] and item["also_in"] == []


def test_build_window_options_and_nothing_new(fetched, tmp_path):
    # A copy of the fetched store, so the shared draft is left alone.
    site = tmp_path / "copy"
    shutil.copytree(fetched.parent, site, ignore=shutil.ignore_patterns("outbox", "*.db-*"))
    config = site / "digest.toml"
    done = digest("--config", str(config), "build", "--since", "2026-11-18T00:00", "--until", "2026-11-20T00:00:00+01:00",
                  "--json", "-", cwd=site)
    assert done.returncode == 0, done.stderr
    manifest = json.loads(done.stdout)
    assert manifest["issue"]["window"] == {"start": "2026-11-18T00:00:00+01:00", "end": "2026-11-20T00:00:00+01:00"}
    for item in _items(manifest):
        if item["kind"] != "event":
            assert "2026-11-18" <= item["published"][:10] < "2026-11-20", item
    to_file = digest("--config", str(config), "build", "--since", SINCE, "--until", UNTIL, "--json", "m.json", cwd=site)
    assert to_file.returncode == 0 and json.loads((site / "m.json").read_text(encoding="utf-8"))["sections"]


# --- render, subscribers, approve, send, status ---------------------------------------------------

def test_render_writes_the_three_files_for_the_edition_or_one_subscriber(fetched, manifest, tmp_path):
    number = str(manifest["issue"]["number"])
    full = digest("--config", str(fetched), "render", "--issue", number, "--out", str(tmp_path / "full"), cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    for name in ("issue.html", "issue.txt", "issue.eml"):
        assert (tmp_path / "full" / name).stat().st_size > 0
    html = (tmp_path / "full" / "issue.html").read_text(encoding="utf-8")
    assert "Trade defence in an age of tariffs" in html and "Europe in orbit" in html
    jan = digest("--config", str(fetched), "render", "--issue", number, "--subscriber", "jan.de.vries@example.nl",
                 "--out", str(tmp_path / "jan"), cwd=tmp_path)
    assert jan.returncode == 0, jan.stderr
    text = (tmp_path / "jan" / "issue.txt").read_text(encoding="utf-8")
    assert "== Security & Defence ==" in text  # short heads (issue 14); the full name is on the series link
    assert "Economy & Trade ==" not in text and "Digital & Technology ==" not in text
    message = message_from_bytes((tmp_path / "jan" / "issue.eml").read_bytes(), policy=policy.default)
    assert "jan.de.vries@example.nl" in message["To"]
    claire = digest("--config", str(fetched), "render", "--issue", number, "--subscriber", "claire.lefevre@example.fr",
                    "--out", str(tmp_path / "claire"), cwd=tmp_path)
    assert 'lang="fr"' in (tmp_path / "claire" / "issue.html").read_text(encoding="utf-8"), claire.stderr
    nobody = digest("--config", str(fetched), "render", "--issue", "99", "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert nobody.returncode == 2 and "99" in nobody.stderr
    stranger = digest("--config", str(fetched), "render", "--issue", number, "--subscriber", "who@example.org",
                      "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert stranger.returncode == 2 and "who@example.org" in stranger.stderr
    (tmp_path / "a-file").write_text("", encoding="utf-8")
    unwritable = digest("--config", str(fetched), "render", "--issue", number, "--out", str(tmp_path / "a-file" / "x"),
                        cwd=tmp_path)
    assert unwritable.returncode == 1 and "a-file" in unwritable.stderr


def test_subscriber_lists_import_export_add_remove_list(tmp_path):
    config = sample_site(tmp_path)
    run = lambda *args: digest("--config", str(config), "subscribers", *args, cwd=tmp_path)  # noqa: E731
    imported = run("import", str(SAMPLE_LIST))
    assert imported.returncode == 0, imported.stderr
    assert "added 12" in imported.stdout
    listed = run("list")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 12
    exported = run("export")
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert list(rows[0])[:4] == ["email", "name", "language", "series"]
    original = {r["email"]: r for r in csv.DictReader(SAMPLE_LIST.open(encoding="utf-8"))}
    for row in rows:
        assert {k: row[k] for k in ("email", "name", "language")} == {k: original[row["email"]][k]
                                                                        for k in ("email", "name", "language")}
        assert set(filter(None, row["series"].split(";"))) == set(filter(None, original[row["email"]]["series"].split(";")))
    assert run("import", str(SAMPLE_LIST)).stdout.startswith("added 0, updated 0, unchanged 12")

    added = run("add", "New.Reader@Example.org", "--name", "New Reader", "--language", "de",
                "--series", "esa-economy-trade")
    assert added.returncode == 0, added.stderr
    mine = [line for line in run("list").stdout.splitlines() if line.startswith("new.reader@example.org")]
    assert len(mine) == 1 and "\tde\t" in mine[0] and "esa-economy-trade" in mine[0]
    assert run("remove", "new.reader@example.org").returncode == 0
    assert "unsubscribed" in [line for line in run("list").stdout.splitlines() if "new.reader" in line][0]
    reimport = write_file(tmp_path / "again.csv", "email,name,language,series\nnew.reader@example.org,N,en,\n")
    assert "suppressed 1" in run("import", str(reimport)).stdout  # never re-added
    assert run("remove", "ghost@example.org").returncode == 1
    nowhere = run("export", "-o", str(tmp_path / "no-such-folder" / "list.csv"))
    assert nowhere.returncode == 1 and "no-such-folder" in nowhere.stderr


@pytest.mark.parametrize(("content", "expected_code", "message"), [
    ("mail,nom\na@example.org,A\n", 2, "email"),
    ("email,name,language,series\nnot-an-address,A,en,\nok@example.org,B,xx,\n", 1, "line 2"),
    ("email,name,language,series\nok@example.org,B,en,no-such-series\n", 1, "no-such-series"),
])
def test_a_bad_subscriber_list_is_refused_clearly(tmp_path, content, expected_code, message):
    config = sample_site(tmp_path)
    bad = write_file(tmp_path / "list.csv", content)
    done = digest("--config", str(config), "subscribers", "import", str(bad), cwd=tmp_path)
    assert done.returncode == expected_code
    assert message in done.stdout + done.stderr
    missing = digest("--config", str(config), "subscribers", "import", str(tmp_path / "nope.csv"), cwd=tmp_path)
    assert missing.returncode == 2 and "nope.csv" in missing.stderr


def _recipients(outbox: Path) -> Counter:
    return Counter(message_from_bytes(p.read_bytes(), policy=policy.default)["To"].addresses[0].addr_spec
                   for p in outbox.glob("*.eml"))


def test_approve_then_send_reaches_every_subscriber_exactly_once(fetched, manifest, tmp_path):
    site = tmp_path / "copy"
    shutil.copytree(fetched.parent, site, ignore=shutil.ignore_patterns("outbox", "*.db-*"))
    config, number = site / "digest.toml", str(manifest["issue"]["number"])
    run = lambda *args: digest("--config", str(config), *args, cwd=tmp_path)  # noqa: E731
    draft = run("send", "--issue", number)
    assert draft.returncode == 2 and f"digest approve {number}" in draft.stderr
    assert not (site / "outbox").exists()
    assert run("approve", "99").returncode == 2
    assert run("send", "--issue", "99").returncode == 2
    approved = run("approve", number)
    assert approved.returncode == 0, approved.stderr
    test = run("send", "--issue", number, "--test", "staff@example.org", "--test", "editor@example.org")
    assert test.returncode == 0, test.stderr
    assert _recipients(site / "outbox") == Counter({"staff@example.org": 1, "editor@example.org": 1})
    test = run("send", "--issue", number, "--test", "chief@example.org", "desk@example.org")  # `--test EMAIL …`
    assert test.returncode == 0, test.stderr
    assert set(_recipients(site / "outbox")) == {"staff@example.org", "editor@example.org", "chief@example.org",
                                                 "desk@example.org"}
    for path in (site / "outbox").glob("*.eml"):
        path.unlink()
    sent = run("send", "--issue", number, "--json")
    assert sent.returncode == 0, sent.stderr
    report = json.loads(sent.stdout)
    assert report["status"] == "sent" and report["sent"] + report["skipped"] == 12 and report["failed"] == 0
    received = _recipients(site / "outbox")
    assert set(received.values()) == {1} and sum(received.values()) == report["sent"]
    again = run("send", "--issue", number, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["sent"] == 0
    assert _recipients(site / "outbox") == received
    status = run("status")
    assert status.returncode == 0 and f"#{number} sent" in status.stdout
    as_json = json.loads(run("status", "--json").stdout)
    assert as_json["last_sent"]["issue"]["number"] == int(number)
    if datetime.now(BRUSSELS) > WINDOW[1]:  # the default window: from the end of the last sent issue to now
        after = run("build", "--allow-empty", "--json", "-")
        assert after.returncode == 0, after.stderr
        assert json.loads(after.stdout)["issue"]["window"]["start"] == "2026-11-23T00:00:00+01:00"


# --- failures a real user meets -------------------------------------------------------------------

def test_sending_with_the_smtp_server_down_says_so_and_loses_nothing(fetched, manifest, tmp_path, smtp_server):
    closed = free_port()
    site = tmp_path / "copy"
    shutil.copytree(fetched.parent, site, ignore=shutil.ignore_patterns("outbox", "*.db-*"))
    config, number = site / "digest.toml", str(manifest["issue"]["number"])
    base = config.read_text(encoding="utf-8").replace('transport = "outbox"', 'transport = "smtp"')
    config.write_text(base + f"\n[delivery.smtp]\nport = {closed}\n", encoding="utf-8")
    assert digest("--config", str(config), "approve", number, cwd=tmp_path).returncode == 0
    down = digest("--config", str(config), "send", "--issue", number, cwd=tmp_path, timeout=45)
    assert down.returncode == 1, down.stderr
    assert f"127.0.0.1:{closed}" in down.stderr and "again" in down.stderr
    with sqlite3.connect(site / "digest-demo.db") as db:
        assert db.execute("select status, count(*) from deliveries group by status").fetchall() == [("queued", 12)]
    test = digest("--config", str(config), "send", "--issue", number, "--test", "staff@example.org", cwd=tmp_path)
    assert test.returncode == 1 and f"127.0.0.1:{closed}" in test.stderr
    worker = digest("--config", str(config), "worker", "--once", cwd=tmp_path, timeout=45)
    assert worker.returncode == 1 and f"127.0.0.1:{closed}" in worker.stderr
    config.write_text(base + f"\n[delivery.smtp]\nport = {smtp_server.port}\n", encoding="utf-8")
    up = digest("--config", str(config), "send", "--issue", number, "--json", cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    report = json.loads(up.stdout)
    assert report["sent"] + report["skipped"] == 12
    assert Counter(r for _, rcpts, _ in smtp_server.received for r in rcpts) == Counter(
        {r: 1 for _, rcpts, _ in smtp_server.received for r in rcpts})
    assert len(smtp_server.received) == report["sent"]


def test_serve_on_a_busy_port_says_so(tmp_path):
    config = sample_site(tmp_path)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = digest("--config", str(config), "serve", "--port", str(port), cwd=tmp_path, timeout=30)
    assert done.returncode == 1
    assert f"127.0.0.1:{port}" in done.stderr and "in use" in done.stderr


def _wait_for_line(proc: subprocess.Popen, text: str, seconds: float = 30) -> list[str]:
    """Lines of the process's stderr up to the one containing `text` (fails when it exits first)."""
    import queue
    import threading

    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr] and None, daemon=True).start()
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=seconds)
        except queue.Empty:
            raise AssertionError(f"no {text!r} in {seen}") from None
        seen.append(line)
        if text in line:
            return seen


def _start(config: Path, *args: str) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if k != "DIGEST_CONFIG"}
    environment["DIGEST_SECRET"] = "acceptance-test-secret-0123456789"
    return subprocess.Popen([str(DIGEST), "--config", str(config), *args], cwd=config.parent, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_run_and_serve_start_and_stop_cleanly(tmp_path):
    import signal
    import urllib.request

    config = sample_site(tmp_path)
    scheduler = _start(config, "run")
    try:
        _wait_for_line(scheduler, "start-up check done")
    finally:
        scheduler.send_signal(signal.SIGTERM)
        _, err = scheduler.communicate(timeout=30)
    assert scheduler.returncode == 0 and "Traceback" not in err
    port = free_port()
    web = _start(config, "serve", "--port", str(port))
    try:
        _wait_for_line(web, "Uvicorn running on")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/subscribe", timeout=10) as page:
            assert page.status == 200 and "Europa Progressiva" in page.read().decode()
    finally:
        web.send_signal(signal.SIGTERM)
        _, err = web.communicate(timeout=30)
    assert web.returncode == 0 and "Traceback" not in err
