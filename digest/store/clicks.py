"""Click counts (digest.clicks): one row per issue, link and edition language, and nothing else.

A click adds one to its row in a single statement (INSERT … ON CONFLICT DO UPDATE, on SQLite and
PostgreSQL alike), so clicks arriving at the same moment are all counted and no read-modify-write
can lose one. Nothing about the reader or the moment of a click is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from .schema import click_counts


@dataclass(frozen=True)
class ClickCount:
    """One row: how often the link `link` of an issue was followed from its `language` edition."""

    issue_number: int
    link: str
    language: str
    section: str
    item_key: str
    url: str
    clicks: int


def count_click(engine: Engine, issue_number: int, link: str, language: str, *, section: str, item_key: str,
                url: str) -> None:
    """Add one click to the row (issue_number, link, language), making it on the first click."""
    insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(click_counts)
    statement = insert.values(issue_number=issue_number, link=link, language=language, section=section,
                              item_key=item_key, url=url, clicks=1)
    statement = statement.on_conflict_do_update(
        index_elements=[click_counts.c.issue_number, click_counts.c.link, click_counts.c.language],
        set_={"clicks": click_counts.c.clicks + 1})
    with engine.begin() as conn:
        conn.execute(statement)


def click_counts_of(engine: Engine, issue_numbers: Iterable[int]) -> list[ClickCount]:
    """Every row of these issues, most clicked first."""
    numbers = sorted(set(issue_numbers))
    if not numbers:
        return []
    query = (select(click_counts).where(click_counts.c.issue_number.in_(numbers))
             .order_by(click_counts.c.clicks.desc(), click_counts.c.issue_number, click_counts.c.link,
                       click_counts.c.language))
    with engine.connect() as conn:
        return [ClickCount(r.issue_number, r.link, r.language, r.section, r.item_key, r.url, r.clicks)
                for r in conn.execute(query)]
