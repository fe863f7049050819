"""Feed autodiscovery: the feed links a web page announces, for "did you mean …/feed/?".

A page names its feeds with `<link rel="alternate" type="application/rss+xml" href="…">` (or
atom+xml, or rdf). Pure and bounded: only the first MAX_BYTES of the page are read, with the
standard library's tolerant HTML parser; only http(s) links come back, resolved against the
address the page was fetched from, in page order without repeats.
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

MAX_BYTES = 256 * 1024
MAX_LINKS = 5
FEED_TYPES = frozenset({"application/rss+xml", "application/atom+xml", "application/rdf+xml",
                        "application/feed+json", "application/json"})


class _FeedLinks(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.base: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: (value or "") for name, value in attrs}
        if tag == "base" and self.base is None and values.get("href"):
            self.base = values["href"].strip()
        if tag != "link" or len(self.hrefs) >= MAX_LINKS:
            return
        rels = values.get("rel", "").lower().split()
        kind = values.get("type", "").split(";")[0].strip().lower()
        if "alternate" in rels and kind in FEED_TYPES and kind != "application/json" and values.get("href", "").strip():
            self.hrefs.append(values["href"].strip())


def discover_feeds(page: bytes, page_url: str) -> list[str]:
    """The feed URLs `page` (HTML fetched from `page_url`) announces, absolute, http(s) only; [] when none."""
    text = page[:MAX_BYTES].decode("utf-8", errors="replace")
    finder = _FeedLinks()
    try:
        finder.feed(text)
        finder.close()
    except (AssertionError, ValueError):  # HTMLParser gives up on some broken markup: keep what it found
        pass
    base = urljoin(page_url, finder.base) if finder.base else page_url
    found: list[str] = []
    for href in finder.hrefs:
        url = urljoin(base, href)
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.hostname and url != page_url and url not in found:
            found.append(url)
    return found


_SUGGESTION = " — did you mean "


def with_suggestion(message: str, feeds: list[str]) -> str:
    """`message` with "— did you mean URL?" naming the first discovered feed (unchanged when there is none)."""
    return f"{message}{_SUGGESTION}{feeds[0]}?" if feeds else message


def suggested_feed(message: str) -> str | None:
    """The feed URL a message made by with_suggestion names, or None."""
    head, found, tail = message.rpartition(_SUGGESTION)
    if not found or not tail.endswith("?"):
        return None
    url = tail[:-1]
    return url if urlsplit(url).scheme in ("http", "https") and " " not in url else None
