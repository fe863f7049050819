"""Offline language detection for items that do not state their language.

Uses py3langid, whose model ships inside the package (no network). Classification is
restricted to European languages, which makes short news snippets far more reliable, and
answers None rather than guess when the text is short or the model unsure.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

# Languages a European policy foundation's media mentions plausibly use.
CANDIDATE_LANGUAGES = (
    "en", "de", "fr", "es", "it", "nl", "pt", "pl", "cs", "sk", "sl", "hr", "hu", "ro", "bg",
    "el", "sv", "da", "nb", "fi", "et", "lv", "lt", "ga", "mt", "ca", "eu", "gl", "lb", "uk",
)
MIN_LETTERS = 20
MIN_CONFIDENCE = 0.80

_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


@lru_cache(maxsize=1)
def _identifier() -> LanguageIdentifier:
    # Loaded on first use (≈0.8 s, numpy included): most feeds state their language. A parse worker
    # keeps it for the process's later fetches.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    known = set(identifier.labels)
    identifier.set_languages([code for code in CANDIDATE_LANGUAGES if code in known])
    return identifier


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of `text`'s language, or None when too short or unsure.

    Needs at least MIN_LETTERS letters and a normalised probability of MIN_CONFIDENCE.
    """
    if not text or len(_LETTER.findall(text)) < MIN_LETTERS:
        return None
    language, confidence = _identifier().classify(text)
    return language if confidence >= MIN_CONFIDENCE else None


def normalise_language(value: str | None) -> str | None:
    """A stated language tag ("de-AT", "en_GB", "FR") as its primary subtag, or None if not a tag."""
    if not value:
        return None
    primary = re.split(r"[-_]", value.strip(), maxsplit=1)[0].lower()
    return primary if re.fullmatch(r"[a-z]{2,3}", primary) else None
