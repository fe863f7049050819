"""An item's one image, picked at ingest from what its feed carries. Pure.

Where from, in this order: `media:content` (an image), `media:thumbnail`, an image enclosure (RSS
`<enclosure>` or Atom `rel="enclosure"`), the first usable `<img>` of the sanitised content or summary.
What is refused: anything but an absolute https URL with a host (http, data:, relative without a
base), user info in the URL, SVG (mail clients do not show it), a declared width or height of 2 px
or less (a tracking pixel), a URL over MAX_URL_CHARS.

Which hosts an edition may load images from is a setting (`render.image_hosts`, else the host of
`site.url`), and parsing has no settings: so ingest keeps the best https candidate, preferring one
on the item's own site (same domain as its link or the feed's), and the renderer checks
`allowed_image(item.image, settings.render.image_hosts, settings.site.url)` before showing it.
A change of the setting then applies to stored items too.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from .sanitize import safe_link

MAX_URL_CHARS = 2000
PIXEL_MAX = 2  # a declared side of this many pixels or fewer is a tracking pixel, not a picture
MAX_CONTENT_IMAGES = 10  # the content's images looked at (a pixel or an avatar may come first)
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".avif")
_IMG = re.compile(r"<img\b(?:[^>\"]|\"[^\"]*\")*>", re.IGNORECASE)
_ATTRIBUTE = re.compile(r'\s([a-z-]+)="([^"]*)"')


def pick_image(entry: Mapping[str, Any], content_html: str, item_url: str, base_url: str = "") -> str:
    """The one image URL for an entry (feedparser's dict), or "".

    `content_html` is the sanitised HTML whose images are the last resort; `item_url` and
    `base_url` (the channel link) say which site is the item's own; `base_url` also resolves
    relative media URLs.
    """
    candidates = [url for url in (_usable(c, base_url) for c in _candidates(entry, content_html)) if url]
    if not candidates:
        return ""
    own = {_domain(item_url), _domain(base_url)} - {""}
    return next((url for url in candidates if _domain(url) in own), candidates[0])


def _candidates(entry: Mapping[str, Any], content_html: str) -> Iterable[dict[str, str]]:
    """Each image the entry offers, in order of preference, as {"url", "type", "width", "height"}."""
    for media in _dicts(entry.get("media_content")):
        medium = str(media.get("medium") or "").lower()
        if medium in ("", "image"):
            yield {"url": media.get("url"), "type": media.get("type"),
                   "width": media.get("width"), "height": media.get("height"), "medium": medium}
    for thumbnail in _dicts(entry.get("media_thumbnail")):
        yield {"url": thumbnail.get("url"), "type": "", "width": thumbnail.get("width"),
               "height": thumbnail.get("height"), "medium": "image"}
    for enclosure in _dicts(entry.get("enclosures")):
        yield {"url": enclosure.get("href") or enclosure.get("url"), "type": enclosure.get("type"),
               "width": "", "height": "", "medium": ""}
    for number, img in enumerate(_IMG.finditer(content_html or "")):
        if number == MAX_CONTENT_IMAGES:
            break
        attributes = {name.lower(): html.unescape(value) for name, value in _ATTRIBUTE.findall(img.group())}
        yield {"url": attributes.get("src"), "type": "", "width": attributes.get("width"),
               "height": attributes.get("height"), "medium": "image"}


def _dicts(value: Any) -> Sequence[Mapping[str, Any]]:
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _usable(candidate: Mapping[str, Any], base_url: str) -> str:
    """The candidate's URL if it is an https image that is not a pixel; else ""."""
    raw = candidate.get("url")
    if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_URL_CHARS:
        return ""
    url = safe_link(raw, base_url)
    parts = urlsplit(url) if url else None
    if parts is None or parts.scheme.lower() != "https" or "@" in parts.netloc:
        return ""
    kind = str(candidate.get("type") or "").lower()
    path = parts.path.lower()
    if kind == "image/svg+xml" or path.endswith((".svg", ".svgz")):
        return ""
    declared_image = kind.startswith("image/") or candidate.get("medium") == "image"
    if not declared_image and not path.endswith(_IMAGE_EXTENSIONS):
        return ""  # an audio or video enclosure, a PDF
    if any(_pixels(candidate.get(side)) <= PIXEL_MAX for side in ("width", "height")):
        return ""
    return url


def _pixels(value: Any) -> float:
    """A declared size in pixels ("1", "1px"); infinity when not given or not a number."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*(?:px)?\s*", str(value or ""))
    return int(match.group(1)) if match else float("inf")


def _domain(url: str) -> str:
    """The site part of a URL's host: "example.org" for www.example.org and cdn.example.org."""
    host = (urlsplit(url).hostname or "").lower() if url else ""
    labels = host.split(".")
    # example.co.uk, example.com.au: a short second-level label under a country code.
    keep = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3 else 2
    return ".".join(labels[-keep:])


def allowed_image(url: str, image_hosts: Sequence[str], site_url: str) -> str:
    """`url` if an edition may show it: https, from `image_hosts` or their subdomains, else ""; with
    no `image_hosts`, from the host of `site_url` (without a leading "www.") or its subdomains."""
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
    except ValueError:
        return ""
    if parts.scheme.lower() != "https" or not host or "@" in parts.netloc:
        return ""
    allowed = [h.strip().lower().rstrip(".") for h in image_hosts if h.strip()]
    if not allowed:
        site_host = (urlsplit(site_url).hostname or "").lower() if site_url else ""
        allowed = [site_host.removeprefix("www.")] if site_host else []
    return url if any(host == a or host.endswith("." + a) for a in allowed) else ""
