"""Untrusted feed text made safe: sanitised HTML, plain-text titles, checked URLs.

Everything here treats its input as hostile. HTML goes through nh3 (the ammonia sanitiser),
which parses like a browser, so entity and case tricks (`JaVaScRiPt&#58;`, `&#x6A;avascript:`,
tabs inside a scheme) are decoded before the scheme check rather than slipping past it.
feedparser's own sanitiser is switched off: it keeps <form>, <svg> and data: URLs.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import SplitResult, unquote, urljoin, urlsplit

import nh3

from .unsafe_chars import BIDI_CONTROLS, CONTROLS, NONCHARACTERS, SURROGATES, XML_INVALID

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
WEB_SCHEMES = frozenset({"http", "https"})
# Dropped together with everything inside them, not just unwrapped.
DROPPED_WITH_CONTENT = frozenset({
    "script", "style", "svg", "math", "iframe", "frame", "frameset", "object", "embed", "applet",
    "noscript", "template", "form", "textarea", "select", "button", "head", "title",
})
# Allowed tags: nh3's defaults (no script, style, form, iframe, svg) minus image maps.
ALLOWED_TAGS = frozenset(nh3.ALLOWED_TAGS - {"map", "area"})
MAX_TITLE_CHARS = 1000
MAX_NAME_CHARS = 200

_CONTROL = re.compile(f"[{CONTROLS}]")
# One XML-invalid character in an edition's markup breaks MJML compilation of every edition, so none
# leaves this module.
_XML_INVALID = re.compile(f"[{XML_INVALID}]")
# Invisible in a title and only trouble there (see digest.unsafe_chars).
_TITLE_INVISIBLE = re.compile(f"[{SURROGATES}{NONCHARACTERS}{BIDI_CONTROLS}]")
_SPACES = re.compile(r"\s+")
# The names of HTML elements a title's markup may use: what nh3 knows, allows or drops with content.
_ELEMENTS = frozenset(nh3.ALLOWED_TAGS | DROPPED_WITH_CONTENT | {"font", "center", "blink", "marquee", "span", "div"})
_CLOSING_TAG = re.compile(r"</([A-Za-z][A-Za-z0-9]*)\s*>")
_VOID_ELEMENT = re.compile(r"<(?:img|br|hr|wbr|input|meta|link|base|source|embed|area|col|param|track)\b[^<>]*>",
                           re.IGNORECASE)
# The WHATWG URL parser drops ASCII tab and newline anywhere in a URL.
_URL_NOISE = re.compile(r"[\t\n\r]")
# A link holding these is markup or an attribute's leftovers ("<b>Register</b>"), never a URL: joined
# to the channel link it would look like one, so it is dropped instead.
_MARKUP_IN_URL = re.compile(r'[<>"]')
# google.com, www.google.de, google.co.uk, www.google.com.au …
_GOOGLE_HOST = re.compile(r"(?:www\.)?google\.(?:com|[a-z]{2}|co\.[a-z]{2}|com\.[a-z]{2})")


def sanitize_html(value: str, base_url: str | None = None) -> str:
    """Sanitised HTML: safe tags only, no scripts, handlers, styles or unsafe URL schemes.

    Relative href/src values are resolved against `base_url` (xml:base or the channel link);
    without a usable base they are removed, since a relative link is dead in an email.
    """
    if not value or not value.strip():
        return ""
    # Before nh3 too: it cannot take a lone surrogate at all.
    cleaned = _cleaner(_web_base(base_url)).clean(_XML_INVALID.sub("", value))
    return _XML_INVALID.sub("", cleaned).strip()  # and after: &#xFFFF; is only decoded by nh3


def html_from_text(value: str) -> str:
    """A plain-text field (e.g. a text/plain summary) as safe HTML."""
    text = _CONTROL.sub(lambda m: " " if m.group() in "\t\n\r" else "", value or "")
    return html.escape(_XML_INVALID.sub("", text).strip(), quote=False)


def plain_text(value: str, is_html: bool = False, limit: int = MAX_TITLE_CHARS) -> str:
    """One line of plain text: markup stripped (if `is_html`), entities decoded once, no controls.

    CR, LF, NUL and other control characters become spaces or vanish, whitespace collapses,
    non-characters, surrogates and bidi override/isolate controls vanish, and text longer than
    `limit` is cut with an ellipsis.
    """
    if not value:
        return ""
    value = _without_invisible(value)
    if is_html and ("<" in value or "&" in value):
        # nh3 drops tags (and script/style bodies) and re-escapes the text; unescape once. Text with
        # neither "<" nor "&" has no markup and no entity: nh3 would hand it back as it is.
        value = html.unescape(_text_cleaner().clean(value))
    if is_html and looks_like_markup(value):
        # HTML escaped twice at the source: strip the tags left after one decoding too, but protect
        # "&" so that no entity is decoded a second time. Text is text: "x<y and y>z" keeps every character.
        value = html.unescape(_text_cleaner().clean(value.replace("&", "&amp;")))
    value = _CONTROL.sub(" ", _without_invisible(value))  # again: entities decoded above
    value = _SPACES.sub(" ", value).strip()
    if len(value) > limit:
        value = value[: limit - 1].rstrip() + "…"
    return value


def looks_like_markup(value: str) -> bool:
    """Whether `value` holds an HTML element: a known element closed (`<b>…</b>`) or a void one (`<img …>`).

    "History of the <blink> tag" (no closing tag) and "x<y and y>z" (no element) are text.
    """
    if "<" not in value:
        return False
    if _VOID_ELEMENT.search(value):
        return True
    return any(name.lower() in _ELEMENTS for name in _CLOSING_TAG.findall(value))


def _without_invisible(value: str) -> str:
    # ASCII text holds none of them, and str.isascii() is free: most titles, authors and categories
    # skip the class, whose astral non-characters make it slow to match.
    return value if value.isascii() else _TITLE_INVISIBLE.sub("", value)


def safe_link(url: str | None, base_url: str | None = None) -> str:
    """An absolute http(s) URL, resolved against `base_url` if relative; "" when unsafe or unusable.

    Unusable includes what urllib cannot read at all (an unclosed IPv6 bracket: `http://[::1`) and
    text that is not a URL (markup: `<b>Register</b>`): the link is dropped, never the item or the
    feed that carries it.
    """
    if not url:
        return ""
    url = _URL_NOISE.sub("", url).strip(" \x0c")
    if _CONTROL.search(url) or _MARKUP_IN_URL.search(url):
        return ""
    url = _XML_INVALID.sub("", url).replace(" ", "%20")
    parts = _split(url)
    if parts is not None and not parts.scheme:
        base = _web_base(base_url)
        url = _join(base, url) if base else ""
        parts = _split(url)
    if parts is None or parts.scheme.lower() not in WEB_SCHEMES or not parts.hostname:
        return ""
    return url


def unwrap_redirect(url: str) -> str:
    """The real target of a known tracking redirect (Google Alerts' google.com/url?…&url=…).

    The target is percent-decoded exactly once and used only when it is an absolute http(s)
    URL; anything else, and any redirector not known here, returns `url` unchanged.
    """
    parts = _split(url)
    if parts is None:
        return url
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in WEB_SCHEMES or parts.path != "/url" or not _is_google(host):
        return url
    params = _query_params(parts.query)
    target = params.get("url") or params.get("q") or ""
    return target if safe_link(target) == target and target else url


def host_name(url: str) -> str:
    """The host of `url` without a leading "www." (an outlet name of last resort)."""
    parts = _split(url)
    host = (parts.hostname or "").lower() if parts else ""
    return host[4:] if host.startswith("www.") else host


def _split(url: str) -> SplitResult | None:
    """urlsplit, or None for what it refuses to read (ValueError: "Invalid IPv6 URL" and friends)."""
    try:
        return urlsplit(url)
    except ValueError:
        return None


def _join(base: str, url: str) -> str:
    """`url` resolved against `base`; "" when urllib cannot read either."""
    try:
        return urljoin(base, url)
    except ValueError:
        return ""


def _is_google(host: str) -> bool:
    return _GOOGLE_HOST.fullmatch(host) is not None


def _query_params(query: str) -> dict[str, str]:
    # parse_qs would also turn "+" into spaces; the target URL needs exactly one unquote.
    params: dict[str, str] = {}
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        params.setdefault(unquote(name), unquote(value))
    return params


def _web_base(base_url: str | None) -> str | None:
    if not base_url:
        return None
    parts = _split(base_url.strip())
    if parts is None or parts.scheme.lower() not in WEB_SCHEMES or not parts.hostname:
        return None
    return base_url.strip()


@lru_cache(maxsize=64)
def _cleaner(base_url: str | None) -> nh3.Cleaner:
    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        clean_content_tags=set(DROPPED_WITH_CONTENT),
        url_schemes=set(SAFE_SCHEMES),
        link_rel="noopener noreferrer",
        strip_comments=True,
        url_relative=_relative_resolver(base_url),
    )


def _relative_resolver(base_url: str | None) -> Callable[[str], str | None]:
    def resolve(url: str) -> str | None:
        # Runs inside nh3's Rust callback: an exception here would only print a traceback.
        if base_url is None:
            return None
        resolved = _join(base_url, _XML_INVALID.sub("", _URL_NOISE.sub("", url)).strip())
        parts = _split(resolved)
        return resolved if parts is not None and parts.scheme.lower() in WEB_SCHEMES else None

    return resolve


@lru_cache(maxsize=1)
def _text_cleaner() -> nh3.Cleaner:
    return nh3.Cleaner(tags=set(), clean_content_tags=set(DROPPED_WITH_CONTENT), attributes={}, link_rel=None)
