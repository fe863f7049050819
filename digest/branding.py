"""Branding rules, pure: the accent colour's contrast (WCAG 2.x) and its dark-mode partner, and an uploaded
logo's type and size read from its own bytes.

The edition puts links on a white card in light mode and on a dark card in dark mode. No single colour
reaches 4.5:1 on both (white against #1b222c is 16.2:1, and 4.5² is 20.25), so dark mode shows the
accent's partner: the same hue, lightened just enough. `check_accent` is the one rule the admin,
the CLI and the templates share, and `check_branding_fields` the one check of every field, whether it
comes from the admin's form or from digest.toml's [branding]. Logos are PNG, JPEG, GIF or WebP, told by their magic bytes, never by
a name or a declared type; SVG is refused (it may carry script and external references).
"""

from __future__ import annotations

import colorsys
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .config import BrandingSettings

# The edition's card backgrounds, where every link sits (render.THEME: light.card, dark.card).
LIGHT_BACKGROUND = "#ffffff"
DARK_BACKGROUND = "#1b222c"
MIN_CONTRAST = 4.5  # WCAG 2.x AA for normal text
DARK_TARGET = 5.0  # the partner aims a little above the minimum, so rounding never lands below it
HEX_COLOUR = re.compile(r"#[0-9a-fA-F]{6}")
MAX_LOGO_BYTES = 512 * 1024
MAX_LOGO_SIDE = 4000  # pixels; the masthead shows it 160 px wide
LOGO_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp"}
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
LOGO_NAME = re.compile(r"logo-[0-9a-f]{8}\.(png|jpeg|gif|webp)")
LIMITS = {"logo_url": 2000, "logo_alt": 200, "footer_text": 500, "sender_name": 100, "postal_address": 300}


class LogoRefused(ValueError):
    """An uploaded logo that is not a usable image; the message says why and what to send instead."""


@dataclass(frozen=True)
class AccentCheck:
    colour: str  # "#rrggbb", lower case
    dark_colour: str  # its partner on the dark background
    light_ratio: float
    dark_ratio: float

    @property
    def ok(self) -> bool:
        return self.light_ratio >= MIN_CONTRAST and self.dark_ratio >= MIN_CONTRAST


@dataclass(frozen=True)
class LogoImage:
    kind: str  # png, jpeg, gif, webp
    content_type: str
    width: int
    height: int


def _channel(value: int) -> float:
    c = value / 255
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def luminance(colour: str) -> float:
    """WCAG relative luminance of "#rrggbb"."""
    r, g, b = (int(colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * _channel(r) + 0.7152 * _channel(g) + 0.0722 * _channel(b)


def contrast_ratio(one: str, other: str) -> float:
    """WCAG contrast ratio of two "#rrggbb" colours, 1 to 21."""
    a, b = sorted((luminance(one), luminance(other)), reverse=True)
    return (a + 0.05) / (b + 0.05)


def dark_partner(colour: str) -> str:
    """The accent for dark mode: same hue and saturation, lightened until it reads on DARK_BACKGROUND."""
    r, g, b = (int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5))
    hue, lightness, saturation = colorsys.rgb_to_hls(r, g, b)
    for step in range(101):
        level = lightness + (1 - lightness) * step / 100
        candidate = "#" + "".join(f"{round(c * 255):02x}" for c in colorsys.hls_to_rgb(hue, level, saturation))
        if contrast_ratio(candidate, DARK_BACKGROUND) >= DARK_TARGET:
            return candidate
    return "#ffffff"


def check_accent(colour: str) -> AccentCheck:
    """The accent's contrast on both backgrounds; ValueError when it is not #rrggbb."""
    colour = colour.strip()
    if not HEX_COLOUR.fullmatch(colour):
        raise ValueError(f"{colour[:20]!r} is not a colour: write it as # and six hexadecimal digits, e.g. #1a5fb4")
    colour = colour.lower()
    partner = dark_partner(colour)
    return AccentCheck(colour, partner, contrast_ratio(colour, LIGHT_BACKGROUND), contrast_ratio(partner, DARK_BACKGROUND))


# --- logos ------------------------------------------------------------------------------------------

def read_logo(data: bytes) -> LogoImage:
    """The image type and size of an uploaded logo, from its bytes; LogoRefused with the reason otherwise."""
    if not data:
        raise LogoRefused("the file is empty: choose a PNG, JPEG, GIF or WebP image")
    if len(data) > MAX_LOGO_BYTES:
        raise LogoRefused(f"the file is {len(data) // 1024} KiB; a logo may be {MAX_LOGO_BYTES // 1024} KiB at most: "
                          "export it smaller (the masthead shows it 160 px wide)")
    head = data[:512].lstrip().lower()
    if head.startswith((b"<svg", b"<?xml", b"<!doctype svg")) or b"<svg" in head:
        raise LogoRefused("SVG logos are not accepted (they can carry scripts and links to other sites, and many "
                          "email clients do not show them): export the logo as PNG")
    kind, size = _image_size(data)
    if kind is None or size is None:
        raise LogoRefused("the file is not a PNG, JPEG, GIF or WebP image (its contents were checked, not its name)")
    width, height = size
    if not (0 < width <= MAX_LOGO_SIDE and 0 < height <= MAX_LOGO_SIDE):
        raise LogoRefused(f"the image is {width}×{height} pixels; a logo may be {MAX_LOGO_SIDE} pixels wide and "
                          "high at most")
    return LogoImage(kind, LOGO_TYPES[kind], width, height)


def _image_size(data: bytes) -> tuple[str | None, tuple[int, int] | None]:
    if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR" and len(data) >= 24:
        return "png", struct.unpack(">II", data[16:24])
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        return "gif", struct.unpack("<HH", data[6:10])
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg", _jpeg_size(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", _webp_size(data)
    return None, None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """The size in the first start-of-frame segment (SOF0–SOF15 but DHT, JPG and DAC)."""
    at = 2
    while at + 9 < len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return width, height
        if length < 2:
            return None
        at += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    return None


# --- the branding's fields ----------------------------------------------------------------------------

def check_branding_fields(form: Mapping[str, Any], own_base: str = "") -> tuple[dict[str, str], dict[str, str]]:
    """The stored values for the page's fields, and the problems by field.

    `own_base` is web.base_url: a logo uploaded here is served from it, https or not (http on a test install).
    """
    problems: dict[str, str] = {}
    values = {name: " ".join(str(form.get(name, "")).split()) for name in
              ("logo_url", "logo_alt", "accent_color", "footer_text", "sender_name", "postal_address")}
    for name, limit in LIMITS.items():
        if CONTROL_CHARS.search(values[name]):
            problems[name] = "remove the control characters"
        elif len(values[name]) > limit:
            problems[name] = f"{len(values[name])} characters; {limit} at most"
    url = values["logo_url"]
    uploaded = own_base.rstrip("/") + "/branding/"
    if url and "logo_url" not in problems and not (own_base and url.startswith(uploaded)
                                                    and LOGO_NAME.fullmatch(url[len(uploaded):])):
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            problems["logo_url"] = "give the logo as an https:// address (email clients block others), or upload a file"
    if any(c in values["sender_name"] for c in '<>@"\\'):
        problems["sender_name"] = "a display name without < > @ \" or \\ (the address itself stays delivery.sender's)"
    try:
        accent = check_accent(values["accent_color"] or BrandingSettings().accent_color)
        values["accent_color"] = accent.colour
        if not accent.ok:
            problems["accent_color"] = accent_problem(accent)
    except ValueError as exc:
        problems["accent_color"] = str(exc)
    return ({} if problems else values), problems


def accent_problem(accent: AccentCheck) -> str:
    """Why an accent is refused, with its contrast ratios."""
    return (f"{accent.colour} gives links a contrast of {accent.light_ratio:.2f}:1 on the white background "
            f"({accent.dark_ratio:.2f}:1 on the dark one, as {accent.dark_colour}); WCAG AA needs 4.5:1: "
            "choose a darker colour")
