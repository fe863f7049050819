"""DKIM private keys, read once: PEM files → `cryptography` key objects, checked for what DKIM accepts.

`delivery.dkim.key_file` must hold an RSA key of 1024 to 4096 bits (RFC 8301: signers use at least
1024, verifiers handle up to 4096), `ed25519_key_file` an Ed25519 key (RFC 8463). Each problem is a
DkimError naming the setting and the fix; a key file every local user can read is a logged warning.
A key is read again only when its file changes (another inode, size or modification time).
"""

from __future__ import annotations

import functools
import logging
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from ..config import ConfigError

log = logging.getLogger(__name__)

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
MIN_RSA_BITS, MAX_RSA_BITS = 1024, 4096
RSA_SETTING, ED25519_SETTING = "delivery.dkim.key_file", "delivery.dkim.ed25519_key_file"
_MAKE = {RSA_SETTING: "openssl genrsa -out dkim.pem 2048",
         ED25519_SETTING: "openssl genpkey -algorithm ed25519 -out dkim-ed25519.pem"}


class DkimError(ConfigError):
    """DKIM is configured but cannot sign; the message names the setting and the fix."""


def cached_keys(rsa_path: Path, ed25519_path: Path | None = None) -> tuple[PrivateKey, ...]:
    """The RSA key, then the Ed25519 key if a path is given; each read once while its file is unchanged."""
    paths = [(RSA_SETTING, rsa_path)] + ([(ED25519_SETTING, ed25519_path)] if ed25519_path else [])
    return tuple(_load(setting, path, _identity(setting, path)) for setting, path in paths)


def _identity(setting: str, path: Path) -> tuple[int, int, int, int]:
    try:
        info = path.stat()
    except OSError as exc:
        raise DkimError(f"'{setting}' {path}: cannot read it ({exc.strerror}); "
                        f"create a key with `{_MAKE[setting]}`") from None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


@functools.lru_cache(maxsize=16)
def _load(setting: str, path: Path, identity: tuple[int, int, int, int]) -> PrivateKey:
    """The key in `path`, checked for `setting`; `identity` keys the cache to the file's version."""
    try:
        data = path.read_bytes()
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise DkimError(f"'{setting}' {path}: cannot read it ({exc.strerror}); "
                        f"create a key with `{_MAKE[setting]}`") from None
    if mode & stat.S_IROTH:
        log.warning("'%s' %s can be read by every user of this machine: run `chmod 600 %s` "
                    "(readable by digest's user only)", setting, path, path)
    key = load_private_key(data, setting, path)
    if setting == ED25519_SETTING:
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise DkimError(f"'{setting}' {path}: {_kind(key)}, not Ed25519; make one with `{_MAKE[setting]}`")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raise DkimError(f"'{setting}' {path}: an Ed25519 key, where the RSA key goes (most receivers verify "
                        "only RSA): set it as 'delivery.dkim.ed25519_key_file' with an 'ed25519_selector', "
                        f"and make an RSA key with `{_MAKE[setting]}`")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise DkimError(f"'{setting}' {path}: {_kind(key)}; DKIM signs with RSA (key_file) and optionally "
                        f"Ed25519 (ed25519_key_file): make one with `{_MAKE[setting]}`")
    if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
        raise DkimError(f"'{setting}' {path}: a {key.key_size}-bit RSA key; receivers need {MIN_RSA_BITS} to "
                        f"{MAX_RSA_BITS} bits: make a 2048-bit one with `{_MAKE[setting]}`")
    return key


def load_private_key(data: bytes, setting: str = RSA_SETTING, path: Path | str = "key") -> object:
    """The private key in PEM `data` (PKCS#8 or PKCS#1, unencrypted), whatever its type; else DkimError."""
    if b"PRIVATE KEY-----" not in data:
        raise DkimError(f"'{setting}' {path}: not a PEM private key (expected '-----BEGIN PRIVATE KEY-----' "
                        f"or '-----BEGIN RSA PRIVATE KEY-----'); make one with `{_MAKE[setting]}`")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise DkimError(f"'{setting}' {path}: the key is encrypted; digest needs it unencrypted and readable "
                        f"by its user only: `openssl pkey -in {path} -out dkim.pem && chmod 600 dkim.pem`") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise DkimError(f"'{setting}' {path}: unusable private key ({exc}); "
                        f"make one with `{_MAKE[setting]}`") from None


def _kind(key: object) -> str:
    name = type(key).__name__.removeprefix("_").removesuffix("PrivateKey")
    return f"a {name or 'different'} key"
