"""Rendering: compiling an edition (Jinja2 → MJML → css-inline) versus filling its tokens per subscriber.

For the demo-like issue and the 60-item issue (the test fixtures in tests/render_fixtures.py), in en,
fr and de: milliseconds per compiled edition, then per-subscriber throughput of `personalise` (split
once, join per subscriber) side by side with rendering each subscriber directly (Jinja2 + MJML +
css-inline per subscriber, `render_edition(..., values=...)`), measured in the same run.

Run: .venv/bin/python bench/bench_render.py
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from render_fixtures import all_sections, big_issue, demo_issue  # noqa: E402

from digest.config import settings_from_dict  # noqa: E402
from digest.render import personalise, render_edition  # noqa: E402


def values(n: int) -> dict[str, str]:
    return {"name": f"Reader {n}", "email": f"reader{n}@example.com",
            "unsubscribe_url": f"https://news.example.org/unsubscribe/{n:08d}.aBcDeFgHiJkLmNoP",
            "preferences_url": f"https://news.example.org/preferences/{n:08d}.aBcDeFgHiJkLmNoP",
            "view_url": "https://news.example.org/archive/12"}


def per_second(func, seconds: float = 2.0) -> float:
    count, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        func(count)
        count += 1
    return count / elapsed


def main() -> None:
    settings = settings_from_dict({}, base_dir=Path(tempfile.gettempdir()))
    print(f"{'issue':<8}{'lang':<6}{'HTML KiB':>9}{'compile ms':>12}{'fills/s':>11}{'direct/s':>10}{'ratio':>8}")
    for name, issue in (("demo", demo_issue()), ("60-item", big_issue())):
        for language in ("en", "fr", "de"):
            segment = all_sections(issue, language)
            render_edition(issue, segment, settings)  # warm the template cache
            started = time.perf_counter()
            edition = render_edition(issue, segment, settings)
            compile_ms = (time.perf_counter() - started) * 1000
            fills = per_second(lambda n, e=edition: personalise(e, values(n)))
            direct = per_second(lambda n, i=issue, s=segment, e=edition:
                                render_edition(i, s, settings, values=values(n), fit=e.fit))
            print(f"{name:<8}{language:<6}{edition.html_bytes / 1024:>9.1f}{compile_ms:>12.1f}"
                  f"{fills:>11,.0f}{direct:>10,.1f}{fills / direct:>7.0f}×")


if __name__ == "__main__":
    main()
