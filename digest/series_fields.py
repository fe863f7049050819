"""A store-managed series' fields from untrusted input (a form, a command line), checked once. Pure.

Ids are letters, digits, '-' and '_' (as for [[series]] in digest.toml). Names and aliases lose
surrounding and repeated spaces and must hold no control characters. An alias that means the same
as the series' own name, or as another of its aliases (digest.series.series_key), is dropped: it
would match nothing more. Whether a name or alias belongs to another series is checked against the
others by `clash` (the matching stage's own comparison, so what it refuses is exactly what would
match two series).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

from .config import LANGUAGES
from .feed_fields import http_url_problem
from .models import Series
from .sanitize import MAX_NAME_CHARS
from .series import series_key
from .unsafe_chars import BIDI_CONTROLS, CONTROLS

MAX_ID_CHARS = 100  # the store's column
MAX_ALIASES = 50
_UNSAFE = re.compile(f"[{CONTROLS}{BIDI_CONTROLS}]")
_ID = re.compile(r"[A-Za-z0-9_-]+")


class InvalidSeries(ValueError):
    """A field is not acceptable; the message says which and how to fix it."""


class AliasTaken(InvalidSeries):
    """A name or alias already matches another series; the message names that series."""


def make_series(series_id: str, name: str, names: Mapping[str, str] | None = None, aliases: Iterable[str] = (),
                url: str = "") -> Series:
    """A Series from typed text, or InvalidSeries naming the first problem."""
    cleaned_name = text_field(name, "the series name")
    return Series(id=series_id_field(series_id), name=cleaned_name, aliases=alias_list(aliases, cleaned_name),
                  url=url_field(url), names=names_field(names or {}))


def shown(value: str, limit: int = 60) -> str:
    """Untrusted text fit for a message: control characters replaced, cut to `limit`."""
    value = _UNSAFE.sub("?", str(value))
    return value if len(value) <= limit else value[:limit - 1] + "…"


def series_id_field(value: str) -> str:
    series_id = str(value).strip()
    if not series_id:
        raise InvalidSeries("the series needs an id, e.g. security-defence (letters, digits, '-' and '_')")
    if len(series_id) > MAX_ID_CHARS or not _ID.fullmatch(series_id):
        raise InvalidSeries(f"the id {shown(series_id)!r} is not usable: use at most {MAX_ID_CHARS} letters, "
                            "digits, '-' and '_', e.g. security-defence")
    return series_id


def text_field(value: str, what: str) -> str:
    cleaned = " ".join(str(value).split())
    if not cleaned:
        raise InvalidSeries(f"{what} is empty; type it")
    if _UNSAFE.search(cleaned):
        raise InvalidSeries(f"{what} holds control characters; type it again")
    if len(cleaned) > MAX_NAME_CHARS:
        raise InvalidSeries(f"{what} is {len(cleaned)} characters long; use at most {MAX_NAME_CHARS}")
    return cleaned


def names_field(names: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The name per language as sorted (language, name) pairs; an empty name means none in that language."""
    pairs = []
    for language, name in names.items():
        if language not in LANGUAGES:
            raise InvalidSeries(f"the language {shown(language, 20)!r} is unknown; use one of {', '.join(LANGUAGES)}")
        if str(name).strip():
            pairs.append((language, text_field(name, f"the {language} name")))
    return tuple(sorted(pairs))


def alias_list(aliases: Iterable[str], name: str) -> tuple[str, ...]:
    """The aliases, cleaned, without blanks and without those that mean the name or an earlier alias."""
    seen = {series_key(name)}
    kept: list[str] = []
    for alias in aliases:
        if not str(alias).strip():
            continue
        cleaned = text_field(alias, "an alias")
        if series_key(cleaned) in seen:
            continue
        seen.add(series_key(cleaned))
        kept.append(cleaned)
    if len(kept) > MAX_ALIASES:
        raise InvalidSeries(f"a series takes at most {MAX_ALIASES} aliases")
    return tuple(kept)


def url_field(value: str) -> str:
    url = str(value).strip()
    if url and (problem := http_url_problem(url, "https://www.example.org/series/x/")):
        raise InvalidSeries(problem)
    return url


def clash(series: Series, others: Sequence[Series]) -> None:
    """AliasTaken when the series' name or an alias would also match one of `others` (its name or an alias)."""
    owners = {}
    for other in others:
        if other.id == series.id:
            continue
        for text in (other.name, *other.aliases):
            owners.setdefault(series_key(text), (other, text))
    for text in (series.name, *series.aliases):
        owner = owners.get(series_key(text))
        if owner is None:
            continue
        other, its = owner
        word = "name" if text == series.name else "alias"
        as_what = "that series' name" if its == other.name else f"its alias {its!r}"
        raise AliasTaken(f"the {word} {text!r} already belongs to the series {other.name!r} (id {other.id!r}: "
                         f"it matches {as_what}); remove it from that series first, or choose another")
