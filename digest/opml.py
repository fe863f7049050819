"""OPML 2.0 subscription lists, read and written. Pure: bytes in, feeds and problems out; feeds in, text out.

Reading takes every `<outline>` with an `xmlUrl`, nested in folders or not. Its name is `text`
(else `title`, else the URL's host); digest's kind is the attribute `digest:kind` in the namespace
DIGEST_NS (a plain `kind` attribute is read too), "brief" when absent; `language` is OPML 2.0's own
attribute ("en-us" reads as "en"); `digest:paused="true"` marks a paused feed. Other attributes are
ignored. An outline with a bad URL, kind or language is listed as "line N: why" and the others are
read. Hostile XML is refused before anything is read: a DOCTYPE (entities, billion laughs, external
entities), more than MAX_BYTES or MAX_OUTLINES. Writing gives an OPML 2.0 document that reading
gives back as it was.
"""

from __future__ import annotations

import xml.parsers.expat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

from .feed_fields import DEFAULT_KIND, InvalidFeed, make_feed
from .models import Feed

DIGEST_NS = "https://github.com/digest-email/digest/ns/opml"  # an identifier only; nothing is fetched from it
MAX_BYTES = 2 * 1024 * 1024
MAX_OUTLINES = 5000
_SEP = "\x1f"  # between a namespace URI and an attribute's local name (never in either)


class OpmlError(ValueError):
    """The file cannot be read at all (not OPML, not well-formed, hostile); nothing was imported."""


@dataclass(frozen=True)
class OpmlFeed:
    line: int
    feed: Feed
    paused: bool = False


@dataclass(frozen=True)
class OpmlRead:
    feeds: list[OpmlFeed]
    problems: list[str]  # "line 12: 'ftp://x' is not an http(s) URL …", in file order


class _Refused(Exception):
    pass


def read_opml(data: bytes) -> OpmlRead:
    """The feeds of an OPML document and a "line N: why" for each outline that cannot be one."""
    if len(data) > MAX_BYTES:
        raise OpmlError(f"the file is {len(data) // 1024} KiB; an OPML list of feeds is far smaller "
                        f"(at most {MAX_BYTES // 1024 // 1024} MiB is read)")
    if not data.strip():
        raise OpmlError("the file is empty")
    parser = xml.parsers.expat.ParserCreate(namespace_separator=_SEP)
    parser.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    reader = _Reader(parser)
    try:
        parser.Parse(data, True)
    except _Refused as exc:
        raise OpmlError(str(exc)) from None
    except xml.parsers.expat.ExpatError as exc:
        raise OpmlError(f"line {exc.lineno}: not well-formed XML ({xml.parsers.expat.ErrorString(exc.code)})") from None
    if reader.root != "opml":
        raise OpmlError(f"not an OPML file: the root element is <{reader.root or '?'}>, not <opml>")
    return OpmlRead(reader.feeds, reader.problems)


class _Reader:
    """expat handlers: collects the outlines with an xmlUrl as they start."""

    def __init__(self, parser: xml.parsers.expat.XMLParserType) -> None:
        self.parser = parser
        self.root: str | None = None
        self.feeds: list[OpmlFeed] = []
        self.problems: list[str] = []
        self.outlines = 0
        parser.StartDoctypeDeclHandler = self.doctype
        parser.EntityDeclHandler = self.entity
        parser.StartElementHandler = self.start

    def doctype(self, name: str, system_id: str | None, public_id: str | None, internal_subset: bool) -> None:
        raise _Refused("refused: the file has a DOCTYPE, which OPML never needs (it can declare entities: "
                       "billion laughs, external files); remove the <!DOCTYPE …> line")

    def entity(self, *args: object) -> None:
        raise _Refused("refused: the file declares entities (billion laughs or external entities)")

    def start(self, name: str, attributes: dict[str, str]) -> None:
        local = name.rsplit(_SEP, 1)[-1]
        if self.root is None:
            self.root = local
            if local != "opml":
                raise _Refused(f"not an OPML file: the root element is <{local}>, not <opml>")
        if local != "outline":
            return
        self.outlines += 1
        if self.outlines > MAX_OUTLINES:
            raise _Refused(f"the file has more than {MAX_OUTLINES} outlines; split it")
        attrs = {key.rsplit(_SEP, 1)[-1] if key.startswith(DIGEST_NS + _SEP) else key: value
                 for key, value in attributes.items() if _SEP not in key or key.startswith(DIGEST_NS + _SEP)}
        url = attrs.get("xmlUrl", "").strip()
        if not url:
            return  # a folder, or a link outline: nothing to fetch
        line = self.parser.CurrentLineNumber
        name_text = attrs.get("text", "").strip() or attrs.get("title", "").strip() or _host(url)
        language = attrs.get("language", "").strip().split("-")[0] or None
        try:
            feed = make_feed(name_text, url, attrs.get("kind"), language)
        except InvalidFeed as exc:
            self.problems.append(f"line {line}: {exc}")
            return
        self.feeds.append(OpmlFeed(line, feed, attrs.get("paused", "").strip().lower() == "true"))


def _host(url: str) -> str:
    try:
        return urlsplit(url.strip()).hostname or url
    except ValueError:
        return url


def write_opml(feeds: Sequence[tuple[Feed, bool]], title: str, now: datetime) -> str:
    """An OPML 2.0 document of (feed, paused) pairs, in order."""
    lines = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<opml version="2.0" xmlns:digest={quoteattr(DIGEST_NS)}>',
        "  <head>",
        f"    <title>{escape(title)}</title>",
        f"    <dateCreated>{escape(format_datetime(now))}</dateCreated>",
        "  </head>",
        "  <body>",
    ]
    for feed, paused in feeds:
        attributes = [("type", "rss"), ("text", feed.name), ("title", feed.name), ("xmlUrl", feed.url),
                      ("digest:kind", feed.kind.value)]
        if feed.language:
            attributes.append(("language", feed.language))
        if paused:
            attributes.append(("digest:paused", "true"))
        rendered = " ".join(f"{key}={quoteattr(value, {chr(10): '&#10;', chr(13): '&#13;', chr(9): '&#9;'})}"
                            for key, value in attributes)
        lines.append(f"    <outline {rendered}/>")
    lines += ["  </body>", "</opml>", ""]
    return "\n".join(lines)


__all__ = ["DEFAULT_KIND", "DIGEST_NS", "OpmlError", "OpmlFeed", "OpmlRead", "read_opml", "write_opml"]
