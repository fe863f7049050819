"""Signed links for subscribers (confirm, preferences, unsubscribe) and the suppression keys.

Tokens are itsdangerous URL-safe timed signatures (HMAC-SHA1 over a key derived per purpose).
The secrets come from the environment variable named by `web.secret_env`, comma-separated,
newest first: links are signed with the first and verified with any, so a new secret can be
put in front without breaking links already sent. When the variable is unset, a random secret
is generated once and kept in `digest-secret.key` next to the config file (with a warning):
fine for one machine, but set the variable when several machines share a PostgreSQL store.

Erased addresses are kept as HMACs under a suppression key of their own, which never changes
with the signing secrets: from `web.suppression_key_env`, and/or `digest-suppression.key` next to
the config file (generated once). Each hash is stored with its key's fingerprint, so a missing
key is noticed (digest.store.suppressions.usable_suppression_keys) instead of an erasure being
silently forgotten. Entry points load them with `pipeline.subscribers.checked_suppression_keys`, which also adopts
erasures from before migration 0002 (the one write to an existing key file).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes

from .config import ConfigError, Settings
from .models import Subscriber
from .suppression_keys import LEGACY_KEY_TAG, SuppressionKeys

log = logging.getLogger(__name__)

SECRET_FILE = "digest-secret.key"
SUPPRESSION_KEY_FILE = "digest-suppression.key"
MIN_SUPPRESSION_KEY_BYTES = 16
CONFIRM, PREFERENCES, UNSUBSCRIBE = "confirm", "preferences", "unsubscribe"
SET_PASSWORD = "admin/password"  # a staff account's invite or reset link
PURPOSES = (CONFIRM, PREFERENCES, UNSUBSCRIBE, SET_PASSWORD)


@dataclass(frozen=True)
class SubscriberLinks:
    unsubscribe_url: str
    preferences_url: str


@dataclass(frozen=True)
class ConfirmToken:
    """What a confirmation link carries: the subscriber and the nonce of their stored sign-up request.

    The choices and IP of the sign-up stay in the store (signup_requests), never in the link.
    """

    subscriber_id: int
    nonce: str


def signing_secrets(settings: Settings) -> tuple[str, ...]:
    """The secrets, newest first: from $web.secret_env, else the generated secret file."""
    raw = os.environ.get(settings.web.secret_env, "")
    values = tuple(s.strip() for s in raw.split(",") if s.strip())
    if values:
        return values
    return (_persisted_secret(str(settings.resolve_path(SECRET_FILE))),)


@functools.lru_cache(maxsize=8)
def _persisted_secret(path: str) -> str:
    # Cached so that signing 100,000 links reads the file once per process.
    file = Path(path)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = file.read_text(encoding="ascii").strip()
        if not value:
            raise ConfigError(f"{file} is empty: delete it (a new secret is generated) or set the secret variable") from None
    else:
        value = secrets.token_urlsafe(32)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(value + "\n")
        # Said once, when the file is made: repeating it on every later command is noise.
        log.warning("no signing secret in the environment: generated one in %s and keep using it "
                    "(set the variable named by web.secret_env to choose your own)", file)
    return value


def derived_keys(settings: Settings, purpose: str) -> tuple[bytes, ...]:
    """One key per signing secret for a separate use (e.g. "csrf"), newest first."""
    return tuple(hashlib.sha256(f"digest-{purpose}:{s}".encode()).digest() for s in signing_secrets(settings))


def suppression_keys(settings: Settings) -> SuppressionKeys:
    """The suppression keys: from $web.suppression_key_env (hex, comma-separated, newest first), then the key file.

    With neither, a random key is generated once into `digest-suppression.key` next to the
    config file (with a warning to back it up). The signing secrets play no part: rotating or
    setting DIGEST_SECRET never forgets an erasure. Entries tagged `pre-0002` form the pre-0002
    key set (see `adopt_legacy_keys`).
    """
    env = settings.web.suppression_key_env
    values = [v.strip() for v in os.environ.get(env, "").split(",") if v.strip()]
    from_env = [_key_entry(v, f"${env}") for v in values]
    path = settings.resolve_path(SUPPRESSION_KEY_FILE)
    from_file = _read_keys(path)
    if not from_env and not from_file:
        from_file = [(key, False) for key in _create_key_file(path)]
    entries = [*from_env, *from_file]
    return SuppressionKeys([k for k, legacy in entries if not legacy], [k for k, legacy in entries if legacy],
                           where=f"${env} or {path}")


def adopt_legacy_keys(settings: Settings, keys: SuppressionKeys) -> SuppressionKeys:
    """`keys` with the pre-0002 set completed by the keys derived from the current signing secrets.

    Erasures made before digest kept its own suppression key were hashed with a key derived from
    the signing secret(s) then in use. Those keys are written to the key file now, tagged
    `pre-0002`, before a change of secret can lose them.
    """
    derived = derived_keys(settings, "suppression")
    missing = [k for k in derived if k not in keys.legacy]
    if missing:
        _append_keys(settings.resolve_path(SUPPRESSION_KEY_FILE), missing,
                     f"added {datetime.now(UTC):%Y-%m-%d}: the keys erasures made before digest kept its own suppression "
                     f"key were hashed with (derived from the signing secrets then in use). Keep every {LEGACY_KEY_TAG} "
                     "line: together they are one key set, needed as a whole", LEGACY_KEY_TAG)
    return SuppressionKeys(keys.current, [*keys.legacy, *missing], keys.where)


def _key_entry(value: str, where: str) -> tuple[bytes, bool]:
    """(key, whether tagged pre-0002) of one `HEX` or `pre-0002 HEX` entry."""
    tag, _, rest = value.partition(" ")
    if tag == LEGACY_KEY_TAG and rest.strip():
        return _key_bytes(rest.strip(), where), True
    return _key_bytes(value, where), False


def _key_bytes(value: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(value)
    except ValueError:
        key = b""
    if len(key) < MIN_SUPPRESSION_KEY_BYTES:
        raise ConfigError(f"{where}: {value[:8]!r}… is not a suppression key (hex, at least {2 * MIN_SUPPRESSION_KEY_BYTES} "
                          "digits): copy it exactly from digest-suppression.key or your backup")
    return key


def _read_keys(path: Path) -> list[tuple[bytes, bool]]:
    """The keys in a key file, newest first, each with whether it is tagged pre-0002 ([] if there is no file).

    `#` starts a comment.
    """
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return []
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"{path}: cannot read the suppression key file ({exc}): restore it from your backup") from None
    keys = [_key_entry(value, f"{path} line {number}") for number, line in enumerate(text.splitlines(), start=1)
            if (value := line.split("#", 1)[0].strip())]
    if not keys:
        raise ConfigError(f"{path} holds no suppression key: restore it from your backup (erasures hashed with "
                          "a lost key cannot be recognised; imports refuse to run while the store has them)")
    return keys


KEY_FILE_HEADER = ("# digest: suppression keys for erased addresses, newest first, one hex key per line.\n"
                   "# Back this file up with the store and move it with it (see docs/subscribers.md).\n")


def _create_key_file(path: Path) -> list[bytes]:
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it a moment ago
        return [k for k, _ in _read_keys(path)]
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(KEY_FILE_HEADER + key.hex() + "\n")
    log.warning("generated the suppression key for erased addresses in %s: back it up with the store "
                "(without it, imports refuse to run once the store holds an erasure)", path)
    return [key]


def _append_keys(path: Path, keys: list[bytes], comment: str, tag: str = "") -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    prefix = f"{tag} " if tag else ""
    with os.fdopen(fd, "a", encoding="ascii") as handle:
        if handle.tell() == 0:
            handle.write(KEY_FILE_HEADER)
        handle.write(f"# {comment}\n" + "".join(prefix + k.hex() + "\n" for k in keys))
    log.warning("kept the suppression key(s) of earlier erasures in %s: back it up with the store", path)


class _KeyCachingSigner(TimestampSigner):
    """itsdangerous' signer with the signing key derived once instead of on every signature."""

    @functools.cached_property
    def _signing_key(self) -> bytes:
        return super().derive_key()

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        return self._signing_key if secret_key is None else super().derive_key(secret_key)


class _Serializer(URLSafeTimedSerializer):
    """The same tokens as URLSafeTimedSerializer, with one signer kept for its own salt."""

    default_signer = _KeyCachingSigner

    @functools.cached_property
    def own_signer(self) -> TimestampSigner:
        return super().make_signer()

    def make_signer(self, salt: str | bytes | None = None) -> TimestampSigner:
        return self.own_signer if salt is None or want_bytes(salt) == self.salt else super().make_signer(salt)


# Below this, the compact JSON of an int is at most 9 bytes, which zlib (at least 9 bytes out) never
# shrinks by the 2 bytes itsdangerous asks for: its payload is then plain base64 of the digits.
_PLAIN_INT_LIMIT = 10**9


class TokenSigner:
    """Signs and verifies tokens with one set of secrets; build once, use for many subscribers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        keys = list(reversed(signing_secrets(settings)))  # itsdangerous signs with the last key
        self._serializers = {p: _Serializer(keys, salt=f"digest.{p}") for p in PURPOSES}

    def sign(self, purpose: str, payload: Any) -> str:
        """An itsdangerous URL-safe timed token; ids (two links per subscriber per issue) take a fast path.

        The fast path makes byte for byte the token `dumps()` makes (without its JSON and zlib
        attempt, two thirds of the cost), so any itsdangerous loads() verifies it.
        """
        serializer = self._serializers[purpose]
        if type(payload) is int and 0 <= payload < _PLAIN_INT_LIMIT:
            return serializer.own_signer.sign(base64_encode(str(payload).encode("ascii"))).decode("ascii")
        return serializer.dumps(payload)

    def load(self, purpose: str, token: str, max_age: int | None = None) -> Any | None:
        """The payload of a genuine, unexpired token; None for anything else."""
        if purpose not in self._serializers or not isinstance(token, str) or len(token) > 2000:
            return None
        try:
            return self._serializers[purpose].loads(token, max_age=max_age)
        except BadData:
            return None

    def url(self, purpose: str, payload: Any) -> str:
        return f"{self.settings.web.base_url.rstrip('/')}/{purpose}/{self.sign(purpose, payload)}"


def subscriber_links(settings: Settings, subscriber: Subscriber, signer: TokenSigner | None = None) -> SubscriberLinks:
    """Absolute unsubscribe (also the RFC 8058 one-click target) and preferences URLs for a subscriber."""
    if subscriber.id is None:
        raise ValueError("subscriber_links needs a stored subscriber (id is None)")
    signer = signer or TokenSigner(settings)
    return SubscriberLinks(unsubscribe_url=signer.url(UNSUBSCRIBE, subscriber.id),
                           preferences_url=signer.url(PREFERENCES, subscriber.id))


def confirm_url(settings: Settings, subscriber_id: int, nonce: str, signer: TokenSigner | None = None) -> str:
    """The expiring double opt-in link for the stored sign-up request `nonce` of a subscriber."""
    return (signer or TokenSigner(settings)).url(CONFIRM, {"i": subscriber_id, "n": nonce})


def verify(settings: Settings, token: str, purpose: str, max_age: int | None = None,
           signer: TokenSigner | None = None) -> int | None:
    """The subscriber id in a genuine token for `purpose`; None if forged, tampered or expired.

    Confirm tokens expire after web.confirm_hours unless `max_age` (seconds) says otherwise.
    """
    if purpose == CONFIRM:
        confirm = read_confirm_token(settings, token, max_age, signer)
        return confirm.subscriber_id if confirm else None
    payload = (signer or TokenSigner(settings)).load(purpose, token, max_age)
    return payload if isinstance(payload, int) and not isinstance(payload, bool) and payload > 0 else None


def read_confirm_token(settings: Settings, token: str, max_age: int | None = None,
                       signer: TokenSigner | None = None) -> ConfirmToken | None:
    """The subscriber id and request nonce in a genuine, unexpired confirm token; None otherwise."""
    max_age = settings.web.confirm_hours * 3600 if max_age is None else max_age
    payload = (signer or TokenSigner(settings)).load(CONFIRM, token, max_age)
    if not isinstance(payload, dict):
        return None
    sid, nonce = payload.get("i"), payload.get("n")
    if type(sid) is not int or sid <= 0 or not isinstance(nonce, str) or not 0 < len(nonce) <= 64:
        return None
    return ConfirmToken(subscriber_id=sid, nonce=nonce)
