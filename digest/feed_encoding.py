"""Which character encoding a feed's bytes are read in, and why. Pure: bytes and a header in.

In order: a byte order mark (or the first bytes of a UTF-16/32 or EBCDIC document) is read by
feedparser as it is; else the charset the server sent in Content-Type, as RFC 3023 and feedparser
have it ("declared by the server"); else the document's XML declaration ("declared in the
document"); else UTF-8 when the bytes are UTF-8 (XML's default); else charset-normalizer's guess
("detected"). One exception to the server's word: a document that declares UTF-8 and is valid
UTF-8 beyond ASCII is UTF-8, whatever a server's default charset (often ISO-8859-1) says, since
single-byte text is practically never valid UTF-8 by chance.

When the chosen encoding does not decode the bytes, feedparser falls back to one that does, and
the feed's warning says so (digest.parse).
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

DECLARED_BY_SERVER = "declared by the server"
DECLARED_IN_DOCUMENT = "declared in the document"
DETECTED = "detected"
XML_DEFAULT = "XML's default, nothing being declared"
BYTE_ORDER_MARK = "from the document's byte order mark"
# What feedparser itself recognises before any declaration: BOMs, and the first bytes of `<?xml`
# in UTF-16/32 and EBCDIC.
_MARKERS = (codecs.BOM_UTF32_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF8,
            b"\x4c\x6f\xa7\x94", b"\x00\x3c\x00\x3f", b"\x3c\x00\x3f\x00", b"\x00\x00\x00\x3c", b"\x3c\x00\x00\x00")
_CHARSET = re.compile(r";\s*charset\s*=\s*[\"']?([A-Za-z0-9._:+-]{1,40})", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"^\s*<\?xml[^>]*?\sencoding\s*=\s*[\"']([A-Za-z0-9._:+-]{1,40})[\"']")
# charset-normalizer reads this much at most: enough text to judge, bounded cost on a 32 MB body.
_DETECTION_BYTES = 256 * 1024


@dataclass(frozen=True)
class EncodingChoice:
    """The encoding digest hands feedparser (None: feedparser's own reading) and why."""

    encoding: str | None
    reason: str


def choose_encoding(body: bytes, content_type: str | None) -> EncodingChoice:
    """The encoding to read `body` in, given the response's Content-Type (None for a local file)."""
    if body.startswith(_MARKERS):
        return EncodingChoice(None, BYTE_ORDER_MARK)
    server = _codec(_charset(content_type))
    declared_match = _XML_ENCODING.match(body[:1024])
    declared = _codec(declared_match.group(1).decode("ascii")) if declared_match else None
    if server:
        if declared == "utf-8" and server != "utf-8" and not body.isascii() and _is_utf8(body):
            return EncodingChoice(None, f"{DECLARED_IN_DOCUMENT}; the server's charset={server} does not fit the bytes")
        return EncodingChoice(server, DECLARED_BY_SERVER)
    if declared_match:
        return EncodingChoice(None, DECLARED_IN_DOCUMENT)
    if body.isascii() or _is_utf8(body):
        return EncodingChoice(None, XML_DEFAULT)
    detected = _detect(body)
    if detected:
        return EncodingChoice(detected, DETECTED)
    return EncodingChoice(None, "nothing declared and nothing detected")


def _charset(content_type: str | None) -> str | None:
    match = _CHARSET.search(content_type or "")
    return match.group(1) if match else None


def _codec(name: str | None) -> str | None:
    """Python's name for an encoding label ("KOI8-R" -> "koi8-r"), None when unknown."""
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _detect(body: bytes) -> str | None:
    from charset_normalizer import from_bytes  # imported only for the rare feed that needs it

    best = from_bytes(body[:_DETECTION_BYTES]).best()
    return _codec(best.encoding) if best is not None else None
