"""Amazon SNS message signatures: is this POST really a message SNS sent?

SNS signs the fields of each message (RFC-free, AWS-documented "string to sign") with an RSA key
whose certificate it publishes at SigningCertURL: SignatureVersion 1 with SHA1, 2 with SHA256,
both PKCS#1 v1.5. `SnsVerifier.verify` accepts a certificate only from an https URL on
`sns.<region>.amazonaws.com` (`.amazonaws.com.cn` in China) in the region of the message's
TopicArn, checks its validity dates, and keeps its public key (at most CACHE_SIZE of them), so
certificates are fetched once per process. A valid signature proves only that SNS sent the message,
not that it is ours: the web front door also checks TopicArn against the configured topics.

The certificate loader is a seam: `digest serve` downloads (download_certificate, https only, no
redirects, 64 KiB at most); tests pass their own loader and sign with their own key.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

# URL → the certificate's PEM bytes; raises OSError (or httpx.HTTPError) when it cannot be had.
CertificateLoader = Callable[[str], bytes]

CACHE_SIZE = 32
# Certificate downloads a process makes per hour at most: SNS uses one or two certificates, so more
# means someone posts messages naming other .pem files; beyond it they get 503, not a fetch each.
MAX_FETCHES_PER_HOUR = 20
MAX_CERTIFICATE_BYTES = 64 * 1024
_CERT_HOST = re.compile(r"sns\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com(?:\.cn)?")
_TOPIC_REGION = re.compile(r"arn:aws(?:-[a-z]+)*:sns:([a-z]{2}(?:-[a-z]+)+-\d):\d{12}:[A-Za-z0-9_-]{1,256}")
# The fields signed, in this order, per message type (the AWS SNS developer guide, "Verifying the
# signatures of Amazon SNS messages"); Subject only when the message has one.
SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}


class SnsRejected(Exception):
    """Not a message SNS signed: unsigned, wrongly signed, or a certificate from the wrong place."""


class CertificateUnavailable(Exception):
    """The signing certificate could not be fetched (a network problem here: SNS should retry)."""


def string_to_sign(message: dict) -> bytes:
    """The bytes SNS signs for `message`: "name\\nvalue\\n" for each signed field present."""
    kind = message.get("Type")
    if kind not in SIGNED_FIELDS:
        raise SnsRejected(f"unknown SNS message Type {str(kind)[:40]!r}")
    lines = []
    for name in SIGNED_FIELDS[kind]:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise SnsRejected(f"the signed field {name} is missing or not a string")
        lines.append(f"{name}\n{value}\n")
    return "".join(lines).encode("utf-8")


def certificate_url_problem(url: str, topic_arn: str) -> str:
    """Why SigningCertURL cannot be trusted for this topic, or "" when it can."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "SigningCertURL is not a URL"
    host_match = _CERT_HOST.fullmatch(parts.hostname or "")
    topic_match = _TOPIC_REGION.fullmatch(topic_arn)
    if parts.scheme != "https" or port not in (None, 443) or parts.username or parts.password:
        return "SigningCertURL must be a plain https URL"
    if host_match is None:
        return "SigningCertURL is not on sns.<region>.amazonaws.com"
    if topic_match is None or topic_match.group(1) != host_match.group(1):
        return "SigningCertURL is not in the region of TopicArn"
    if not parts.path.endswith(".pem") or parts.query or parts.fragment:
        return "SigningCertURL does not name a .pem certificate"
    return ""


def download_certificate(url: str) -> bytes:
    """The certificate at an https URL (checked beforehand), without following redirects; 64 KiB at most."""
    with httpx.Client(timeout=10.0, follow_redirects=False) as client, client.stream("GET", url) as response:
        if response.status_code != 200:
            raise OSError(f"{url} answered HTTP {response.status_code}")
        data = b""
        for chunk in response.iter_bytes():
            data += chunk
            if len(data) > MAX_CERTIFICATE_BYTES:
                raise OSError(f"{url} is larger than {MAX_CERTIFICATE_BYTES} bytes")
    return data


class SnsVerifier:
    """Checks SNS signatures; one per web app, shared by its requests (thread-safe cache)."""

    def __init__(self, loader: CertificateLoader | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.loader = loader or download_certificate
        self.clock = clock
        self._keys: dict[str, rsa.RSAPublicKey] = {}
        self._fetches: deque[float] = deque()
        self._lock = threading.Lock()

    def verify(self, message: dict) -> None:
        """Raises SnsRejected unless `message` carries a valid SNS signature; CertificateUnavailable
        when the certificate cannot be fetched."""
        version = message.get("SignatureVersion")
        signature, url = message.get("Signature"), message.get("SigningCertURL")
        if not isinstance(signature, str) or not isinstance(url, str) or not signature or not url:
            raise SnsRejected("the message is not signed (no Signature or SigningCertURL)")
        if version not in HASHES:
            raise SnsRejected(f"unknown SignatureVersion {str(version)[:10]!r}: use 1 or 2")
        if problem := certificate_url_problem(url, str(message.get("TopicArn", ""))):
            raise SnsRejected(problem)
        try:
            raw = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise SnsRejected("the Signature is not base64") from None
        key = self._key(url)
        try:
            key.verify(raw, string_to_sign(message), padding.PKCS1v15(), HASHES[version]())
        except InvalidSignature:
            raise SnsRejected("the signature does not match the message") from None

    def _key(self, url: str) -> rsa.RSAPublicKey:
        with self._lock:
            key = self._keys.get(url)
            if key is not None:
                return key
            now = time.monotonic()
            while self._fetches and self._fetches[0] < now - 3600:
                self._fetches.popleft()
            if len(self._fetches) >= MAX_FETCHES_PER_HOUR:
                raise CertificateUnavailable(f"more than {MAX_FETCHES_PER_HOUR} SNS certificates fetched this hour: "
                                             "not fetching another (posted messages name many certificates)")
            self._fetches.append(now)
        try:
            pem = self.loader(url)
        except (OSError, httpx.HTTPError) as exc:
            raise CertificateUnavailable(f"cannot fetch the SNS signing certificate {url}: {exc}") from None
        try:
            certificate = x509.load_pem_x509_certificate(pem)
        except ValueError:
            raise SnsRejected("SigningCertURL does not hold a PEM certificate") from None
        now = self.clock()
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SnsRejected("the SNS signing certificate is expired or not valid yet")
        key = certificate.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise SnsRejected("the SNS signing certificate does not hold an RSA key")
        with self._lock:
            if len(self._keys) >= CACHE_SIZE:
                self._keys.pop(next(iter(self._keys)))
            self._keys[url] = key
        return key
