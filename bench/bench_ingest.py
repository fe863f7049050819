"""Ingestion: digest vs rss2email on the same 20 generated feeds of 25 items, served from 127.0.0.1.

Three runs each, side by side: a first run (everything new) and two nothing-new runs, where a
well-behaved reader gets a 304 for every feed. Each comparison twice: as the real command lines
in a fresh process per run (`digest fetch --json`, `r2e run --no-send`), so start-up and imports
count; and inside one long-lived process per tool (as `digest run` fetches), with the server
answering at once and after 100 ms. The fresh-process case also times each tool's imports alone.
Then one 20,000-item, ~26 MB feed through `digest fetch`: wall time and the process tree's peak memory.
Last, the fresh-command start-up: `digest --help`, and `digest fetch` on the bundled sample config
(digest/data/samples/: five local feeds, first with every item new, then with every file unchanged).

Run: .venv/bin/python bench/bench_ingest.py  (--quick: no latency runs, a 2,000-item big feed, fewer repeats)
"""

from __future__ import annotations

import argparse
import configparser
import email.utils
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BIN = Path(sys.executable).parent
SAMPLES = Path(__file__).resolve().parent.parent / "digest" / "data" / "samples"
FEEDS, ITEMS, BIG_ITEMS = 20, 25, 20_000
WORDS = ("strategic autonomy defence procurement trade resilience digital sovereignty semiconductors "
         "energy transition enlargement rule of law cohesion budget migration climate industrial policy "
         "European Council Commission Parliament member states cooperation security supply chains").split()
SERIES = ["European Strategic Autonomy series – Security & Defence",
          "European Strategic Autonomy series – Economy & Trade", "Policy Brief", "Democracy"]


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def item_xml(rng: random.Random, feed: int, n: int) -> str:
    """One WordPress-style item: categories, creator, description and content:encoded (about 1.3 KB)."""
    link = f"https://www.example.org/{feed:02d}/{n:05d}/"
    cats = "".join(f"<category><![CDATA[{c}]]></category>" for c in rng.sample(SERIES, 2))
    paragraphs = "".join(f"<p>{sentence(rng, 20)} <a href=\"/topic/{n}\">More</a></p>" for _ in range(3))
    day = 1 + n % 28
    return (f"<item><title>{sentence(rng, 8)}</title><link>{link}</link>"
            f"<guid isPermaLink=\"false\">{link}?p={n}</guid>"
            f"<pubDate>Mon, {day:02d} Nov 2026 10:{n % 60:02d}:00 +0000</pubDate>"
            f"<dc:creator><![CDATA[Author {n % 7}]]></dc:creator>{cats}"
            f"<description><![CDATA[{sentence(rng, 18)}]]></description>"
            f"<content:encoded><![CDATA[{paragraphs}]]></content:encoded></item>\n")


def feed_xml(feed: int, items: int) -> bytes:
    rng = random.Random(feed)
    body = "".join(item_xml(rng, feed, n) for n in range(items))
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/" xmlns:dc="http://purl.org/dc/elements/1.1/">'
            f"<channel><title>Feed {feed}</title><link>https://www.example.org/</link>"
            f"<description>Generated</description><language>en</language>\n{body}</channel></rss>\n").encode()


class _Listener(ThreadingHTTPServer):
    # The default backlog of 5 drops concurrent connects, costing a 1 s SYN retry each.
    request_queue_size = 128


class Server:
    """Static feeds with ETag and Last-Modified; counts the status codes it sends."""

    def __init__(self, feeds: dict[str, bytes], delay: float = 0.0) -> None:
        self.feeds = {path: (body, '"' + hashlib.sha1(body).hexdigest()[:16] + '"') for path, body in feeds.items()}
        self.last_modified = email.utils.formatdate(1_763_000_000, usegmt=True)
        self.statuses: Counter = Counter()
        self.delay = delay
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                entry = server.feeds.get(self.path)
                if entry is None:
                    self.send_error(404)
                    return
                body, etag = entry
                time.sleep(server.delay)  # a remote server's response time
                inm, ims = self.headers.get("If-None-Match"), self.headers.get("If-Modified-Since")
                if inm == etag or (inm is None and ims == server.last_modified):
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Last-Modified", server.last_modified)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", server.last_modified)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def send_response(self, code: int, message: str | None = None) -> None:
                server.statuses[code] += 1
                super().send_response(code, message)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = _Listener(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, float, str]:
    """Run a command; wall seconds, the peak memory in MB of it and every process under it, and its stdout.

    digest's parse workers are forked by multiprocessing's fork server, so they are the command's
    grandchildren and `wait4`'s rusage does not see them: the process tree's PSS (shared pages split
    between the processes sharing them) is sampled every 20 ms instead, and the larger figure kept.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.02):
            peak[0] = max(peak[0], tree_memory_mb(proc.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = proc.stdout.read()
    done.set()
    sampler.join()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)} exited {proc.returncode}")
    return elapsed, max(peak[0], usage.ru_maxrss / 1024), out.decode()


def tree_memory_mb(root: int) -> float:
    """PSS (else RSS) of `root` and all its descendants now, in MB, read from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # ended while we looked
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, ppid in parents.items() if ppid in tree} - tree
        tree |= more
        grew = bool(more)
    total_kb = 0
    for pid in tree:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            total_kb += next(int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:"))
        except (OSError, StopIteration, ValueError):
            try:  # no smaps_rollup (old kernel): RSS, which counts shared pages in full
                total_kb += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
            except (OSError, IndexError, ValueError):
                continue
    return total_kb / 1024


def setup_digest(tmp: Path, urls: list[str], name: str = "digest") -> Path:
    """A config and a store made by `digest init`: one-time set-up, as `r2e new` / `r2e add` are for rss2email."""
    folder = tmp / name
    folder.mkdir()
    feeds = "".join(f'[[feeds]]\nname = "Feed {i:02d}"\nurl = "{u}"\nkind = "brief"\n\n' for i, u in enumerate(urls))
    (folder / "digest.toml").write_text(f'[store]\nurl = "sqlite:///digest.db"\n\n{feeds}', encoding="utf-8")
    subprocess.run([str(BIN / "digest"), "init", "."], cwd=folder, check=True, capture_output=True)
    return folder


def setup_rss2email(tmp: Path, urls: list[str]) -> tuple[Path, list[str]]:
    """A private rss2email config and data file; `r2e run --no-send` fetches and builds mails, sends none."""
    folder = tmp / "rss2email"
    folder.mkdir()
    base = [str(BIN / "r2e"), "-c", "r2e.cfg", "-d", "r2e.json"]
    subprocess.run([*base, "new", "bench@example.org"], cwd=folder, check=True, capture_output=True)
    config = configparser.ConfigParser(interpolation=None)
    config.read(folder / "r2e.cfg", encoding="utf-8")
    # Never mail anything (--no-send too), and no politeness sleep between feeds of one host.
    config["DEFAULT"].update({"from": "bench@example.org", "sendmail": "/bin/true", "same-server-fetch-interval": "0"})
    with (folder / "r2e.cfg").open("w", encoding="utf-8") as handle:
        config.write(handle)
    for i, url in enumerate(urls):
        subprocess.run([*base, "add", f"feed{i:02d}", url], cwd=folder, check=True, capture_output=True)
    return folder, base


def rss2email_seen(folder: Path) -> int:
    data = json.loads((folder / "r2e.json").read_text(encoding="utf-8"))
    return sum(len(f.get("seen", {})) for f in data["feeds"])


def compare_runs(tmp: Path, delay: float) -> list[tuple[str, float, int, int, float, int, int]]:
    """Three runs of each tool against feeds answering after `delay` seconds."""
    server = Server({f"/feed{i:02d}.xml": feed_xml(i, ITEMS) for i in range(FEEDS)}, delay)
    urls = [server.url(f"/feed{i:02d}.xml") for i in range(FEEDS)]
    tmp = tmp / f"delay-{delay}"
    tmp.mkdir()
    digest_dir = setup_digest(tmp, urls)
    r2e_dir, r2e = setup_rss2email(tmp, urls)
    digest_cmd = [str(BIN / "digest"), "--config", "digest.toml", "fetch", "--json"]
    rows = []
    for label in ("first run (all new)", "nothing new, run 2", "nothing new, run 3"):
        server.statuses.clear()
        d_time, _, out = run_measured(digest_cmd, digest_dir)
        d_304 = server.statuses[304]
        d_new = sum(json.loads(line)["new"] for line in out.splitlines() if line.strip())
        server.statuses.clear()
        seen_before = rss2email_seen(r2e_dir)
        r_time, _, _ = run_measured([*r2e, "run", "--no-send"], r2e_dir)
        r_304 = server.statuses[304]
        rows.append((label, d_time, d_304, d_new, r_time, r_304, rss2email_seen(r2e_dir) - seen_before))
    server.httpd.shutdown()
    return rows


# A long-lived process doing one run per line read from stdin and printing its seconds: how
# `digest run` (the scheduler) fetches, and the fair counterpart for rss2email's Python API.
WARM_DIGEST = """
import sys, time
import digest.parse  # imported up front, as rss2email's modules are below
from digest.config import load_settings
from digest.pipeline.ingest import fetch_all
from digest.store import open_store
settings = load_settings("digest.toml")
engine = open_store(settings.store.url)
for _ in sys.stdin:
    started = time.perf_counter()
    reports = fetch_all(settings, engine)
    print(time.perf_counter() - started, sum(r.new for r in reports), flush=True)
"""
WARM_RSS2EMAIL = """
import sys, time
from rss2email import error, feeds as r2e_feeds
for _ in sys.stdin:
    started = time.perf_counter()
    feeds = r2e_feeds.Feeds(datafile_path="r2e.json", configfiles=["r2e.cfg"])
    feeds.load()
    before = sum(len(f.seen) for f in feeds)
    for feed in feeds:
        try:
            feed.run(send=False)
        except error.RSS2EmailError as exc:
            exc.log()
    feeds.save_feeds()
    new = sum(len(f.seen) for f in feeds) - before
    feeds.close()
    print(time.perf_counter() - started, new, flush=True)
"""


def compare_warm(tmp: Path, delay: float) -> list[tuple[str, float, int, int, float, int, int]]:
    """Three runs of each tool inside one already-started process (imports and workers warm)."""
    server = Server({f"/feed{i:02d}.xml": feed_xml(i, ITEMS) for i in range(FEEDS)}, delay)
    urls = [server.url(f"/feed{i:02d}.xml") for i in range(FEEDS)]
    tmp = tmp / f"warm-{delay}"
    tmp.mkdir()
    digest_dir = setup_digest(tmp, urls)
    r2e_dir, _ = setup_rss2email(tmp, urls)
    children = [subprocess.Popen([sys.executable, "-c", code], cwd=cwd, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                for code, cwd in ((WARM_DIGEST, digest_dir), (WARM_RSS2EMAIL, r2e_dir))]
    rows = []
    for label in ("first run (all new)", "nothing new, run 2", "nothing new, run 3"):
        row: list = [label]
        for child in children:
            server.statuses.clear()
            child.stdin.write("run\n")
            child.stdin.flush()
            seconds, new = child.stdout.readline().split()
            row += [float(seconds), server.statuses[304], int(new)]
        rows.append(tuple(row))
    for child in children:
        child.stdin.close()
        child.wait()
    server.httpd.shutdown()
    return rows


def big_feed(tmp: Path, items: int) -> tuple[float, float, str]:
    body = feed_xml(99, items)
    server = Server({"/big.xml": body})
    folder = setup_digest(tmp, [server.url("/big.xml")], name="big")
    elapsed, peak, out = run_measured([str(BIN / "digest"), "--config", "digest.toml", "fetch", "--json"], folder)
    server.httpd.shutdown()
    report = json.loads(out.splitlines()[0])
    return elapsed, peak, f"{len(body) / 1e6:.1f} MB, status {report['status']}, {report['new']} new {report['message'][:80]}"


def print_runs(rows: list, delay: float, how: str) -> bool:
    where = "no added latency" if not delay else f"each response delayed {delay * 1000:.0f} ms, like a remote server"
    print(f"\n{FEEDS} feeds x {ITEMS} items from 127.0.0.1, {where}; {how}")
    print(f"{'run':<22} {'digest s':>9} {'304s':>5} {'new':>5}   {'rss2email s':>11} {'304s':>5} {'new':>5}   {'speed-up':>8}")
    for label, d_time, d_304, d_new, r_time, r_304, r_new in rows:
        print(f"{label:<22} {d_time:9.2f} {d_304:5d} {d_new:5d}   {r_time:11.2f} {r_304:5d} {r_new:5d}   {r_time / d_time:7.1f}x")
    first = rows[0]
    speedup = first[4] / first[1]
    all_304 = all(row[2] == FEEDS for row in rows[1:])
    print(f"first run >= 2x faster than rss2email: {'met' if speedup >= 2 else 'MISSED'} ({speedup:.1f}x); "
          f"digest got a 304 for every feed on every unchanged run: {'met' if all_304 else 'MISSED'}")
    return speedup >= 2 and all_304


# What a fresh `digest fetch` imports before it fetches anything, and what `r2e run` imports.
DIGEST_IMPORTS = "import digest.cli, digest.cli.fetch, digest.pipeline, digest.fetch, digest.parse, digest.store.items"
RSS2EMAIL_IMPORTS = "import rss2email.main, rss2email.feeds"


def import_floor(tmp: Path) -> tuple[float, float]:
    """Seconds a fresh interpreter takes for digest's imports alone, and for rss2email's (best of 5 each)."""
    def best(code: str) -> float:
        return min(run_measured([sys.executable, "-c", code], tmp)[0] for _ in range(5))

    return best(DIGEST_IMPORTS), best(RSS2EMAIL_IMPORTS)


def startup(tmp: Path, repeats: int) -> tuple[float, float, float]:
    """Best-of-`repeats` wall seconds of fresh commands: `digest --help`, and `digest fetch` on the
    bundled sample config with every item new (a fresh store each time), then with every file unchanged."""
    folder = tmp / "samples"
    shutil.copytree(SAMPLES, folder)
    subprocess.run([sys.executable, "-c", "from digest.store import open_store; "
                    "open_store('sqlite:///digest-demo.db').dispose()"], cwd=folder, check=True)
    shutil.copy(folder / "digest-demo.db", folder / "empty.db")
    fetch = [str(BIN / "digest"), "--config", "digest.toml", "fetch", "--json"]
    help_seconds = min(run_measured([str(BIN / "digest"), "--help"], folder)[0] for _ in range(repeats))
    first = []
    for _ in range(repeats):
        shutil.copy(folder / "empty.db", folder / "digest-demo.db")
        first.append(run_measured(fetch, folder)[0])
    unchanged = min(run_measured(fetch, folder)[0] for _ in range(repeats))
    return help_seconds, min(first), unchanged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a quick check that it runs: no latency runs, a 2,000-item big feed, 3 repeats")
    quick = parser.parse_args().quick
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as name:
        tmp = Path(name)
        print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
        met = {}
        for delay in (0.0,) if quick else (0.0, 0.1):
            fresh = compare_runs(tmp, delay)
            met[("fresh command", delay)] = print_runs(fresh, delay, "each run a fresh command (`digest fetch` / `r2e run`)")
            if not delay:
                digest_floor, r2e_floor = import_floor(tmp)
                print(f"imports alone, in a fresh interpreter: digest {digest_floor:.2f} s (SQLAlchemy, httpx, click, "
                      f"rich), rss2email {r2e_floor:.2f} s; rss2email's whole first run {fresh[0][4]:.2f} s, "
                      f"so a fresh digest run >= 2x faster would have {fresh[0][4] / 2 - digest_floor:.2f} s left "
                      "to fetch, parse and store 500 items")
            met[("warm process", delay)] = print_runs(compare_warm(tmp, delay), delay,
                                                      "each tool's runs inside one warm process (as `digest run` does)")
        print("\nfirst run >= 2x rss2email and a 304 on every unchanged run: " + "; ".join(
            f"{how}, {'no added latency' if not delay else f'{delay * 1000:.0f} ms latency'}: {'met' if ok else 'MISSED'}"
            for (how, delay), ok in met.items()))
        big_items = BIG_ITEMS // 10 if quick else BIG_ITEMS
        elapsed, peak, detail = big_feed(tmp, big_items)
        print(f"\none {big_items:,}-item feed ({detail}): {elapsed:.1f} s, peak memory {peak:.0f} MB "
              f"(target for {BIG_ITEMS:,} items < 15 s and < 400 MB: "
              f"{'met' if elapsed < 15 and peak < 400 else 'MISSED'})")
        help_seconds, first, unchanged = startup(tmp, 3 if quick else 10)
        print(f"\nfresh-command start-up, best of {3 if quick else 10}: `digest --help` {help_seconds:.2f} s; "
              f"`digest fetch` on the bundled samples (5 local feeds) {first:.2f} s with every item new, "
              f"{unchanged:.2f} s with every file unchanged (target: a weekly job may take up to 1 s to start)")
        print(f"\nload average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
