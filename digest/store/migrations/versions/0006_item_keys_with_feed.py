"""Fallback item keys include the feed and the content (issue 15 item 3).

Revision ID: 0006
Revises: 0005

An entry without guid and without a usable link used to be keyed `sha256(title + date)`, so three
description-only items were one, and two feeds' title-less entries overwrote each other. The key
is now `content:` + a hash of the feed's name, title, publication date, summary and content
(digest.item_keys), computed from stored fields, so this migration gives each such row exactly the
key the parser now gives its entry: the next fetch finds the row (same first_seen, same offered_in)
instead of storing the entry again as new.

Rows re-keyed:
- an old fallback key: `sha256:…` on a row without URL (a guid over 2,000 bytes is hashed to
  `sha256:…` too, but comes with a link; without one it would be re-keyed as well, and its next
  fetch stores it once more);
- a "link" that was markup (`<a href=…>` joined to the channel link) and served as the key: the
  parser now drops such a link, so the row loses its URL too, and a title that fell back to that
  link becomes the summary's first words, as the parser now does.

Every issue's manifest, and its dropped and pinned keys, follow the new keys, so a draft or
approved issue still names its items and marks them offered when it is sent. An issue whose
version matched its manifest gets the version of the re-keyed manifest (the keys are all that
changed), and its approval follows it. The content hash (which covers the key) is recomputed, so
the next fetch sees these rows unchanged.

Downgrade keeps the new keys: the old ones hashed the raw feed text, which is not stored.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import sqlalchemy as sa
from alembic import op

from digest.item_keys import content_key
from digest.manifest import issue_version
from digest.parse import first_words
from digest.sanitize import plain_text
from digest.store.items import content_hash, item_from_row
from digest.store.schema import issues as issues_table
from digest.store.schema import items as items_table

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_MARKUP_IN_URL = re.compile(r'[<>"]')


def upgrade() -> None:
    bind = op.get_bind()
    present = {c["name"] for c in sa.inspect(bind).get_columns("items")}
    columns = [c for c in items_table.c if c.name in present]
    candidates = sa.or_(
        sa.and_(items_table.c.key.like("sha256:%"), items_table.c.url == ""),
        sa.and_(items_table.c.key == items_table.c.url,
                sa.or_(*(items_table.c.url.contains(ch, autoescape=True) for ch in '<>"'))),
    )
    renamed: dict[str, str] = {}
    taken = set()
    for row in bind.execute(sa.select(*columns).where(candidates)).fetchall():
        changes = _rekeyed(row)
        if changes is None or changes["key"] in taken:
            continue
        if bind.execute(sa.select(items_table.c.id).where(items_table.c.key == changes["key"])).first():
            continue  # the entry is stored under its new key already: leave both rows as they are
        taken.add(changes["key"])
        bind.execute(items_table.update().where(items_table.c.id == row.id).values(**changes))
        renamed[row.key] = changes["key"]
    if renamed:
        _rename_in_issues(bind, renamed)


def downgrade() -> None:
    pass


def _rekeyed(row: Any) -> dict[str, Any] | None:
    """The new key, URL, title and content hash of a row stored under an old fallback or markup-link key."""
    url, title = row.url, row.title
    if url and _MARKUP_IN_URL.search(url):
        if title == url:
            title = first_words(plain_text(row.summary_html, is_html=True, limit=10**4)) or ""
        url = ""
    elif url:
        return None
    key = content_key(row.feed, title, row.published, row.summary_html, row.content_html)
    rekeyed = replace(item_from_row(row), key=key, url=url, title=title)
    return {"key": key, "url": url, "title": title, "content_hash": content_hash(rekeyed)}


def _rename_in_issues(bind: sa.Connection, renamed: dict[str, str]) -> None:
    def rename(key: Any) -> Any:
        return renamed.get(key, key) if isinstance(key, str) else key

    query = sa.select(issues_table.c.number, issues_table.c.manifest, issues_table.c.dropped,
                      issues_table.c.pinned, issues_table.c.version, issues_table.c.approved_version)
    for issue in bind.execute(query).fetchall():
        manifest = _renamed_manifest(issue.manifest, rename)
        dropped = [rename(k) for k in issue.dropped or []]
        pinned = [rename(k) for k in issue.pinned or []]
        if manifest == issue.manifest and dropped == (issue.dropped or []) and pinned == (issue.pinned or []):
            continue
        values: dict[str, Any] = {"manifest": manifest, "dropped": dropped, "pinned": pinned}
        if issue.version and _version_of(issue.manifest) == issue.version and _version_of(manifest):
            values["version"] = _version_of(manifest)
            manifest["issue"]["version"] = values["version"]
            if issue.approved_version == issue.version:
                values["approved_version"] = values["version"]
        bind.execute(issues_table.update().where(issues_table.c.number == issue.number).values(**values))


def _renamed_manifest(manifest: Any, rename: Callable[[Any], Any]) -> Any:
    """A copy of `manifest` with every entry's, related link's, dropped and pinned key renamed."""
    if not isinstance(manifest, dict):
        return manifest
    copy = dict(manifest)
    if isinstance(manifest.get("issue"), dict):
        copy["issue"] = dict(manifest["issue"])
        for name in ("dropped", "pinned"):
            if isinstance(copy["issue"].get(name), list):
                copy["issue"][name] = [rename(k) for k in copy["issue"][name]]
    if isinstance(manifest.get("sections"), list):
        copy["sections"] = [_renamed_section(s, rename) for s in manifest["sections"]]
    return copy


def _renamed_section(section: Any, rename: Callable[[Any], Any]) -> Any:
    if not isinstance(section, dict) or not isinstance(section.get("items"), list):
        return section
    entries = []
    for entry in section["items"]:
        if not isinstance(entry, dict):
            entries.append(entry)
            continue
        renamed = {**entry, "key": rename(entry.get("key"))}
        if isinstance(entry.get("related"), list):
            renamed["related"] = [{**r, "key": rename(r.get("key"))} if isinstance(r, dict) else r
                                  for r in entry["related"]]
        entries.append(renamed)
    return {**section, "items": entries}


def _version_of(manifest: Any) -> str | None:
    try:
        return issue_version(manifest)
    except (KeyError, TypeError):
        return None
