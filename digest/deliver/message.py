"""Personalised MIME messages at wire speed: one template per segment, filled per subscriber.

`MessageTemplate.from_settings(settings, edition)` does the expensive work once per (segment,
language): it takes the render.Edition already cut at its per-subscriber placeholders, quoted-printable
encodes every static chunk (C speed, `binascii.b2a_qp`) and pre-renders every header that is the same
for all subscribers. `build_for(email, name, values)` then encodes only the few per-subscriber
values (escaped exactly as render.personalise does) and joins bytes.

Joining separately encoded chunks is valid quoted-printable because every chunk ends on a line
break: a hard one it already had, or a soft one (`=` CRLF) that decoders drop. The boundary starts
with `=_`, which quoted-printable output can never contain.
"""

from __future__ import annotations

import binascii
import itertools
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parseaddr

from ..addresses import LABEL, address_problem, ascii_domain
from ..config import Settings
from ..render import PLACEHOLDERS, Edition, personalise, placeholder
from .dkim import DkimSigner, signer_from_settings
from .transport import OutgoingMessage

UNSUBSCRIBE_URL = "unsubscribe_url"
CRLF = b"\r\n"
_SOFT_BREAK = b"=\r\n"
_QP_LINE = 76
_WORD_BYTES = 42  # UTF-8 bytes per encoded word: "=?utf-8?b?" + 56 + "?=" = 68 characters
_URL_RE = re.compile(r"https?://[!#$%&'()*+,\-./0-9:;=?@A-Z\[\]_a-z~]+")
_MSGID_RE = re.compile(r"<[!-;=?-~]+@[A-Za-z0-9.-]+>")
# Whitespace of any kind (CR, LF, U+2028/9, U+0085 ...), C0/C1 controls incl. NUL, lone surrogates.
_BREAKING = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]+")
_ATOM_SAFE = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]*")
_LANGUAGE_RE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")


class HeaderError(ValueError):
    """A value cannot go into a header safely (bad address, URL or Message-ID); names the value."""


# --- header values ------------------------------------------------------------------------------

def clean_header_text(text: str) -> str:
    """One line of text: controls, CR, LF, NUL, U+2028/9 and other separators become spaces."""
    return _BREAKING.sub(" ", text).strip(" ")


def check_address(address: str) -> str:
    """The address in ASCII (IDNA domain) if it is a plain `local@domain` (addresses.address_problem); else HeaderError."""
    address = address.strip()
    problem = address_problem(address)
    if problem:
        raise HeaderError(f"invalid email address {address!r}: {problem}")
    local, _, domain = address.rpartition("@")
    return f"{local}@{ascii_domain(domain)}"


def encoded_words(text: str) -> list[str]:
    """RFC 2047 UTF-8 "B" words of at most 68 characters, never splitting a character.

    Words end after a space where one is near: Python's address parser (unlike RFC 2047 and mail
    clients) keeps the folding whitespace between two encoded words, so a cut inside a word would
    show there as a stray space.
    """
    words, chunk, size = [], "", 0
    for char in text:
        n = len(char.encode("utf-8"))
        if size + n > _WORD_BYTES:
            space = chunk.rfind(" ") + 1
            rest = chunk[space:] if space else ""
            if len(rest.encode("utf-8")) + n > _WORD_BYTES:
                rest = ""
            words.append(_b_word(chunk[:len(chunk) - len(rest)]))
            chunk, size = rest, len(rest.encode("utf-8"))
        chunk += char
        size += n
    if chunk:
        words.append(_b_word(chunk))
    return words


def _b_word(text: str) -> str:
    return "=?utf-8?b?" + binascii.b2a_base64(text.encode("utf-8"), newline=False).decode("ascii") + "?="


def _fold(name: str, words: Iterable[str]) -> str:
    """`Name: w1 w2 ...` folded before a word whenever the line would pass 78 characters."""
    lines, line = [], name + ":"
    for word in words:
        if len(line) + 1 + len(word) > 78 and line != name + ":":
            lines.append(line)
            line = ""
        line += " " + word
    lines.append(line)
    return "\r\n".join(lines) + "\r\n"


def subject_header(subject: str) -> str:
    """`Subject:` line(s): one logical line whatever the input; RFC 2047 words when not plain ASCII."""
    subject = clean_header_text(subject)
    words = subject.split(" ")
    if subject.isascii() and "=?" not in subject and all(len(w) < 70 for w in words):
        return _fold("Subject", words)
    return _fold("Subject", encoded_words(subject))


def display_name_words(name: str) -> list[str]:
    """Header words for a display name: a quoted string when plain ASCII, else RFC 2047 words."""
    name = clean_header_text(name)
    if not name:
        return []
    words = ('"' + name + '"').split(" ")
    if name.isascii() and "=?" not in name and _ATOM_SAFE.fullmatch(name) and all(len(w) < 70 for w in words):
        return words  # a quoted string may fold at its spaces: unfolding gives the same name back
    return encoded_words(name)


def format_address(name: str, address: str) -> list[str]:
    """Header words for `name <address>`; the address is checked (HeaderError) and last."""
    address = check_address(address)
    words = display_name_words(name)
    return [*words, f"<{address}>"] if words else [address]


def check_url(url: str) -> str:
    """An http(s) URL safe inside `<...>` in a header (no spaces, brackets or controls); else HeaderError."""
    if len(url) > 900 or not _URL_RE.fullmatch(url):
        raise HeaderError(f"URL {url[:100]!r} cannot go into List-Unsubscribe: it must be an absolute http(s) "
                          "URL without spaces, quotes or angle brackets, at most 900 characters")
    return url


# --- bodies ---------------------------------------------------------------------------------------

def encode_qp(text: str) -> bytes:
    """Quoted-printable UTF-8, CRLF line breaks, lines of at most 76, ending on a (hard or soft) break.

    The result is in DKIM canonical form (RFC 6376 3.4.4), so relaxed body canonicalisation changes
    nothing and the signer hashes the bytes as they are: no tab, no space at the end of a line or
    after another space (such whitespace is encoded, "=09", "=20").
    """
    if _QP_PLAIN.fullmatch(text) and text != "." and "  " not in text:
        return _plain_qp(text.encode("ascii"))
    return _encode_qp_general(text)


# One line of printable ASCII without "=" and without a space at either end: what the per-subscriber
# values (names, addresses, URLs) mostly are. b2a_qp leaves such text as it is and only wraps it.
_QP_PLAIN = re.compile(r"[!-<>-~]([ -<>-~]*[!-<>-~])?")
_REPEATED_SPACE = re.compile(rb"(?<= ) ")  # a space right after another: "a  b" becomes "a =20b"


def _plain_qp(data: bytes) -> bytes:
    """Byte for byte what _encode_qp_general makes of a _QP_PLAIN line, without its passes.

    b2a_qp cuts lines longer than 76 after 75 characters; the last line then gets the soft break,
    so at 76 characters it is cut once more after 74 (as _rewrap does).
    """
    pieces = []
    while len(data) > _QP_LINE:
        pieces.append(data[:_QP_LINE - 1])
        data = data[_QP_LINE - 1:]
    pieces += [data[:_QP_LINE - 2], data[_QP_LINE - 2:]] if len(data) == _QP_LINE else [data]
    return _SOFT_BREAK.join(pieces) + _SOFT_BREAK


def _encode_qp_general(text: str) -> bytes:
    if not text:
        return b""
    data = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    # b2a_qp encodes whitespace before a line break only; tabs and repeated spaces inside a line are
    # encoded here, which may lengthen a line: _rewrap below cuts it again.
    encoded = _REPEATED_SPACE.sub(b"=20", binascii.b2a_qp(data, istext=True).replace(b"\t", b"=09"))
    open_end = not encoded.endswith(b"\n")
    if len(encoded) >= _QP_LINE:
        # b2a_qp can leave a line at 77 (a trailing space it encodes as "=20"); the open last line needs
        # room for the soft break added below.
        lines = encoded.split(b"\n")
        last = len(lines) - 1
        encoded = b"\n".join(_rewrap(line, _QP_LINE - (open_end and i == last)) for i, line in enumerate(lines))
    encoded = encoded.replace(b"\n", CRLF)
    return encoded + _SOFT_BREAK if open_end else encoded


def _rewrap(line: bytes, limit: int) -> bytes:
    """A quoted-printable line cut with soft breaks into lines of at most `limit`, never inside "=XX"."""
    pieces = []
    while len(line) > limit:
        cut = limit - 1
        while line[cut - 1:cut] == b"=" or line[cut - 2:cut - 1] == b"=":
            cut -= 1
        pieces.append(line[:cut] + b"=")
        line = line[cut:]
    pieces.append(line)
    return b"\n".join(pieces)


# Slot contexts: a value in the text part, in HTML text, in an HTML attribute.
TEXT, HTML_TEXT, HTML_ATTRIBUTE = "text", "html", "attribute"

# render.personalise is the one definition of how values are cleaned and escaped. Filling this probe
# edition (each placeholder once per context, separated by line breaks, which values never contain) yields
# exactly the strings personalise would put into each slot, at the cost of a tiny edition.
_PROBE = Edition(
    html="<p>" + "\n".join(placeholder(n) for n in PLACEHOLDERS) + '</p><a title="' + "\n".join(placeholder(n) for n in PLACEHOLDERS) + '">',
    text="\n".join(placeholder(n) for n in PLACEHOLDERS), subject="", preheader="", language="en", segment_id="probe")


def slot_values(values: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """{context: {placeholder: value as personalise fills it}}; KeyError/ValueError as personalise raises."""
    html, text = personalise(_PROBE, values)
    in_html, in_attribute = html[len("<p>"):-len('">')].split('</p><a title="')
    return {TEXT: dict(zip(PLACEHOLDERS, text.split("\n"), strict=True)),
            HTML_TEXT: dict(zip(PLACEHOLDERS, in_html.split("\n"), strict=True)),
            HTML_ATTRIBUTE: dict(zip(PLACEHOLDERS, in_attribute.split("\n"), strict=True))}


@dataclass(frozen=True)
class _Part:
    """One MIME part: quoted-printable static chunks around (placeholder, context) slots."""

    chunks: tuple[bytes, ...]
    slots: tuple[tuple[str, str], ...]

    @classmethod
    def prepare(cls, parts: tuple[str, ...], slots: tuple[tuple[int, str, bool], ...], is_html: bool) -> _Part:
        """From an Edition's parts and slots (index, placeholder, in_attribute)."""
        chunks, kinds, start = [], [], 0
        for index, name, in_attribute in slots:
            chunks.append(encode_qp("".join(parts[start:index])))
            kinds.append((name, (HTML_ATTRIBUTE if in_attribute else HTML_TEXT) if is_html else TEXT))
            start = index + 1
        chunks.append(encode_qp("".join(parts[start:])))
        return cls(tuple(chunks), tuple(kinds))

    def fill(self, filled: Mapping[str, Mapping[str, str]]) -> list[bytes]:
        out = [self.chunks[0]]
        for (name, context), chunk in zip(self.slots, self.chunks[1:], strict=True):
            out.append(encode_qp(filled[context][name]))
            out.append(chunk)
        return out


# --- the template ---------------------------------------------------------------------------------

class MessageTemplate:
    """A segment's message, built once from its Edition; `build_for()` makes each subscriber's message."""

    def __init__(self, edition: Edition, *, sender: str, issue_values: Mapping[str, str] | None = None,
                 reply_to: str = "", list_id: str = "", unsubscribe_mailto: str = "",
                 signer: DkimSigner | None = None, clock: Callable[[], datetime] | None = None) -> None:
        sender_name, sender_address = parseaddr(sender)
        self.envelope_from = check_address(sender_address)
        self.domain = self.envelope_from.rpartition("@")[2]
        self.issue_values = dict(issue_values or {})
        self._text = _Part.prepare(edition.text_parts, edition.text_slots, is_html=False)
        self._html = _Part.prepare(edition.html_parts, edition.html_slots, is_html=True)
        self._signer = signer
        self._clock = clock
        self._date_cache: tuple[int, bytes] = (-1, b"")
        self._id_prefix = f"{secrets.token_hex(6)}.{int(time.time()):x}"
        self._counter = itertools.count(1)
        self._mailto = f"<mailto:{check_address(unsubscribe_mailto)}?subject=unsubscribe>" if unsubscribe_mailto else ""
        boundary = "=_digest_" + secrets.token_hex(12)
        self._from = _fold("From", format_address(sender_name, self.envelope_from)).encode("ascii")
        self._subject = subject_header(edition.subject).encode("ascii")
        self._static = self._static_headers(reply_to, list_id or f"<digest.{self.domain}>", boundary)
        self._text_head = (f"--{boundary}\r\nContent-Type: text/plain; charset=\"utf-8\"\r\n"
                           "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode("ascii")
        self._html_head = (f"\r\n--{boundary}\r\nContent-Type: text/html; charset=\"utf-8\"\r\n"
                           "Content-Transfer-Encoding: quoted-printable\r\n\r\n").encode("ascii")
        self._tail = f"\r\n--{boundary}--\r\n".encode("ascii")

    @classmethod
    def from_settings(cls, settings: Settings, edition: Edition,
                      issue_values: Mapping[str, str] | None = None) -> MessageTemplate:
        """The template for one (segment, language) with [delivery] headers and DKIM from settings.

        Raises HeaderError for a bad sender, reply_to, list_id or unsubscribe_mailto, DkimError for DKIM.
        """
        d = settings.delivery
        return cls(edition, sender=sender_of(settings), issue_values=issue_values, reply_to=d.reply_to, list_id=d.list_id,
                   unsubscribe_mailto=d.unsubscribe_mailto, signer=signer_from_settings(settings))

    def build_for(self, email: str, name: str = "", values: Mapping[str, str] | None = None, *,
                  message_id: str | None = None) -> OutgoingMessage:
        """One subscriber's finished message.

        `values` are the per-subscriber placeholder values (render.PLACEHOLDERS; "name" and "email" default to the
        arguments, issue_values fill the rest); unsubscribe_url also goes into List-Unsubscribe.
        Raises HeaderError for an unusable address, URL or Message-ID; KeyError/ValueError as
        render.personalise does for missing or unsafe values.
        """
        to_words = format_address(name, email)
        address = to_words[-1].strip("<>")
        filled = slot_values({"name": name, "email": address, **self.issue_values, **(values or {})})
        unsubscribe = check_url(filled[TEXT][UNSUBSCRIBE_URL])
        message_id = self._message_id(message_id)
        list_unsub = f"<{unsubscribe}>, {self._mailto}" if self._mailto else f"<{unsubscribe}>"
        pieces = [self._from, _fold("To", to_words).encode("ascii"), self._subject, self._date(),
                  b"Message-ID: " + message_id.encode("ascii") + CRLF,
                  _fold("List-Unsubscribe", list_unsub.split(" ")).encode("ascii"), self._static,
                  self._text_head, *self._text.fill(filled), self._html_head, *self._html.fill(filled), self._tail]
        data = b"".join(pieces)
        if self._signer is not None:
            data = self._signer.sign(data, canonical_body=True)  # encode_qp and the MIME frame are canonical
        return OutgoingMessage(envelope_from=self.envelope_from, recipients=(address,), data=data,
                               message_id=message_id)

    def _message_id(self, given: str | None) -> str:
        if given is None:
            return f"<{self._id_prefix}.{next(self._counter)}@{self.domain}>"
        if not _MSGID_RE.fullmatch(given) or len(given) > 250:
            raise HeaderError(f"invalid Message-ID {given[:100]!r}: use <unique-part@domain> without spaces")
        return given

    def _date(self) -> bytes:
        if self._clock is not None:
            return b"Date: " + format_datetime(self._clock()).encode("ascii") + CRLF
        now = int(time.time())
        if self._date_cache[0] != now:
            stamp = format_datetime(datetime.fromtimestamp(now, UTC))
            self._date_cache = (now, b"Date: " + stamp.encode("ascii") + CRLF)
        return self._date_cache[1]

    def _static_headers(self, reply_to: str, list_id: str, boundary: str) -> bytes:
        lines = []
        if reply_to:
            reply_name, reply_address = parseaddr(reply_to)
            lines.append(_fold("Reply-To", format_address(reply_name, reply_address)))
        lines.append(_fold("List-Id", _list_id_words(list_id)))
        lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
        lines.append("MIME-Version: 1.0\r\n")
        lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n')
        lines.append("\r\n")
        return "".join(lines).encode("ascii")


# --- notes: one plain-text part ------------------------------------------------------------------

def build_note(settings: Settings, *, to: str, subject: str, text: str, name: str = "", language: str = "",
               now: datetime | None = None, html: str = "") -> OutgoingMessage:
    """A message from digest to one person: confirmations, staff notes, invites; text/plain, or with
    `html` a multipart/alternative of both (the edition's MIME shape).

    The same rules as editions: CRLF only, headers from the safe helpers above (no CRLF injection
    through `subject` or `name`), quoted-printable UTF-8 body, DKIM-signed when `[delivery.dkim]` is
    set. Unlike editions it is not list mail: `Auto-Submitted: auto-generated` (RFC 3834, so
    vacation responders stay quiet), no List-* headers. Raises HeaderError for a bad address,
    sender, reply_to or language tag, DkimError for unusable DKIM settings.
    """
    d = settings.delivery
    sender_name, sender_address = parseaddr(sender_of(settings))
    envelope_from = check_address(sender_address)
    to_words = format_address(name, to)
    recipient = to_words[-1].strip("<>")
    lines = [_fold("From", format_address(sender_name, envelope_from)), _fold("To", to_words), subject_header(subject),
             f"Date: {format_datetime(now or datetime.now(UTC))}\r\n"]
    message_id = new_message_id(envelope_from.rpartition("@")[2])
    lines.append(f"Message-ID: {message_id}\r\n")
    if d.reply_to:
        reply_name, reply_address = parseaddr(d.reply_to)
        lines.append(_fold("Reply-To", format_address(reply_name, reply_address)))
    lines += ["Auto-Submitted: auto-generated\r\n", "MIME-Version: 1.0\r\n"]
    # Trailing empty lines would be dropped by DKIM body canonicalisation: the body is canonical without them.
    body = encode_qp(text.rstrip("\r\n") + "\n") if text.strip("\r\n") else CRLF
    if html:
        boundary = "=_digest_" + secrets.token_hex(12)
        lines.append(f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n')
        head = ('Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n')
        body = b"".join([f"--{boundary}\r\n{head.format('plain')}".encode("ascii"), body,
                         f"\r\n--{boundary}\r\n{head.format('html')}".encode("ascii"),
                         encode_qp(html.rstrip("\r\n") + "\n"), f"\r\n--{boundary}--\r\n".encode("ascii")])
    else:
        lines += ['Content-Type: text/plain; charset="utf-8"\r\n', "Content-Transfer-Encoding: quoted-printable\r\n"]
    if language:
        lines.append(f"Content-Language: {check_language(language)}\r\n")
    data = "".join(lines).encode("ascii") + CRLF + body
    signer = signer_from_settings(settings)
    if signer is not None:
        data = signer.sign(data, canonical_body=bool(html or text.strip("\r\n")))
    return OutgoingMessage(envelope_from=envelope_from, recipients=(recipient,), data=data, message_id=message_id)


def new_message_id(domain: str) -> str:
    """A fresh `<random.time@domain>` Message-ID."""
    return f"<{secrets.token_hex(8)}.{int(time.time()):x}@{domain}>"


def check_language(tag: str) -> str:
    """A BCP 47 language tag fit for Content-Language ("fr", "de-CH"); else HeaderError."""
    if not _LANGUAGE_RE.fullmatch(tag):
        raise HeaderError(f"invalid language tag {tag[:20]!r}: use a code such as en, fr or de")
    return tag


def _list_id_words(list_id: str) -> list[str]:
    """`List-Id` words: an optional description and `<label.domain>` (RFC 2919)."""
    description, _, rest = clean_header_text(list_id).rpartition("<")
    labels = rest.removesuffix(">").strip().split(".")
    if len(labels) < 2 or not all(LABEL.fullmatch(part) for part in labels):
        raise HeaderError(f"'delivery.list_id' is {list_id!r}: use \"Description <digest.example.org>\"")
    return [*display_name_words(description.strip()), f"<{'.'.join(labels)}>"]


def sender_of(settings: Settings) -> str:
    """delivery.sender with the branding's sender name, when one is set, as its display name."""
    name, address = parseaddr(settings.delivery.sender)
    name = settings.branding.sender_name or name
    if not name:
        return address
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{address}>'
