"""A subscriber's fields from untrusted input (a form, a list file, a command line), checked once for all.

An address is validated with email-validator (no DNS look-ups) and kept in one canonical form
(ASCII domain, lower case), so the same person is never two rows. Names lose control characters;
languages and series must be the configured ones. `make_subscriber` is the one road from typed
text to a Subscriber: the subscribe form, `digest subscribers add` and list files all take it.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime

from email_validator import EmailNotValidError, validate_email

from .config import LANGUAGES, Settings
from .models import Subscriber, SubscriberStatus

MAX_NAME = 200
YES, NO = ("true", "yes", "1", "y", "oui", "ja"), ("false", "no", "0", "n", "non", "nein")
# A subscriber in one of these states was removed by their own action or their mailbox:
# imports and staff never bring them back; only their own confirmed sign-up does.
SUPPRESSED_STATUSES = (SubscriberStatus.UNSUBSCRIBED, SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED)


class InvalidSubscriber(ValueError):
    """A field is not acceptable; the message is the (first) reason shown to the person or in a report.

    `fields` names every field found wrong ("email", "language", "series", …), so a form can
    mark each of them.
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.fields = fields


def normalise_email(raw: str) -> str:
    """The canonical form of an address (ASCII domain, lower case); InvalidSubscriber if it is not one.

    Plain ASCII addresses (the vast majority) take a fast path: the part before the @ is checked
    against RFC 5322's dot-atom here and the domain by email-validator once per domain (cached), which
    is what makes a 100,000-row import fast; a test checks both paths agree.
    """
    text = (raw or "").strip()
    if not text:
        raise InvalidSubscriber("invalid address: empty", ("email",))
    local, at, domain = text.rpartition("@")
    if at and len(local) <= 64 and _DOT_ATOM.fullmatch(local) and domain.isascii():
        address = f"{local}@{_checked_domain(domain.lower())}".lower()
        if len(address) <= 254:
            return address
    return _validated(text)


_DOT_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@functools.lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str:
    return _validated(f"a@{domain}").rpartition("@")[2]  # the shortest local part: only the domain can fail


def _validated(text: str) -> str:
    try:
        result = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidSubscriber(f"invalid address: {exc}", ("email",)) from None
    if len(result.local_part) > 64:  # RFC 5321's limit; many servers refuse longer ones
        raise InvalidSubscriber("invalid address: the part before the @-sign is longer than 64 characters",
                                ("email",))
    return result.ascii_email.lower()


def clean_name(raw: str) -> str:
    """A display name without control characters (no header injection), whitespace collapsed, capped."""
    text = raw or ""
    if not text.isprintable():  # fast path: most names have nothing to remove
        text = "".join(" " if unicodedata.category(c)[0] == "C" else c for c in text)
    return " ".join(text.split())[:MAX_NAME]


def parse_language(raw: str, default: str) -> str:
    """One of en, fr, de (case-insensitive); empty gives `default`."""
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value not in LANGUAGES:
        raise InvalidSubscriber(f"unknown language {value[:20]!r}: use one of {', '.join(LANGUAGES)}", ("language",))
    return value


def parse_series(raw: str | Iterable[str], settings: Settings) -> tuple[str, ...]:
    """Series ids in configuration order; `;`-separated text or a list; empty means all series."""
    values = raw.split(";") if isinstance(raw, str) else list(raw)
    wanted = {v.strip() for v in values if v and v.strip()}
    if not wanted:
        return ()
    known = [s.id for s in settings.series]
    unknown = sorted(wanted - set(known))
    if unknown:
        shown = ", ".join(repr(u[:60]) for u in unknown[:3])
        raise InvalidSubscriber(f"unknown series {shown}: use ids from [[series]] "
                                f"({', '.join(known) or 'none configured'})", ("series",))
    if wanted == set(known):
        return ()  # following every series is "all", which also covers series added later
    return tuple(s for s in known if s in wanted)


def parse_flag(raw: str, column: str) -> bool:
    """A yes/no cell; empty means yes (every section is wanted unless the reader said otherwise)."""
    text = raw.strip().lower()
    if text in YES or not text:
        return True
    if text in NO:
        return False
    raise InvalidSubscriber(f"{column} is {raw.strip()!r}: use true or false", (column,))


def parse_time(raw: str, column: str) -> datetime | None:
    """An ISO 8601 date and time (UTC when it has no offset); empty gives None."""
    text = raw.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidSubscriber(f"{column} is {text[:40]!r}: use an ISO date and time such as "
                                "2026-11-23T09:00:00+00:00", (column,)) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_choices(settings: Settings, language: str, series: str | Iterable[str],
                  default_language: str = "") -> tuple[str, tuple[str, ...]]:
    """A reader's language and series, checked together; an empty language gives `default_language` (else the site's).

    InvalidSubscriber carries the first reason and names every bad field (language, series).
    """
    problems: list[InvalidSubscriber] = []
    chosen_language, chosen_series = "", ()
    try:
        chosen_language = parse_language(language, default_language or settings.site.language)
    except InvalidSubscriber as exc:
        problems.append(exc)
    try:
        chosen_series = parse_series(series, settings)
    except InvalidSubscriber as exc:
        problems.append(exc)
    if problems:
        raise _all_of(problems)
    return chosen_language, chosen_series


def make_subscriber(settings: Settings, email: str, name: str = "", language: str = "",
                    series: str | Iterable[str] = (), **fields: object) -> Subscriber:
    """A validated Subscriber from untrusted input: the one cleaning rule for forms, commands and list files.

    An empty language means `site.language`. InvalidSubscriber carries the first reason and names
    every bad field (email, language, series), so a form can mark them all at once.
    """
    problems: list[InvalidSubscriber] = []
    address, chosen = "", ("", ())
    try:
        address = normalise_email(email)
    except InvalidSubscriber as exc:
        problems.append(exc)
    try:
        chosen = parse_choices(settings, language, series)
    except InvalidSubscriber as exc:
        problems.append(exc)
    if problems:
        raise _all_of(problems)
    return Subscriber(email=address, name=clean_name(name), language=chosen[0], series=chosen[1], **fields)


def _all_of(problems: list[InvalidSubscriber]) -> InvalidSubscriber:
    """One error for several bad fields: the first one's reason, every field named."""
    return InvalidSubscriber(str(problems[0]), tuple(f for p in problems for f in p.fields))


def same_choices(a: Subscriber, b: Subscriber) -> bool:
    """Whether two subscribers chose alike: name, language, series and sections."""
    return (a.name, a.language, a.series, a.want_events, a.want_media) == (
        b.name, b.language, b.series, b.want_events, b.want_media)
