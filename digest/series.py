"""Category terms → configured series, tolerant to the ways CMSs spell the same name.

Ignored when comparing: case, surrounding and doubled whitespace, the dash used (`-`, `–`, `—`
and friends), `&` versus `and`, and HTML entities left in category text (`&amp;`, `&#8211;`).
Anything else (a missing word, "Defense" for "Defence") needs an alias in the config.
A category must equal the whole series name or alias: "Security & Defence" alone does not
match "European Strategic Autonomy series – Security & Defence".
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable, Sequence
from functools import lru_cache

from .models import Series

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
