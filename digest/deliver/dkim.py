"""DKIM signing (dkimpy, relaxed/relaxed) of finished messages, configured by `[delivery.dkim]`."""

from __future__ import annotations

from dataclasses import dataclass
from email.utils import parseaddr
from pathlib import Path

import dkim

from ..config import Settings

# Signed when present. From and Subject are signed once more than they occur ("oversigned"), so a
# relay cannot add a second From or Subject without breaking the signature.
SIGNED_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "Reply-To", "List-Id",
                  "List-Unsubscribe", "List-Unsubscribe-Post", "Auto-Submitted", "MIME-Version", "Content-Type",
                  "Content-Transfer-Encoding", "Content-Language")
OVERSIGNED_HEADERS = ("From", "Subject")


class DkimError(Exception):
    """DKIM is configured but cannot sign; the message names the setting and the fix."""


@dataclass(frozen=True)
class DkimSigner:
    """Signs with one key: `sign(message)` returns the message with a DKIM-Signature header on top."""

    selector: str
    domain: str
    private_key: bytes

    def sign(self, message: bytes) -> bytes:
        """The message with its DKIM-Signature prepended (relaxed/relaxed, rsa-sha256)."""
        headers = _present_headers(message)
        headers += [h for h in OVERSIGNED_HEADERS if h in headers]
        signature = dkim.sign(message, self.selector.encode("ascii"), self.domain.encode("ascii"),
                              self.private_key, canonicalize=(b"relaxed", b"relaxed"),
                              include_headers=[h.encode("ascii") for h in headers])
        return signature + message


def _present_headers(message: bytes) -> list[str]:
    head = message.split(b"\r\n\r\n", 1)[0].lower()
    names = {line.split(b":", 1)[0] for line in head.split(b"\r\n") if line[:1] not in (b" ", b"\t")}
    return [h for h in SIGNED_HEADERS if h.lower().encode("ascii") in names]


def signer_from_settings(settings: Settings) -> DkimSigner | None:
    """The configured signer, or None when `delivery.dkim.selector` is empty; raises DkimError."""
    cfg = settings.delivery.dkim
    if not cfg.selector:
        return None
    domain = cfg.domain or parseaddr(settings.delivery.sender)[1].rpartition("@")[2]
    if not domain:
        raise DkimError("'delivery.dkim.domain' is empty and the sender has no domain: set domain = \"example.org\"")
    if not cfg.key_file:
        raise DkimError("'delivery.dkim.selector' is set but 'delivery.dkim.key_file' is empty: "
                        "set key_file = \"dkim.pem\" (see docs/delivery-messages.md)")
    path = settings.resolve_path(cfg.key_file)
    return DkimSigner(selector=_ascii_label(cfg.selector, "selector"), domain=_ascii_label(domain, "domain"),
                      private_key=_read_key(path))


def _ascii_label(value: str, key: str) -> str:
    value = value.strip()
    if not value.isascii() or not all(c.isalnum() or c in ".-_" for c in value):
        raise DkimError(f"'delivery.dkim.{key}' is {value!r}: use letters, digits, '.', '-' and '_' only")
    return value


def _read_key(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimError(f"'delivery.dkim.key_file' {path}: cannot read it ({exc.strerror}); "
                        "create a key with `openssl genrsa -out dkim.pem 2048`") from None
    if b"PRIVATE KEY-----" not in data:
        raise DkimError(f"'delivery.dkim.key_file' {path}: not a PEM private key "
                        "(expected '-----BEGIN PRIVATE KEY-----' or '-----BEGIN RSA PRIVATE KEY-----')")
    try:
        dkim.sign(b"From: check@example.org\r\n\r\n", b"check", b"example.org", data)
    except dkim.DKIMException as exc:
        raise DkimError(f"'delivery.dkim.key_file' {path}: unusable RSA key ({exc})") from None
    return data
