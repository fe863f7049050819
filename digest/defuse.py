"""A feed's raw bytes, checked and defused before feedparser reads them. Pure: bytes in, bytes out.

Three jobs, all on bytes because feedparser must never see the input first: `refusal` says why a
document must not be parsed at all (empty, an HTML page, a DTD that declares entities: billion
laughs, external entities); `trim_person_names` cuts author texts long enough to send feedparser's
quadratic e-mail regex into seconds of CPU; `replace_invalid_char_refs` turns references to
surrogates and other impossible characters, on which feedparser itself fails, into U+FFFD.
See docs/feeds.md.
"""

from __future__ import annotations

import re
import xml.parsers.expat

ERROR_EMPTY = "empty response: the feed sent no content; check the feed URL"
ERROR_ENTITIES = (
    "refused: the document's DTD declares entities (billion-laughs or external-entity attack, "
    "or an unusual feed); digest does not read such feeds, ask the publisher to remove the <!ENTITY> declarations"
)
ERROR_HTML = "not a feed: looks like an HTML page; point the feed URL at the RSS or Atom feed itself"
# Person-name elements longer than this many bytes are cut before feedparser reads them (see
# trim_person_names); digest.parse cuts names to 200 characters afterwards anyway.
MAX_PERSON_BYTES = 1024


# --- refusing what must not reach feedparser ------------------------------------------------------
class _RootFound(Exception):
    pass


class _EntityDeclared(Exception):
    pass


def refusal(body: bytes) -> str | None:
    """Why `body` must not reach feedparser (ERROR_EMPTY, ERROR_ENTITIES, ERROR_HTML), or None."""
    if not body or body.isspace():
        return ERROR_EMPTY
    root, declares_entities = _inspect_prologue(body)
    if declares_entities:
        return ERROR_ENTITIES
    if root is not None and root.rsplit(":", 1)[-1].lower() in ("html", "head", "body"):
        return ERROR_HTML
    if root is None and _looks_like_html(body):
        return ERROR_HTML
    return None


def _inspect_prologue(body: bytes) -> tuple[str | None, bool]:
    """(root element name, whether the DTD declares entities), reading no further than the root.

    expat reports entity declarations before anything expands them. When expat cannot read
    the prologue (bad encoding, HTML doctype), the document is decoded as feedparser will decode
    it (EBCDIC, an encoding expat does not know …) and looked at again; there any `<!ENTITY`
    in the raw or the decoded bytes counts.
    """
    root, declares_entities, readable = _expat_prologue(body)
    if readable:
        return root, declares_entities
    decoded = _as_feedparser_reads_it(body)
    if decoded is not None and decoded != body:
        root, declares_entities, readable = _expat_prologue(decoded)
        if readable:
            return root, declares_entities
    candidates = (body, decoded or b"")
    return None, any(_ENTITY_BYTES.search(c.replace(b"\x00", b"")) for c in candidates)


def _expat_prologue(body: bytes) -> tuple[str | None, bool, bool]:
    """(root element name, whether the DTD declares entities, whether expat could read that far)."""
    parser = xml.parsers.expat.ParserCreate()
    root: list[str] = []

    def on_entity(*_: object) -> None:
        raise _EntityDeclared

    def on_start(name: str, _: object) -> None:
        root.append(name)
        raise _RootFound

    parser.EntityDeclHandler = on_entity
    parser.UnparsedEntityDeclHandler = on_entity
    parser.StartElementHandler = on_start
    try:
        parser.Parse(body, True)
    except _EntityDeclared:
        return None, True, True
    except _RootFound:
        return root[0], False, True
    except Exception:  # noqa: BLE001 - ExpatError, LookupError (unknown encoding) …: not readable
        pass
    return None, False, False


def _as_feedparser_reads_it(body: bytes) -> bytes | None:
    """The document as UTF-8, decoded the way feedparser decodes it (declaration, BOM, sniffing)."""
    from feedparser.encodings import convert_to_utf8

    try:
        return convert_to_utf8({}, body, {})
    except Exception:  # noqa: BLE001 - an encoding feedparser cannot read either
        return None


_ENTITY_BYTES = re.compile(rb"<!\s*ENTITY", re.IGNORECASE)
_HTML_START = re.compile(rb"^\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>]|head[\s>]|body[\s>])", re.I | re.S)


def _looks_like_html(body: bytes) -> bool:
    head = body[:4096].lstrip(b"\xef\xbb\xbf")
    return _HTML_START.match(head) is not None


# --- defusing feedparser's slow path --------------------------------------------------------------
# feedparser looks for an e-mail address in every author-like text with a regex that is quadratic
# in a run of letters and digits: 60 KB of "a" in one <author> costs ~13 s of CPU, 1 KB ~3 ms.
# These are the elements whose text reaches that regex (RSS, Atom, Dublin Core, iTunes; any prefix).
_PERSON_ELEMENT = re.compile(
    rb"<(?:[A-Za-z_][\w.-]*:)?(?:author|creator|managingeditor|webmaster|publisher|contributor|owner|name|email)"
    rb"(?:\s[^<>]*)?(?<!/)>",
    re.IGNORECASE,
)
_CDATA_START, _CDATA_END = b"<![CDATA[", b"]]>"


def trim_person_names(body: bytes) -> bytes:
    """`body` with every author/creator/… text over MAX_PERSON_BYTES cut to about that size.

    A bytes-level pass, before feedparser: only character data is cut (plain text, or the inside
    of one CDATA section), never markup; each cut lands right after an ASCII byte and never inside
    an entity reference, which keeps the text valid in UTF-8 and every ASCII-compatible encoding.
    """
    pieces: list[bytes] = []
    done = 0
    for match in _PERSON_ELEMENT.finditer(body):
        start = match.end()
        if start < done:
            continue
        text_start, text_end = _person_text(body, start)
        if text_end - text_start <= MAX_PERSON_BYTES:
            continue
        cut = _safe_cut(body, text_start, text_start + MAX_PERSON_BYTES, text_end)
        pieces += [body[done:cut]]
        done = text_end
    if not pieces:
        return body
    return b"".join(pieces) + body[done:]


def _person_text(body: bytes, start: int) -> tuple[int, int]:
    """Where the character data after an opening tag at `start` begins and ends."""
    if body.startswith(_CDATA_START, start):
        text_start = start + len(_CDATA_START)
        end = body.find(_CDATA_END, text_start)
        return text_start, end if end >= 0 else text_start
    end = body.find(b"<", start)
    return start, end if end >= 0 else start


def _safe_cut(body: bytes, start: int, limit: int, end: int) -> int:
    """The last offset in (start, limit] just after an ASCII byte and outside an entity; else the first after."""
    cut = limit
    while cut > start and body[cut - 1] >= 0x80:
        cut -= 1
    if cut == start:  # no ASCII byte in the first MAX_PERSON_BYTES: no letter run to fear before the next one
        cut = limit
        while cut < end and body[cut - 1] >= 0x80:
            cut += 1
    ampersand = body.rfind(b"&", max(start, cut - 40), cut)  # entity names are short
    if ampersand >= 0 and body.find(b";", ampersand, cut) < 0:
        cut = ampersand
    return cut


# --- character references feedparser cannot take --------------------------------------------------
# feedparser turns `&#xD800;` into a lone surrogate and then fails encoding it: one such reference
# would cost the whole feed. References to what no XML document may hold (surrogates, NUL, beyond
# U+10FFFF) become U+FFFD before it sees them; everything else is left to it.
# Any number of digits: leading zeros (`&#x00000000000000000000D800;`) must not hide a surrogate, and
# a huge number must not reach int() unbounded (feedparser fails with OverflowError on it).
_CHAR_REF = re.compile(rb"&#(?:[xX]0*([0-9A-Fa-f]+)|0*([0-9]+));")
_REPLACEMENT_REF = b"&#xFFFD;"
_MAX_DIGITS = 7  # U+10FFFF is 6 hex and 7 decimal digits: more significant digits are past it


def replace_invalid_char_refs(body: bytes) -> bytes:
    """`body` with numeric character references to surrogates, NUL or code points past U+10FFFF replaced."""
    if b"&#" not in body:
        return body
    return _CHAR_REF.sub(_valid_char_ref, body)


def _valid_char_ref(match: re.Match[bytes]) -> bytes:
    hex_digits, decimal = match.groups()
    digits = hex_digits if hex_digits is not None else decimal
    if len(digits) > _MAX_DIGITS:
        return _REPLACEMENT_REF
    code = int(hex_digits, 16) if hex_digits is not None else int(decimal)
    if code == 0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        return _REPLACEMENT_REF
    return match.group(0)
