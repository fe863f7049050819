"""A store-managed feed's fields from untrusted input (a form, an OPML file, a command line), checked once.

Feeds added from the admin, the CLI or OPML are fetched by the server, so only http(s) URLs with a
host are taken (no local files, unlike [[feeds]] in digest.toml, which the server's owner writes).
Names lose surrounding and repeated spaces and must hold no control characters. Pure.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from .config import MAX_FEED_NAME_CHARS
from .models import Feed, ItemKind
from .unsafe_chars import BIDI_CONTROLS, CONTROLS

MAX_URL_CHARS = 2000  # the store's column
DEFAULT_KIND = ItemKind.BRIEF  # as for [[feeds]] without a kind
KINDS = tuple(k.value for k in ItemKind)
_UNSAFE = re.compile(f"[{CONTROLS}{BIDI_CONTROLS}]")
_LANGUAGE = re.compile(r"[a-z]{2}")


class InvalidFeed(ValueError):
    """A field is not acceptable; the message says which and how to fix it."""


def make_feed(name: str, url: str, kind: str | None = None, language: str | None = None) -> Feed:
    """A Feed from typed text, or InvalidFeed naming the first problem."""
    return Feed(name=feed_name(name), url=feed_url(url), kind=feed_kind(kind), language=feed_language(language))


def feed_name(name: str) -> str:
    cleaned = " ".join(str(name).split())
    if not cleaned:
        raise InvalidFeed("the feed needs a name")
    if _UNSAFE.search(cleaned):
        raise InvalidFeed("the feed name holds control characters; type it again")
    if len(cleaned) > MAX_FEED_NAME_CHARS:
        raise InvalidFeed(f"the feed name is {len(cleaned)} characters long; use at most {MAX_FEED_NAME_CHARS}")
    return cleaned


def feed_url(url: str) -> str:
    url = str(url).strip()
    if not url:
        raise InvalidFeed("the feed needs a URL, e.g. https://www.example.org/feed/")
    if problem := http_url_problem(url, "https://www.example.org/feed/"):
        raise InvalidFeed(problem)
    return url


def http_url_problem(url: str, example: str) -> str | None:
    """Why `url` (typed by staff, stripped, not empty) is no usable http(s) URL with a host; None when it is.

    The one check of a URL staff type in (feeds, series pages); `example` is offered in the message.
    """
    shown = _UNSAFE.sub("?", url if len(url) <= 80 else url[:77] + "…")
    if len(url) > MAX_URL_CHARS:
        return f"the URL is {len(url)} characters long; use at most {MAX_URL_CHARS}"
    if _UNSAFE.search(url) or any(c.isspace() for c in url):
        return f"{shown!r} holds spaces or control characters; it is not an http(s) URL"
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return f"{shown!r} is not an http(s) URL; use e.g. {example}"
    if parts.scheme.lower() not in ("http", "https") or not host:
        return f"{shown!r} is not an http(s) URL; use e.g. {example}"
    return None


def feed_kind(kind: str | None) -> ItemKind:
    if kind is None or not str(kind).strip():
        return DEFAULT_KIND
    try:
        return ItemKind(str(kind).strip().lower())
    except ValueError:
        shown = _UNSAFE.sub("?", str(kind))[:40]
        raise InvalidFeed(f"the kind {shown!r} is unknown; use one of {', '.join(KINDS)}") from None


def feed_language(language: str | None) -> str | None:
    if language is None or not str(language).strip():
        return None
    code = str(language).strip().lower()
    if not _LANGUAGE.fullmatch(code):
        shown = _UNSAFE.sub("?", str(language))[:20]
        raise InvalidFeed(f"the language {shown!r} is not a two-letter code such as \"de\"")
    return code
