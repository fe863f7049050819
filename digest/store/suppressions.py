"""The suppression list (the suppressions table): keyed hashes of erased addresses, and who is never mailed.

Each hash is stored with the fingerprint of its key: `usable_suppression_keys` refuses to go on
when a key is missing, so an erasure is never silently forgotten. Nothing here reads or writes the
key file (digest.signing does); erasing a subscriber is digest.store.subscribers.erase_subscriber.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, func, select

from ..models import SubscriberStatus
from ..subscriber_fields import SUPPRESSED_STATUSES, normalise_email
from ..suppression_keys import (
    LEGACY_KEY_TAG,
    SuppressionKeyMissing,
    SuppressionKeys,
    email_hash,
    suppression_key_id,
)
from .schema import subscribers, suppressions

UNLABELLED_KEY_ID = ""  # erasures stored before migration 0002: hashed with a key of the pre-0002 set


def is_suppressed(engine: Engine, email: str, keys: Sequence[bytes]) -> bool:
    """True if the address unsubscribed, bounced, complained or was erased: never mail it a digest.

    `keys` are the suppression HMAC keys (digest.signing.suppression_keys(settings)); see
    `usable_suppression_keys` for making sure none is missing.
    """
    address = normalise_email(email)
    with engine.connect() as conn:
        status = conn.execute(select(subscribers.c.status).where(subscribers.c.email == address)).scalar()
        if status is not None and SubscriberStatus(status) in SUPPRESSED_STATUSES:
            return True
        return erased_in(conn, address, keys)


def is_erased(engine: Engine, email: str, keys: Sequence[bytes]) -> bool:
    """True if the suppression list holds a hash of the address (it was erased): the hashes only, not the status.

    An erased address stays so until its owner confirms a new sign-up, even while that sign-up is pending.
    """
    with engine.connect() as conn:
        return erased_in(conn, normalise_email(email), keys)


def erased_in(conn: Connection, address: str, keys: Sequence[bytes]) -> bool:
    """`is_erased` for a normalised address, inside the caller's connection."""
    return bool(suppressed_hashes(conn, [email_hash(k, address, normalised=True) for k in keys]))


def suppressed_hashes(conn: Connection, hashes: list[str]) -> set[str]:
    """Those of `hashes` the suppression list holds."""
    if not hashes:
        return set()
    query = select(suppressions.c.email_hash).where(suppressions.c.email_hash.in_(hashes))
    return set(conn.execute(query).scalars())


def suppress(conn: Connection, address: str, key: bytes, now: datetime, reason: str = "erased") -> None:
    """Add the hash of a normalised address under `key`, with the key's id, unless it is there (caller's transaction)."""
    digest = email_hash(key, address, normalised=True)
    if not conn.execute(select(suppressions.c.email_hash).where(suppressions.c.email_hash == digest)).first():
        conn.execute(suppressions.insert().values(email_hash=digest, reason=reason, created_at=now,
                                                  key_id=suppression_key_id(key)))


def unsuppress(conn: Connection, hashes: Iterable[str]) -> None:
    """Drop these hashes from the list (the address's owner confirmed a sign-up; caller's transaction)."""
    wanted = list(hashes)
    if wanted:
        conn.execute(suppressions.delete().where(suppressions.c.email_hash.in_(wanted)))


def erasures_by_key(engine: Engine) -> dict[str, int]:
    """How many erasure hashes the store holds per key id ("" for those not labelled since 0002)."""
    query = select(suppressions.c.key_id, func.count()).group_by(suppressions.c.key_id)
    with engine.connect() as conn:
        return dict(conn.execute(query).all())


def label_legacy_erasures(engine: Engine, set_id: str, replaces: Iterable[str] = ()) -> int:
    """Give the pre-0002 erasures (and those labelled with an earlier id of the set, `replaces`) the set's id."""
    old_ids = [UNLABELLED_KEY_ID, *(i for i in replaces if i and i != set_id)]
    with engine.begin() as conn:
        return conn.execute(suppressions.update().where(suppressions.c.key_id.in_(old_ids)).values(key_id=set_id)).rowcount


def usable_suppression_keys(engine: Engine, keys: Sequence[bytes], require: bool = True,
                            counts: dict[str, int] | None = None) -> SuppressionKeys:
    """`keys`, after checking that every erasure hash in the store was made with one of them.

    Raises SuppressionKeyMissing when a key is missing (unless not `require`, which checks
    nothing): an import or add could then re-add an erased address. Pre-0002 erasures count as
    present only while the whole pre-0002 key set is (digest.pipeline.subscribers.checked_suppression_keys adopts
    them first). `counts` is `erasures_by_key(engine)` when the caller has it already. Keys that
    pass are marked as checked in `engine` (`checked_in`), so `import_rows` does not count again.
    """
    keyring = keys if isinstance(keys, SuppressionKeys) else SuppressionKeys(keys)
    if not require:
        return keyring
    known = keyring.key_ids()
    missing = {key_id: n for key_id, n in (erasures_by_key(engine) if counts is None else counts).items()
               if key_id not in known}
    if missing:
        raise SuppressionKeyMissing(_missing_keys_message(missing, keyring.where))
    keyring.checked_in = engine
    return keyring


def _missing_keys_message(missing: dict[str, int], where: str) -> str:
    listed = ", ".join(f"{key_id or 'pre-0002 (not adopted yet: `digest subscribers show` adopts them)'} "
                       f"({n} erasure{'s' if n != 1 else ''})"
                       for key_id, n in sorted(missing.items()))
    hint = ""
    if any(key_id.startswith(LEGACY_KEY_TAG) for key_id in missing):
        hint = (f" A {LEGACY_KEY_TAG}:… id stands for every key line tagged {LEGACY_KEY_TAG} together: "
                "restore all of them.")
    return (f"the suppression list holds erasures hashed with key(s) {listed} that are not among the suppression "
            f"keys{f' ({where})' if where else ''}: restore the missing key (from your backup of "
            "digest-suppression.key, see docs/subscribers.md#the-suppression-key) and run again." + hint +
            " Nothing was changed, so no erased address came back")
