"""The admin password: scrypt hashes as `digest admin hash-password` prints them, and their check.

Format: `scrypt$<log2 n>$<r>$<p>$<salt, base64>$<hash, base64>`. Only the hash is ever stored (in
`web.admin_password_hash` or $DIGEST_ADMIN_PASSWORD_HASH); comparing is constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

HASH_ENV = "DIGEST_ADMIN_PASSWORD_HASH"
_LOG_N, _R, _P = 15, 8, 1
_MAX_LOG_N = 20  # refuse hashes that would make one login cost gigabytes


class PasswordHashError(ValueError):
    """The configured hash is not one `digest admin hash-password` printed."""


def hash_password(password: str, log_n: int = _LOG_N) -> str:
    """A new salted scrypt hash of `password`."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = os.urandom(16)
    digest = _scrypt(password, salt, log_n, _R, _P)
    return "$".join(["scrypt", str(log_n), str(_R), str(_P), _b64(salt), _b64(digest)])


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches the hash; raises PasswordHashError for a malformed hash."""
    try:
        scheme, log_n, r, p, salt, digest = encoded.strip().split("$")
        log_n, r, p = int(log_n), int(r), int(p)
        salt, digest = base64.b64decode(salt, validate=True), base64.b64decode(digest, validate=True)
    except ValueError:
        raise PasswordHashError("the admin password hash is malformed: make a new one with "
                                "`digest admin hash-password`") from None
    if scheme != "scrypt" or not 1 <= log_n <= _MAX_LOG_N or not 1 <= r <= 32 or not 1 <= p <= 16 or not digest:
        raise PasswordHashError("the admin password hash is not a digest scrypt hash: make one with "
                                "`digest admin hash-password`")
    return hmac.compare_digest(_scrypt(password, salt, log_n, r, p, len(digest)), digest)


def configured_hash(setting: str) -> str:
    """The hash to check against: the environment variable wins over the setting."""
    return os.environ.get(HASH_ENV, "").strip() or setting.strip()


def _scrypt(password: str, salt: bytes, log_n: int, r: int, p: int, length: int = 32) -> bytes:
    n = 1 << log_n
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=256 * n * r + 1024 * 1024)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
