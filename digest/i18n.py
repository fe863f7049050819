"""Localisation for editions: translation catalogues for template strings, and dates in the site timezone.

Catalogues live in `digest/locale/<lang>/LC_MESSAGES/digest.po` and are read at runtime with Babel
(no compile step to forget); English strings are the msgids, so English needs no translations.
"""

from __future__ import annotations

import functools
import io
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale
from babel.dates import format_date, format_interval, format_time
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DOMAIN = "digest"
# Babel's bare "en" is US English; a European organisation writes dates the British way.
_FORMAT_LOCALES = {"en": "en_GB"}


def format_locale(language: str) -> str:
    """The Babel locale used to format dates and numbers for an edition language."""
    return _FORMAT_LOCALES.get(language, language)


def catalogue_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.lru_cache(maxsize=16)
def translations(language: str) -> NullTranslations:
    """gettext translations for a language, read from its .po file; English (or none) falls back to msgids."""
    path = catalogue_path(language)
    if not path.exists():
        return NullTranslations()
    with path.open("rb") as fh:
        catalog = read_po(fh, locale=language, domain=DOMAIN)
    buffer = io.BytesIO()
    write_mo(buffer, catalog, use_fuzzy=False)
    buffer.seek(0)
    return Translations(fp=buffer, domain=DOMAIN)


def language_name(code: str, in_language: str) -> str:
    """The name of language `code` written in `in_language` (e.g. de in fr → "allemand")."""
    try:
        return Locale.parse(in_language).languages.get(code, code.upper())
    except (ValueError, TypeError):
        return code.upper()


def local(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz)


def long_date(moment: datetime, language: str, tz: ZoneInfo) -> str:
    """"3 December 2026" in the edition's language, in the site timezone."""
    return format_date(local(moment, tz), "long", locale=format_locale(language))


def full_date(moment: datetime, language: str, tz: ZoneInfo) -> str:
    """"Thursday, 3 December 2026"."""
    return format_date(local(moment, tz), "full", locale=format_locale(language))


def short_time(moment: datetime, language: str, tz: ZoneInfo) -> str:
    return format_time(local(moment, tz), "short", locale=format_locale(language))


def time_range(start: datetime, end: datetime | None, language: str, tz: ZoneInfo) -> str:
    """"14:00–16:00 CET" (a single time when there is no end or it ends on another day)."""
    start_local = local(start, tz)
    text = short_time(start, language, tz)
    if end is not None and end > start and local(end, tz).date() == start_local.date():
        text += "–" + short_time(end, language, tz)
    zone = start_local.tzname() or ""
    return f"{text} {zone}".strip()


def date_range(start: datetime, end: datetime, language: str, tz: ZoneInfo) -> str:
    """A window as "16–22 Nov 2026" (the end instant is exclusive, so the last day shown is end − 1 µs)."""
    first = local(start, tz).date()
    last = (local(end, tz) - timedelta(microseconds=1)).date()
    if last <= first:
        return format_date(first, "medium", locale=format_locale(language))
    return format_interval(first, last, "yMMMd", locale=format_locale(language))
