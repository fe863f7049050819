"""Compose: a 60-item issue against 50,000 stored items (SQLite), related content included.

Side by side, in one run (median of 5 each):
  - `build_issue` end to end (store reads, compose, related links, manifest, save; a refresh);
  - the compose step alone (store reads + compose_issue with related links);
  - related links with the candidate pool build_issue uses vs. with all 50,000 stored items
    (why the pool exists).
Target: composing the 60-item issue, related included, under 1 s.

Run: .venv/bin/python bench/bench_compose.py
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digest.config import settings_from_dict  # noqa: E402
from digest.models import EventInfo, Item, ItemKind, Window  # noqa: E402
from digest.pipeline.issues import build_issue, compose_window  # noqa: E402
from digest.related import find_related  # noqa: E402
from digest.store import open_store  # noqa: E402
from digest.store.items import items_between, iter_items, save_items  # noqa: E402

STORED, ISSUE_ITEMS, RUNS = 50_000, 60, 5
NOW = datetime(2026, 11, 23, 8, tzinfo=UTC)
SERIES = [("esa-security-defence", "Security & Defence"), ("esa-economy-trade", "Economy & Trade"),
          ("esa-digital-technology", "Digital & Technology"), ("democracy", "Democracy"), ("climate", "Climate")]
WORDS = ("strategic autonomy defence procurement trade resilience digital sovereignty semiconductors energy "
         "transition enlargement rule law cohesion budget migration climate industrial policy council commission "
         "parliament member states cooperation security supply chains nato ukraine china tariffs green deal "
         "artificial intelligence data platforms elections democracy media freedom housing labour wages").split()
KINDS = [ItemKind.BRIEF] * 4 + [ItemKind.ARTICLE] * 2 + [ItemKind.NEWS] * 3 + [ItemKind.EVENT, ItemKind.MEDIA]


def make_item(rng: random.Random, n: int, published: datetime) -> Item:
    kind = rng.choice(KINDS)
    series = tuple(s for s, _ in rng.sample(SERIES, rng.choice([0, 1, 1, 1, 2])))
    words = " ".join(rng.choice(WORDS) for _ in range(40))
    event = EventInfo(start=published + timedelta(days=rng.randint(-10, 90)), location="Brussels") if kind == ItemKind.EVENT else None
    return Item(key=f"https://www.example.org/?p={n}", feed=kind.value, kind=kind,
                title=" ".join(rng.choice(WORDS) for _ in range(8)).capitalize(),
                url=f"https://www.example.org/{kind.value}/{n}/", published=published,
                categories=tuple(rng.sample(WORDS, 3)), series=series, language="en",
                summary_html=f"<p>{words}</p>", event=event)


def fill_store(engine) -> None:
    rng = random.Random(7)
    old = [make_item(rng, n, NOW - timedelta(days=8 + rng.random() * 3650)) for n in range(STORED - ISSUE_ITEMS)]
    week = [make_item(rng, STORED + n, NOW - timedelta(days=rng.random() * 6.9)) for n in range(ISSUE_ITEMS)]
    for start in range(0, len(old), 5000):
        save_items(engine, old[start:start + 5000], now=NOW - timedelta(days=1))
    save_items(engine, week, now=NOW - timedelta(days=1))


def median_seconds(func, runs: int = RUNS) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = settings_from_dict({
            "store": {"url": f"sqlite:///{tmp}/bench.db"},
            "series": [{"id": s, "name": name, "url": f"https://www.example.org/series/{s}/"} for s, name in SERIES],
        }, base_dir=Path(tmp))
        engine = open_store(settings.store.url)
        started = time.perf_counter()
        fill_store(engine)
        print(f"store: {STORED:,} items saved in {time.perf_counter() - started:.1f} s (setup, not measured)")
        window = Window(NOW - timedelta(days=7), NOW)
        issue = build_issue(settings, engine, NOW)
        placed = [e.item for s in issue.sections for e in s.entries]
        new = [i for i in placed if window.contains(i.effective_published)]
        print(f"issue: {len(placed)} entries ({len(new)} new in the window, the rest upcoming events)")

        build = median_seconds(lambda: build_issue(settings, engine, NOW))
        compose = median_seconds(lambda: compose_window(settings, engine, window, NOW, issue.editorial))
        everything = list(iter_items(engine))
        week = items_between(engine, window.start, window.end)
        from digest.related import POOL_RECENT
        from digest.store.items import latest_items
        pool = latest_items(engine, POOL_RECENT)
        pooled = median_seconds(lambda: find_related(placed, pool, [s for s, _ in SERIES], 3, NOW))
        full = median_seconds(lambda: find_related(placed, everything, [s for s, _ in SERIES], 3, NOW), runs=2)
        engine.dispose()
    print(f"\n{'step':<52}{'median':>10}")
    print(f"{'build_issue (reads, compose, related, save)':<52}{build * 1000:>8.0f} ms")
    print(f"{'compose step (reads + compose_issue + related)':<52}{compose * 1000:>8.0f} ms   target < 1000 ms")
    print(f"{'related only, candidate pool (' + str(len(pool)) + ' recent)':<52}{pooled * 1000:>8.0f} ms")
    print(f"{'related only, all ' + format(len(everything), ',') + ' stored items':<52}{full * 1000:>8.0f} ms")
    print(f"\nall items vs pool: {full / pooled:.1f}x slower; window items: {len(week)}")


if __name__ == "__main__":
    main()
