"""The keyed hashes erasures keep instead of an address, and the suppression keys that make them.

An erased address survives only as an HMAC of its canonical form under a suppression key, stored
with that key's fingerprint, so a missing key is noticed instead of an erasure being forgotten.
Loading the keys (the key file, $web.suppression_key_env) is digest.signing'; the store's erasures
are digest.store.suppressions'.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from .config import ConfigError
from .subscriber_fields import normalise_email

# Marks, in the key file or $web.suppression_key_env, the keys erasures made before migration 0002
# were hashed with; and starts the id their rows carry.
LEGACY_KEY_TAG = "pre-0002"


class SuppressionKeyMissing(ConfigError):
    """Erasure hashes in the store were made with a suppression key this process does not have.

    Importing or adding then could re-add an erased address, so it is refused (exit 2).
    """


def suppression_key_id(key: bytes) -> str:
    """The fingerprint stored with each erasure hash: names the key without revealing it."""
    return hashlib.sha256(b"digest-suppression-key-id:" + key).hexdigest()[:16]


def legacy_key_set_id(keys: Iterable[bytes]) -> str:
    """The one id of the whole pre-0002 key set, as stored with erasures made before migration 0002.

    Which key of the set hashed which of those rows cannot be known, so the id stands for all of
    them together: it changes (and the check fails) when any one key of the set is missing.
    """
    joined = ",".join(sorted({k.hex() for k in keys}))
    return f"{LEGACY_KEY_TAG}:" + hashlib.sha256(b"digest-suppression-key-set:" + joined.encode()).hexdigest()[:16]


class SuppressionKeys(tuple):
    """The HMAC keys (bytes) of the suppression list, newest first: erasures use the first, lookups all.

    `legacy` is the pre-0002 set (last in the tuple): keys derived from the signing secrets once
    in use, which erasures from before migration 0002 were hashed with. `where` says where the
    keys come from, for messages. `checked_in` is the store whose erasures were all found hashed
    with these keys (digest.store.suppressions.usable_suppression_keys sets it), None before.
    """

    def __new__(cls, keys: Iterable[bytes], legacy: Iterable[bytes] = (), where: str = "") -> SuppressionKeys:
        """Newest first, without repeats; the pre-0002 set last."""
        legacy = tuple(dict.fromkeys(legacy))
        keyring = super().__new__(cls, dict.fromkeys([*keys, *legacy]))  # without repeats, order kept
        keyring.legacy, keyring.where, keyring.checked_in = legacy, where, None
        return keyring

    @property
    def current(self) -> tuple[bytes, ...]:
        """The keys that are not of the pre-0002 set."""
        return tuple(k for k in self if k not in self.legacy)

    @property
    def legacy_id(self) -> str:
        """The id of the pre-0002 set ('' without one)."""
        return legacy_key_set_id(self.legacy) if self.legacy else ""

    def key_ids(self) -> set[str]:
        """The ids of the erasures these keys recognise: each key's, and the pre-0002 set's as a whole."""
        return {suppression_key_id(k) for k in self} | ({self.legacy_id} if self.legacy else set())


def email_hash(key: bytes, email: str, normalised: bool = False) -> str:
    """The keyed hash kept in `suppressions` instead of an erased address.

    Pass normalised=True for an address that already went through normalise_email (imports hash
    every new row, and validating twice would double their cost).
    """
    address = email if normalised else normalise_email(email)
    return hmac.new(key, address.encode(), hashlib.sha256).hexdigest()
