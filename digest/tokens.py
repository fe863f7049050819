"""Signed links for subscribers: confirm (expiring), preferences and unsubscribe (per subscriber).

Tokens are itsdangerous URL-safe timed signatures (HMAC-SHA1 over a key derived per purpose).
The secrets come from the environment variable named by `web.secret_env`, comma-separated,
newest first: links are signed with the first and verified with any, so a new secret can be
put in front without breaking links already sent. When the variable is unset, a random secret
is generated once and kept in `digest-secret.key` next to the config file (with a warning):
fine for one machine, but set the variable when several machines share a PostgreSQL store.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadData, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes

from .config import LANGUAGES, ConfigError, Settings
from .models import Subscriber

log = logging.getLogger(__name__)

SECRET_FILE = "digest-secret.key"
CONFIRM, PREFERENCES, UNSUBSCRIBE = "confirm", "preferences", "unsubscribe"
PURPOSES = (CONFIRM, PREFERENCES, UNSUBSCRIBE)


@dataclass(frozen=True)
class SubscriberLinks:
    unsubscribe_url: str
    preferences_url: str


@dataclass(frozen=True)
class ConfirmRequest:
    """What a confirmation link carries: the row and the choices made on the sign-up form."""

    subscriber_id: int
    name: str
    language: str
    series: tuple[str, ...]
    want_events: bool
    want_media: bool
    ip: str


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


def suppression_keys(settings: Settings) -> tuple[bytes, ...]:
    """HMAC keys for the suppression hashes of erased addresses, newest first.

    Erasures are hashed with the newest key and found with any listed key: removing a secret
    from the list forgets the erasures hashed with it, so keep retired secrets at the end.
    """
    return derived_keys(settings, "suppression")


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

    def __init__(self, settings: Settings):
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


def confirm_url(settings: Settings, subscriber: Subscriber, ip: str = "", signer: TokenSigner | None = None) -> str:
    """The expiring double opt-in link; it carries the choices in `subscriber`, applied on confirmation."""
    if subscriber.id is None:
        raise ValueError("confirm_url needs a stored subscriber (id is None)")
    payload = {"i": subscriber.id, "n": subscriber.name, "l": subscriber.language, "s": list(subscriber.series),
               "e": subscriber.want_events, "m": subscriber.want_media, "a": ip}
    return (signer or TokenSigner(settings)).url(CONFIRM, payload)


def verify(settings: Settings, token: str, purpose: str, max_age: int | None = None,
           signer: TokenSigner | None = None) -> int | None:
    """The subscriber id in a genuine token for `purpose`; None if forged, tampered or expired.

    Confirm tokens expire after web.confirm_hours unless `max_age` (seconds) says otherwise.
    """
    if purpose == CONFIRM:
        request = read_confirm_token(settings, token, max_age, signer)
        return request.subscriber_id if request else None
    payload = (signer or TokenSigner(settings)).load(purpose, token, max_age)
    return payload if isinstance(payload, int) and not isinstance(payload, bool) and payload > 0 else None


def read_confirm_token(settings: Settings, token: str, max_age: int | None = None,
                       signer: TokenSigner | None = None) -> ConfirmRequest | None:
    """The confirmation request in a genuine, unexpired confirm token; None otherwise."""
    max_age = settings.web.confirm_hours * 3600 if max_age is None else max_age
    payload = (signer or TokenSigner(settings)).load(CONFIRM, token, max_age)
    try:
        request = ConfirmRequest(
            subscriber_id=int(payload["i"]), name=str(payload["n"]), language=str(payload["l"]),
            series=tuple(str(s) for s in payload["s"]), want_events=bool(payload["e"]),
            want_media=bool(payload["m"]), ip=str(payload["a"]))
    except (TypeError, KeyError, ValueError):
        return None
    return request if request.language in LANGUAGES and request.subscriber_id > 0 else None
