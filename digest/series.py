"""Category terms → configured series, tolerant to the ways CMSs spell the same name.

Ignored when comparing: case, surrounding and doubled whitespace, the dash used (`-`, `–`, `—`
and friends), `&` versus `and`, and HTML entities left in category text (`&amp;`, `&#8211;`).
Anything else (a missing word, "Defense" for "Defence") needs an alias in the config.
A category must equal the whole series name or alias: "Security & Defence" alone does not
match "European Strategic Autonomy series – Security & Defence".

A category that matches no series but nearly spells one ("Europen Strategic Autonomy series –
Digital & Technology") is a near miss: never matched, but reported on the feed with the alias to add.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

from .models import Series
from .sanitize import MAX_NAME_CHARS, plain_text

# How alike (rapidfuzz's normalised Indel similarity, 0-100, on the comparison forms) a category must
# be to a series name or alias to count as a near miss. One letter off a long name scores 97-99; a
# different real category scores lower: "… – Security & Defence – Archive" 92, "… – Security &
# Digital" 90, "European Strategic Autonomy series" alone 77 (see tests/test_series.py).
NEAR_MISS_SCORE = 95.0

_DASHES = re.compile(r"\s*[-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d]\s*")
_AMPERSAND = re.compile(r"\s*&\s*")
_SPACES = re.compile(r"\s+")


@lru_cache(maxsize=4096)
def series_key(text: str) -> str:
    """The comparison form of a category or series name (see the module docstring)."""
    for _ in range(3):  # "&amp;#8211;" needs two rounds; stop once nothing changes
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _DASHES.sub(" - ", text)
    text = _AMPERSAND.sub(" and ", text)
    return _SPACES.sub(" ", text).strip()


def match_series(categories: Iterable[str], series: Sequence[Series]) -> tuple[str, ...]:
    """Ids of the series whose name or an alias equals one of `categories`, in config order."""
    wanted = {series_key(c) for c in categories}
    wanted.discard("")
    if not wanted:
        return ()
    matched = []
    for s in series:
        names = (s.name, *s.aliases)
        if s.id not in matched and any(series_key(n) in wanted for n in names):
            matched.append(s.id)
    return tuple(matched)


def near_misses(categories: Iterable[str], series: Sequence[Series]) -> list[str]:
    """A warning per distinct category that matches no series but nearly spells one: "did you mean …?", with the alias line.

    Nearly: a rapidfuzz similarity of at least NEAR_MISS_SCORE to a series name or alias, both in
    their comparison form, so case, dashes and entities neither hide nor make a near miss.
    """
    names = {series_key(name): (s, name) for s in series for name in (s.name, *s.aliases)}
    names.pop("", None)
    if not names:
        return []
    # Imported here: every process that can parse imports this module, few ever meet a near miss.
    from rapidfuzz import fuzz, process
    warnings: list[str] = []
    seen: set[str] = set()
    for category in categories:
        key = series_key(category)
        if not key or key in seen or key in names:
            continue
        seen.add(key)
        best = process.extractOne(key, list(names), scorer=fuzz.ratio, score_cutoff=NEAR_MISS_SCORE)
        if best is None:
            continue
        target, name = names[best[0]]
        text = plain_text(category, is_html=True, limit=MAX_NAME_CHARS)
        warnings.append(
            f"category {text!r} matches no series: did you mean {name!r}? If it is that series, add the alias "
            f"to the [[series]] with id = {target.id!r}: aliases = {_toml_list([*target.aliases, text])}")
    return warnings


def _toml_list(values: Sequence[str]) -> str:
    """A TOML array of basic strings (JSON's string escapes are TOML's)."""
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"
