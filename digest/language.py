"""Offline language detection for items that do not state their language.

Uses py3langid, whose model ships inside the package (no network). Classification is
restricted to European languages, which makes short news snippets far more reliable, and
answers None rather than guess when the text is short or the model unsure.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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
# Overruling a feed's declared language takes more: a sentence or two of text, and a model all but
# certain. Short titles ("Vienna Progressive Forum") and mixed text keep what the feed declared.
STRONG_LETTERS = 40
STRONG_CONFIDENCE = 0.98

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


def item_language(declared: str | None, title: str, summary_html: str, sample: Callable[[], str]) -> str | None:
    """An item's language when all it has is its feed's declaration: the declared one, unless the text strongly disagrees.

    An events feed declaring `en` carries German and French events too. Detection overrules the
    declaration only when the title or the start of the summary holds two or more function words of
    another language (a cheap gate on the raw text: the model is asked, and loaded, only then), the
    text `sample()` gives has at least STRONG_LETTERS letters, and the model is STRONG_CONFIDENCE
    sure; anything weaker keeps `declared`, and so does a declared language outside
    CANDIDATE_LANGUAGES. Without a declaration this is detect_language(sample()).
    """
    if declared is None:
        return detect_language(sample())
    if declared not in CANDIDATE_LANGUAGES:  # the model cannot even say it (ru): it would only misread it
        return declared
    if not may_disagree(declared, title, summary_html):
        return declared
    text = sample()
    if len(_LETTER.findall(text)) < STRONG_LETTERS:
        return declared
    language, confidence = _identifier().classify(text)
    return language if confidence >= STRONG_CONFIDENCE else declared


# The commonest function words of the languages a feed most often mixes in, none of them also an
# English word. Two of one other language's in an item's text are worth asking the model; without
# them the declared language stands and the model is never loaded (most feeds are in one language).
_FUNCTION_WORDS = {
    "en": "the and of to is for with that this are from was were have has which",
    "de": "der die das und ist nicht mit für von den dem des wir sie ein eine einer auf über zur zum",
    "fr": "le la les des et est une un pour dans du sur avec nous vous aux qui ne pas leur",
    "es": "el los las del que con para una por es y se su al como más",
    "it": "il lo gli della di che per con una è del nel sono alla delle",
    "nl": "het een van en niet met voor zijn op de dat ook naar bij",
    "pt": "os do da que com para uma não em é dos das ao pelo pela",
    "pl": "się nie jest że na dla oraz przez jak od po",
}
# Only the start of a summary is looked at, in place (no copy): a sentence or two is enough.
_GATE_CHARS = 1200


@lru_cache(maxsize=64)
def _other_words(declared: str) -> tuple[re.Pattern[str], dict[str, tuple[str, ...]]]:
    """A pattern for the function words of every language but `declared`, and each word's languages."""
    languages: dict[str, list[str]] = {}
    for language, words in _FUNCTION_WORDS.items():
        if language != declared:
            for word in words.split():
                languages.setdefault(word, []).append(language)
    own = set(_FUNCTION_WORDS.get(declared, "").split())
    names = sorted((w for w in languages if w not in own), key=len, reverse=True)
    pattern = re.compile(r"\b(?:" + "|".join(map(re.escape, names)) + r")\b", re.IGNORECASE)
    return pattern, {word: tuple(found) for word, found in languages.items()}


def may_disagree(declared: str, title: str, summary_html: str) -> bool:
    """Whether the title and the summary's start hold two or more function words of one language other than `declared`.

    Runs on every item of a feed that declares its language, so it reads the raw text in place and
    allocates next to nothing for text in the declared language.
    """
    pattern, languages = _other_words(declared)
    seen: dict[str, set[str]] = {}
    for text, end in ((title, len(title)), (summary_html, _GATE_CHARS)):
        for match in pattern.finditer(text, 0, end):
            word = match.group().lower()
            for language in languages.get(word, ()):
                words = seen.setdefault(language, set())
                words.add(word)
                if len(words) >= 2:
                    return True
    return False
