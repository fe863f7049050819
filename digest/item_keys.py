"""The one rule for an item's key when its entry has no guid and no usable link.

Such an entry has no identity but its feed and its content, so the key hashes exactly those, as
the feed gave them (the item's raw values where cleaning changed them): the feed's name, the title,
the publication date and the summary and content HTML. One feed can then never take over another feed's item, and two distinct entries (three
items carrying only a <description>) never merge. The price: an edit to such an entry is a new
item, since nothing else says it is the same one.

Computed from stored fields only, so migration 0006 gives the rows stored under the old rule
(`sha256(title + date)`) exactly the key the parser now gives the same entry.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

# Longer keys are hashed. Counted in UTF-8 bytes, not characters: PostgreSQL's unique index on
# the key column refuses entries over 2,704 bytes (1,990 CJK characters are 5,970 bytes).
MAX_KEY_BYTES = 2000
# Distinct from the "sha256:" of a hashed long guid or of the old fallback, so each is told apart.
CONTENT_KEY_PREFIX = "content:"


def content_key(feed: str, title: str, published: datetime | None, summary_html: str, content_html: str) -> str:
    """The key of an entry without guid and link: a hash of its feed and what it says."""
    when = published.astimezone(UTC).isoformat() if published is not None else ""
    seed = json.dumps([feed, title, when, summary_html, content_html], ensure_ascii=False)
    return CONTENT_KEY_PREFIX + hashlib.sha256(seed.encode("utf-8", "replace")).hexdigest()


def bounded_key(key: str) -> str:
    """`key`, or its "sha256:" hash when longer than MAX_KEY_BYTES of UTF-8."""
    encoded = key.encode("utf-8", "replace")
    if len(encoded) > MAX_KEY_BYTES:
        return "sha256:" + hashlib.sha256(encoded).hexdigest()
    return key
