"""Finding subscribers for the admin: search by address or name, filter by status, series and language,
counted and paged in the database (a list of 100,000 never passes through Python).

A subscriber with no series (`[]`) receives every series, so filtering by a series finds them
too, as `iter_subscribers` does. The series are a JSON list: SQLite reads it with json_each,
PostgreSQL with json_array_elements_text.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, Engine, and_, column, func, or_, select, true

from ..models import Subscriber, SubscriberStatus
from .schema import subscribers
from .subscribers import _subscriber

MAX_QUERY = 200


@dataclass(frozen=True)
class SubscriberFilter:
    """What staff look for; empty fields match everyone."""

    text: str = ""  # part of the address or the name, any case
    status: SubscriberStatus | None = None
    series: str = ""  # a series id: its readers, including those who receive every series
    language: str = ""


def _series_condition(engine: Engine, series: str) -> ColumnElement[bool]:
    elements = func.json_array_elements_text if engine.dialect.name == "postgresql" else func.json_each
    element = elements(subscribers.c.series).table_valued("value")
    length = func.json_array_length(subscribers.c.series)
    listed = select(1).select_from(element).where(column("value") == series).exists()
    return or_(length == 0, listed)


def _conditions(engine: Engine, wanted: SubscriberFilter) -> ColumnElement[bool]:
    parts: list[ColumnElement[bool]] = []
    text = wanted.text.strip().lower()[:MAX_QUERY]
    if text:
        parts.append(or_(subscribers.c.email.contains(text, autoescape=True),
                         func.lower(subscribers.c.name).contains(text, autoescape=True)))
    if wanted.status is not None:
        parts.append(subscribers.c.status == wanted.status.value)
    if wanted.language:
        parts.append(subscribers.c.language == wanted.language)
    if wanted.series:
        parts.append(_series_condition(engine, wanted.series))
    return and_(true(), *parts)


def count_subscribers(engine: Engine, wanted: SubscriberFilter) -> int:
    """How many subscribers match."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(subscribers).where(_conditions(engine, wanted))).scalar_one()


def find_subscribers(engine: Engine, wanted: SubscriberFilter, offset: int = 0, limit: int = 50) -> list[Subscriber]:
    """One page of matching subscribers, newest first."""
    query = (select(subscribers).where(_conditions(engine, wanted)).order_by(subscribers.c.id.desc())
             .offset(max(0, offset)).limit(max(1, limit)))
    with engine.connect() as conn:
        return [_subscriber(r) for r in conn.execute(query)]


def languages_in_use(engine: Engine) -> list[str]:
    """The languages stored subscribers read, for the filter's choices."""
    with engine.connect() as conn:
        return sorted(conn.execute(select(subscribers.c.language).distinct()).scalars())
