"""Addresses in settings, checked when the config loads: one mailbox each, nothing a header could be
split on; host names, and the base URL every link in an email starts with.

`delivery.sender` becomes the From header and the envelope sender of every message, so
`"Digest\\r\\nBcc: victim@example.net <digest@example.org>"` or `"a@x, b@y"` must never load: the first
would send every digest From the victim (and confirmation emails would fail silently), the second
gives a From header with two addresses. The same holds for the other address settings.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from email.utils import getaddresses
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from .unsafe_chars import BIDI_CONTROLS, CONTROLS

if TYPE_CHECKING:  # config imports this module to check its settings
    from .config import Settings

_CONTROL = re.compile(f"[{CONTROLS}{BIDI_CONTROLS}]")
# The local part digest sends to: an RFC 5322 dot-atom in ASCII (no quoted strings, no SMTPUTF8).
_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
# Characters a display name may only hold inside double quotes (RFC 5322 specials, but "." which
# parsers accept in names): outside them they start another address or a group.
_NAME_SPECIALS = re.compile(r'[,;:@<>()\[\]\\"]')
_QUOTED_NAME = re.compile(r'"(?:[^"\\]|\\.)*"')


def control_problem(value: str) -> str | None:
    """Why `value` cannot go into a header: the first control character it holds; None when it holds none."""
    control = _CONTROL.search(value)
    if control:
        return f"it holds the control character U+{ord(control.group()):04X}, which could start a header of its own"
    return None


def address_problem(address: str) -> str | None:
    """Why `address` is not a plain `local@domain` digest can send with; None when it is one.

    The one rule for every address digest sends from or to (settings, subscribers, test sends).
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return "it has no @"
    if len(local) > 64 or not _LOCAL.fullmatch(local):
        return f"{local[:70]!r} is not a plain local part (ASCII letters, digits and !#$%&'*+/=?^_`{{|}}~.-)"
    if ascii_domain(domain) is None:
        return f"{domain[:70]!r} is not a host name with a dot (such as example.org)"
    return None


@functools.lru_cache(maxsize=4096)
def ascii_domain(domain: str) -> str | None:
    """The host name in lower-case ASCII (IDNA), None if it is not one with a dot.

    Cached: the idna codec is slow and a list's domains repeat (gmail.com ...).
    """
    try:
        ascii_name = domain.encode("idna").decode("ascii").lower()
    except UnicodeError:
        return None
    labels = ascii_name.split(".")
    if len(labels) < 2 or len(ascii_name) > 253 or not all(LABEL.fullmatch(label) for label in labels):
        return None
    return ascii_name


def mailbox_problem(value: str, name_allowed: bool = True) -> str | None:
    """Why `value` is not exactly one mailbox (`local@domain`, or `Name <local@domain>` when `name_allowed`).

    Refuses control characters (CR, LF, NUL, tab, DEL, C1, Unicode line separators, bidi controls),
    a second address, and a name with unquoted `,;:@<>()[]\\"` (put such a name in double quotes).
    """
    problem = control_problem(value)
    if problem:
        return problem
    text = value.strip()
    if not text:
        return "it is empty"
    name, address = "", text
    if "<" in text or ">" in text:
        if not name_allowed:
            return "use the bare address, without a name or angle brackets"
        name, bracket, rest = text.rpartition("<")
        address = rest.removesuffix(">")
        if not bracket or not rest.endswith(">") or ">" in address:
            return 'write it as Name <local@domain>, with one pair of angle brackets at the end'
        name, address = name.strip(), address.strip()
        problem = _name_problem(name)
        if problem:
            return problem
    if "," in address or ";" in address or address.count("@") > 1:
        return "it holds more than one address"
    problem = address_problem(address)
    if problem:
        return f"{address!r} is not an address: {problem}"
    # What the message builder reads (email.utils) must be this one mailbox, and nothing else.
    if [pair[1] for pair in getaddresses([text])] != [address]:
        return "it does not read as exactly one address: use Name <local@domain>"
    return None


def _name_problem(name: str) -> str | None:
    if _QUOTED_NAME.fullmatch(name):
        return None
    special = _NAME_SPECIALS.search(name)
    if special:
        return (f"the name holds {special.group()!r}, which would start another address: put the name in "
                'double quotes, e.g. "Digest, weekly" <digest@example.org>')
    return None


# --- host names and URLs -----------------------------------------------------------------------------

# What a URL inside `<...>` in a header may hold (deliver.message.check_url), minus "?" and "#":
# links are made by appending paths to web.base_url.
_BASE_URL_CHARS = frozenset("!$%&'()*+,-./0123456789:;=@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]_abcdefghijklmnopqrstuvwxyz~")
_BASE_URL_MAX = 200


# A domain of LDH labels, or an address literal in brackets (RFC 5321 4.1.3), nothing else.
_HELO_NAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                        r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?|\[[0-9A-Fa-f.:IPv]{2,60}\]")


def dns_name_problem(name: str, min_labels: int = 1) -> str:
    """What keeps `name` from being a DNS name of ASCII labels (letters, digits, inner hyphens), or ""."""
    labels = name.split(".")
    if not name.isascii() or not all(LABEL.fullmatch(label) for label in labels) or len(name) > 253:
        return "use DNS labels of letters, digits and inner hyphens, joined by dots (IDN in their xn-- form)"
    if len(labels) < min_labels:
        return "use a full domain name such as \"example.org\""
    return ""


def is_helo_name(name: str) -> bool:
    """Whether `name` can follow EHLO: a host name, or an address literal in brackets."""
    return bool(_HELO_NAME.fullmatch(name))


def base_url_problem(url: str) -> str:
    """The first thing wrong with `url` as web.base_url (it starts every link in emails), or "" if nothing is."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "it is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it must be an absolute http:// or https:// URL"
    if parts.query or parts.fragment or "?" in url or "#" in url:
        return "it must not have a query (?) or fragment (#): links are made by adding paths to it"
    if not set(url) <= _BASE_URL_CHARS:
        bad = "".join(sorted(set(url) - _BASE_URL_CHARS))
        return f"it has characters a link in an email header cannot carry ({bad!r}; spaces, quotes, <> and non-ASCII)"
    if len(url) > _BASE_URL_MAX:
        return f"it is longer than {_BASE_URL_MAX} characters"
    return ""


def origin_problem(origin: str) -> str:
    """What is wrong with `origin` as a web origin ("https://www.example.org[:port]"), or "" if nothing.

    An origin is exactly what browsers send in the Origin header: scheme, host, an optional port,
    nothing after; compared as text, so it must already be in that form (lower case, no slash).
    """
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return "it is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it must start with https:// (or http://) and name a host"
    if parts.path or parts.query or parts.fragment or "@" in parts.netloc or origin != origin.strip():
        return "it must be only scheme, host and port, with no path, not even a final /"
    if origin != origin.lower():
        return "write it in lower case, as browsers send it"
    return ""


def is_loopback_host(host: str) -> bool:
    """True for names that never leave the machine: 127.0.0.0/8, ::1, localhost and *.localhost (RFC 6761).

    `host` is a bare host (no port), as urlsplit's hostname or a Host header's name: any case, with
    or without a trailing dot or IPv6 brackets. The package's one loopback test (links, cookies).
    """
    host = host.strip().lower().removeprefix("[").removesuffix("]").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_settings_problem(settings: Settings) -> str | None:
    """The config error for the first address setting that is not exactly one mailbox; None when all are.

    `delivery.sender`, `delivery.reply_to` and each of `schedule.staff` may carry a name;
    `delivery.unsubscribe_mailto` is a bare address; reply_to and unsubscribe_mailto may be empty.
    `delivery.list_id` may hold no control character.
    """
    d = settings.delivery
    checks = [("delivery.sender", d.sender, True), ("delivery.reply_to", d.reply_to, True),
              ("delivery.unsubscribe_mailto", d.unsubscribe_mailto, False),
              *((f"schedule.staff[{i}]", address, True) for i, address in enumerate(settings.schedule.staff))]
    for key, value, name_allowed in checks:
        if not value and key in ("delivery.reply_to", "delivery.unsubscribe_mailto"):
            continue  # left out of the messages
        problem = mailbox_problem(value, name_allowed)
        if problem:
            example = '"Digest <digest@example.org>"' if name_allowed else '"comms@example.org"'
            return f"'{key}' is {value!r}: {problem}. Use one address, e.g. {example}"
    problem = control_problem(d.list_id)
    if problem:
        return f"'delivery.list_id' is {d.list_id!r}: {problem}. Use \"Description <digest.example.org>\""
    return None
