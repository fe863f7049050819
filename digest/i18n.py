"""Localisation for editions: translation catalogues for template strings, and dates in the site timezone.

Catalogues live in `digest/locale/<lang>/LC_MESSAGES/digest.po` and are read at runtime with Babel
(no compile step to forget); English strings are the msgids, so English needs no translations.
"""

from __future__ import annotations

import functools
import io
import re
from datetime import UTC, date, datetime, time, timedelta
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


# --- events ---------------------------------------------------------------------------------------

def is_all_day(start: datetime, end: datetime | None, tz: ZoneInfo) -> bool:
    """Whether an event has dates but no clock time.

    digest.parse reads a date-only ev:startdate as midnight UTC (compose then shows it in the site
    zone, 01:00 CET: the bug readers saw), and calendars write a whole day as midnight to midnight
    in their own zone: either, for the start and an end if there is one, is a date-only event. The
    price: an event really starting at 00:00 UTC (01:00 in Brussels) with no end, or ending at
    00:00 UTC, reads as date-only; a site-zone midnight start needs a midnight end to count.
    """
    if _utc_midnight(start) and (end is None or _utc_midnight(end)):
        return True
    return end is not None and end > start and _site_midnight(start, tz) and _site_midnight(end, tz)


def _utc_midnight(moment: datetime) -> bool:
    return moment.astimezone(UTC).time() == time()


def _site_midnight(moment: datetime, tz: ZoneInfo) -> bool:
    return local(moment, tz).time() == time()


def event_days(start: datetime, end: datetime | None, tz: ZoneInfo) -> tuple[date, date]:
    """(first day, last day) of an all-day event (see is_all_day).

    A date-only end (midnight UTC) is the last day itself, as feeds write "14–15 January" as
    startdate 14, enddate 15; a midnight-to-midnight end in the site zone is exclusive, as in iCalendar.
    """
    if _utc_midnight(start) and (end is None or _utc_midnight(end)):
        first = start.astimezone(UTC).date()
        last = end.astimezone(UTC).date() if end is not None else first
    else:
        first = local(start, tz).date()
        last = (local(end, tz) - timedelta(days=1)).date() if end is not None else first
    return first, max(first, last)


def day_range(first: date, last: date, language: str) -> str:
    """"10–11 December 2026", "30 November – 2 December 2026", "10.–11. Dezember 2026"; one day in full."""
    locale = format_locale(language)
    if last <= first:
        return format_date(first, "full", locale=locale)
    day = "d." if language == "de" else "d"
    if (first.year, first.month) == (last.year, last.month):
        return f"{format_date(first, day, locale=locale)}–{format_date(last, 'long', locale=locale)}"
    if first.year == last.year:
        return f"{format_date(first, day + ' MMMM', locale=locale)} – {format_date(last, 'long', locale=locale)}"
    return f"{format_date(first, 'long', locale=locale)} – {format_date(last, 'long', locale=locale)}"


def event_when(start: datetime, end: datetime | None, language: str, tz: ZoneInfo) -> tuple[str, str]:
    """(dates, clock time) of an event as an edition shows them, in the site timezone.

    All-day events: their days and no time. Timed events on one day: "Thursday, 3 December 2026"
    and "18:30–20:00 CET". Timed events over several days: "10–11 December 2026" and
    "18:00 – 11 Dec 13:00 CET" (the end's day said again, so the times cannot be misread).
    """
    if is_all_day(start, end, tz):
        return day_range(*event_days(start, end, tz), language), ""
    start_local = local(start, tz)
    if end is None or end <= start or local(end, tz).date() == start_local.date():
        return full_date(start, language, tz), time_range(start, end, language, tz)
    end_local = local(end, tz)
    locale = format_locale(language)
    end_day = format_date(end_local, "d. MMM" if language == "de" else "d MMM", locale=locale)
    zone = start_local.tzname() or ""
    when = f"{short_time(start, language, tz)} – {end_day} {short_time(end, language, tz)} {zone}".strip()
    return day_range(start_local.date(), end_local.date(), language), when


# --- typography -----------------------------------------------------------------------------------

# French elides "de", "que", "le", "la" before a vowel: "la lettre d’Europa …", not "de Europa". Only
# before a capital (a name put into a sentence, as the site's name is): a lower-case word after "de"
# in a translation was written by a translator who knew the rule.
_FRENCH_ELISION = re.compile(r"\b([DdLl]e|[Qq]ue|[Ll]a) (?=[AEIOUYÀÂÉÈÊÎÔÛ])")


def elide(text: str, language: str) -> str:
    """`text` with the language's elisions made where a name was put into a sentence (French only)."""
    if language != "fr" or not text:
        return text
    return _FRENCH_ELISION.sub(lambda m: m.group(1)[:-1] + "’", text)


# French puts a no-break space before ; : ! ? and inside « » (the Imprimerie nationale's rule, with the
# ordinary no-break space the mail clients all know); a staff-written text's plain space there is
# made one, so a line never breaks before a question mark.
_FRENCH_SPACE_BEFORE = re.compile(r"[ \t]+(?=[;:!?»])")
_FRENCH_SPACE_AFTER = re.compile(r"(?<=«)[ \t]+")


def typeset(text: str, language: str) -> str:
    """`text` (plain, staff-written) with the language's spacing rules applied (French only)."""
    if language != "fr" or not text:
        return text
    return _FRENCH_SPACE_AFTER.sub("\u00a0", _FRENCH_SPACE_BEFORE.sub("\u00a0", text))


def colon(language: str) -> str:
    """A label's colon as the language writes it: French puts a no-break space before it."""
    return "\u00a0:" if language == "fr" else ":"


@functools.lru_cache(maxsize=256)
def known_language(code: str | None) -> str:
    """The two-letter language of a tag such as "de", "de-AT" or "fr_BE" when it names a real
    language; "" for none, "und", "xx" and the like."""
    primary = (code or "").strip().replace("_", "-").split("-", 1)[0].lower()
    if len(primary) != 2 or not primary.isalpha():
        return ""
    return primary if primary in Locale("en").languages else ""
