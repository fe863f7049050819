"""DKIM signatures (RFC 6376) on finished messages: RSA-SHA256, plus Ed25519-SHA256 (RFC 8463) when configured.

The keys are loaded once (dkim_keys.py; `signer_from_settings` keeps one signer per key file) and both
algorithms run in OpenSSL through `cryptography`. Per message the signer hashes the body, canonicalises
only the header fields it signs, and signs once per key.

The body is hashed exactly as it is sent when the caller vouches that it is canonical
(`sign(message, canonical_body=True)`): message.py builds every body so (CRLF lines, no tab, no
space before a line break or after another space, one final CRLF), and for such a body relaxed and
simple body canonicalisation change nothing (tests/test_dkim.py checks every edition the fixtures
render). Any other message is canonicalised first.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from ..addresses import dns_name_problem
from ..config import Settings
from .dkim_keys import DkimError, PrivateKey, cached_keys, load_private_key

__all__ = ["DkimError", "DkimKey", "DkimSigner", "canonicalize_body", "load_private_key", "signer_from_settings"]

RSA_SHA256, ED25519_SHA256 = "rsa-sha256", "ed25519-sha256"
RELAXED, SIMPLE = "relaxed/relaxed", "simple/simple"

# Which header fields are signed, after rspamd's defaults. Over-signing lists a field once more than the
# message has it, so a copy added in transit (a second From, a List-Unsubscribe pointing elsewhere)
# breaks the signature: the first group even when the message has none (no Reply-To or
# List-Unsubscribe may be added to a note), the second when present. The third group is only signed:
# relays add such fields (Exchange adds Content-Language).
OVERSIGNED_ALWAYS = ("From", "Reply-To", "To", "Subject", "List-Unsubscribe", "List-Unsubscribe-Post")
OVERSIGNED_WHEN_PRESENT = ("Date", "Message-ID", "List-Id", "MIME-Version", "Content-Type",
                           "Content-Transfer-Encoding")
SIGNED_WHEN_PRESENT = ("Auto-Submitted", "Content-Language")

_LINE = 78  # longest DKIM-Signature line
_FIELD = re.compile(rb"([!-9;-~]+)[ \t]*:([^\r\n]*\r\n(?:[ \t][^\r\n]*\r\n)*)")
_WSP = re.compile(rb"[ \t]+")
_WSP_BEFORE_CRLF = re.compile(rb"[ \t]+\r\n")
_PKCS1, _SHA256 = padding.PKCS1v15(), hashes.SHA256()


@dataclass(frozen=True)
class DkimKey:
    """One signature: the DNS name of its public key (`selector._domainkey.domain`) and the private key."""

    selector: str
    domain: str
    key: PrivateKey

    def __post_init__(self) -> None:
        # Checked when the configuration loads too; here because a name goes into the header as it is.
        for what, name, labels in (("selector", self.selector, 1), ("domain", self.domain, 2)):
            if dns_name_problem(name, labels):
                raise ValueError(f"DKIM {what} {name!r}: {dns_name_problem(name, labels)}")
        if not isinstance(self.key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
            raise ValueError(f"DKIM signs with RSA or Ed25519 keys, not {type(self.key).__name__}")

    @property
    def algorithm(self) -> str:
        return RSA_SHA256 if isinstance(self.key, rsa.RSAPrivateKey) else ED25519_SHA256

    def sign(self, data: bytes) -> bytes:
        """The signature of the canonical header data (RFC 8463: Ed25519 signs its SHA-256 hash)."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(hashlib.sha256(data).digest())
        return self.key.sign(data, _PKCS1, _SHA256)


class DkimSigner:
    """Signs with one key or more (RSA first, Ed25519 beside it): `sign(message)` returns the message
    with one DKIM-Signature header per key on top."""

    def __init__(self, keys: Sequence[DkimKey], canonicalization: str = RELAXED,
                 clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("DkimSigner needs at least one key")
        if canonicalization not in (RELAXED, SIMPLE):
            raise ValueError(f"canonicalization {canonicalization!r}: use {RELAXED!r} or {SIMPLE!r}")
        self.keys = tuple(keys)
        self.canonicalization = canonicalization
        self._relaxed = canonicalization == RELAXED
        self._clock = clock

    @property
    def selector(self) -> str:
        return self.keys[0].selector

    @property
    def domain(self) -> str:
        return self.keys[0].domain

    def sign(self, message: bytes, *, canonical_body: bool = False) -> bytes:
        """The message with its DKIM-Signature header(s) prepended.

        `canonical_body=True`: the caller guarantees the body is already canonical (message.py's
        bodies are), so its bytes are hashed as they are. ValueError if `message` has no header.
        """
        end = message.find(b"\r\n\r\n")
        if end < 0:
            raise ValueError("cannot sign: the message has no empty line after its header")
        body: bytes | memoryview = memoryview(message)[end + 4:]  # hashed where it lies, not copied
        if not canonical_body:
            body = canonicalize_body(bytes(body), self.canonicalization)
        elif not body:
            body = b"" if self._relaxed else b"\r\n"
        body_hash = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
        fields = _fields(message[:end + 2])
        names, h_pieces = _signed_names(tuple(name for name, _ in fields))
        signed = b"".join(self._canonical(fields, names))
        stamp = int(self._clock())
        tops = []
        for key in self.keys:
            layout = _layout(key.algorithm, key.domain, key.selector, self.canonicalization, h_pieces, len(str(stamp)))
            unsigned = layout.field(stamp, body_hash)
            data = signed + (layout.relaxed(stamp, body_hash) if self._relaxed else unsigned)
            tops.append(_with_signature(unsigned, key.sign(data)))
        return b"".join(tops) + message

    def _canonical(self, fields: list[tuple[bytes, bytes]], names: tuple[bytes, ...]) -> list[bytes]:
        """The signed fields in `h=` order, canonicalised; each name takes the last unused field of
        that name (RFC 6376 5.4.2), and a name with none left adds nothing."""
        positions: dict[bytes, list[int]] = {}
        for i, (name, _) in enumerate(fields):
            positions.setdefault(name, []).append(i)
        out = []
        for name in names:
            left = positions.get(name)
            if left:
                raw = fields[left.pop()][1]
                out.append(_relaxed_field(raw) if self._relaxed else raw)
        return out


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, whole field with its folds and final CRLF) for each header field."""
    fields, at = [], 0
    for match in _FIELD.finditer(head):
        if match.start() != at:
            break
        fields.append((match.group(1).lower(), match.group(0)))
        at = match.end()
    if at != len(head):
        raise ValueError(f"cannot sign: a header line is not 'Name: value' ({head[at:at + 40]!r})")
    return fields


@functools.lru_cache(maxsize=1024)  # most signed fields are the same in every message of a template
def _relaxed_field(raw: bytes) -> bytes:
    """RFC 6376 3.4.2: name in lower case, unfolded, runs of WSP as one space, none around the colon
    or at the end; the CRLF kept."""
    name, _, value = raw.partition(b":")
    value = _WSP.sub(b" ", value.replace(b"\r\n", b"")).strip(b" \t")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


@functools.lru_cache(maxsize=64)
def _signed_names(present: tuple[bytes, ...]) -> tuple[tuple[bytes, ...], tuple[str, ...]]:
    """The `h=` names for a header with these field names, and the `h=` tag cut into foldable pieces."""
    names: list[bytes] = []
    for group, extra, needed in ((OVERSIGNED_ALWAYS, 1, False), (OVERSIGNED_WHEN_PRESENT, 1, True),
                                 (SIGNED_WHEN_PRESENT, 0, True)):
        for header in group:
            name = header.lower().encode("ascii")
            count = present.count(name)
            if count or not needed:
                names += [name] * (count + extra)
    text = [n.decode("ascii") for n in names]
    pieces = tuple(f"{'h=' if i == 0 else ''}{n}{';' if i == len(text) - 1 else ':'}" for i, n in enumerate(text))
    return tuple(names), pieces


@dataclass(frozen=True)
class _Layout:
    """A DKIM-Signature field up to its empty `b=`, folded once per signer and header shape: only
    t= and bh= change from message to message, and their widths do not."""

    folded: tuple[str, str, str]  # the field as sent, around the t= and bh= values
    relaxed_form: tuple[str, str, str]  # the same, relaxed-canonicalised (no CRLF at the end)

    def field(self, stamp: int, body_hash: str) -> bytes:
        before, middle, after = self.folded
        return f"{before}{stamp}{middle}{body_hash}{after}".encode("ascii")

    def relaxed(self, stamp: int, body_hash: str) -> bytes:
        before, middle, after = self.relaxed_form
        return f"{before}{stamp}{middle}{body_hash}{after}".encode("ascii")


@functools.lru_cache(maxsize=64)
def _layout(algorithm: str, domain: str, selector: str, canonicalization: str, h_pieces: tuple[str, ...],
            stamp_digits: int) -> _Layout:
    """Tags separated by "; " or a fold at 78; the pieces of `h=` follow each other without a space
    unless a fold comes between (FWS is allowed around its colons)."""
    stamp, body_hash = "\x01" * stamp_digits, "\x02" * 44  # a SHA-256 in base64 is 44 characters
    tags = [(f"v=1; a={algorithm};", False), (f"c={canonicalization};", False), (f"d={domain};", False),
            (f"s={selector};", False), (f"t={stamp};", False),
            *((piece, i > 0) for i, piece in enumerate(h_pieces)), (f"bh={body_hash};", False), ("b=", False)]
    line, lines = "DKIM-Signature:", []
    for text, glued in tags:
        separator = "" if glued else " "
        if len(line) + len(separator) + len(text) > _LINE:
            lines.append(line)
            line = " " + text
        else:
            line += separator + text
    lines.append(line)
    folded = "\r\n".join(lines)
    # Relaxed (RFC 6376 3.4.2): every fold is CRLF + one space and no value holds whitespace, so
    # unfolding leaves single spaces; the name goes lower case and the value loses its leading space.
    relaxed = "dkim-signature:" + folded.removeprefix("DKIM-Signature:").replace("\r\n", "").strip()

    def around(text: str) -> tuple[str, str, str]:
        before, rest = text.split(stamp)
        middle, after = rest.split(body_hash)
        return before, middle, after
    return _Layout(around(folded), around(relaxed))


def _with_signature(unsigned: bytes, signature: bytes) -> bytes:
    """The field with its `b=` value, folded at 78 (verifiers drop the value's folds with it)."""
    value = base64.b64encode(signature)
    last = len(unsigned) - unsigned.rfind(b"\n") - 1
    room = max(_LINE - last, 0)
    pieces = [unsigned + value[:room]]
    pieces += [b" " + value[i:i + _LINE - 1] for i in range(room, len(value), _LINE - 1)]
    return b"\r\n".join(pieces) + b"\r\n"


def canonicalize_body(body: bytes, canonicalization: str = RELAXED) -> bytes:
    """The body as a verifier hashes it (RFC 6376 3.4.3, 3.4.4): for relaxed, runs of WSP as one space
    and none at the end of a line; for both, no empty lines at the end and one final CRLF (relaxed
    makes an empty body empty, simple makes it one CRLF)."""
    relaxed = canonicalization == RELAXED
    if relaxed:
        body = _WSP.sub(b" ", _WSP_BEFORE_CRLF.sub(b"\r\n", body))
    end = len(body)
    while body.endswith(b"\r\n", 0, end):
        end -= 2
    if end == 0:
        return b"" if relaxed else b"\r\n"
    return body[:end] + b"\r\n"


def signer_from_settings(settings: Settings) -> DkimSigner | None:
    """The configured signer, or None when `delivery.dkim.selector` is empty; raises DkimError.

    The keys are read once per process (again only if a key file changes); a key file that every
    user may read is logged as a warning then.
    """
    cfg = settings.delivery.dkim
    if not cfg.selector:
        return None
    domain = cfg.domain  # checked when the configuration loaded
    if not domain:
        domain = parseaddr(settings.delivery.sender)[1].rpartition("@")[2]
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass  # dns_name_problem says what is wrong
        problem = dns_name_problem(domain, 2)
        if problem:
            raise DkimError(f"'delivery.dkim.domain' is empty and the domain of 'delivery.sender' ({domain!r}) "
                            f"cannot sign: {problem}, or set domain = \"example.org\"")
    keys = cached_keys(settings.resolve_path(cfg.key_file),
                       settings.resolve_path(cfg.ed25519_key_file) if cfg.ed25519_key_file else None)
    signing = [DkimKey(cfg.selector, domain, keys[0])]
    if len(keys) > 1:
        signing.append(DkimKey(cfg.ed25519_selector, domain, keys[1]))
    return _signer(tuple(signing))


@functools.lru_cache(maxsize=8)
def _signer(keys: tuple[DkimKey, ...]) -> DkimSigner:
    return DkimSigner(keys)
