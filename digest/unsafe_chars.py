"""The characters digest never lets through, as regex character-class bodies shared by parse and render.

Feed text is cleaned of them at ingestion (digest.sanitize) and again when an edition is built
(digest.edition_view), because MRML refuses a document holding any XML-invalid character: one such
character in one title would otherwise fail every edition. Use as `re.compile(f"[{XML_INVALID}]")`.
"""

from __future__ import annotations

SURROGATES = "\ud800-\udfff"
# XML 1.0 forbids these: C0 controls but tab, LF and CR; lone surrogates; U+FFFE and U+FFFF.
XML_INVALID = "\x00-\x08\x0b\x0c\x0e-\x1f" + SURROGATES + "\ufffe\uffff"
# Unicode non-characters: U+FDD0–U+FDEF and the last two code points of every plane.
NONCHARACTERS = "\ufdd0-\ufdef" + "".join(
    f"{chr(plane + 0xFFFE)}{chr(plane + 0xFFFF)}" for plane in range(0, 0x110000, 0x10000))
# Bidi embedding, override and isolate controls: they can make a title read backwards (spoofing).
BIDI_CONTROLS = "\u202a-\u202e\u2066-\u2069"
# The ASCII controls (C0 and DEL): the part of CONTROLS an ASCII string can hold.
CONTROLS_ASCII = "\x00-\x1f\x7f"
# Every control character (C0, DEL, C1) and the Unicode line and paragraph separators.
CONTROLS = CONTROLS_ASCII + "\x80-\x9f\u2028\u2029"
