"""Values written as TOML text, for `digest config export`: what digest.toml will read back unchanged.

Pure. Strings are TOML basic strings with quotes, backslashes and every control character
(C0, DEL, C1, and the line and paragraph separators) escaped, so no value can end its line early or
start a table of its own.
"""

from __future__ import annotations

from typing import Any


def toml_string(value: str) -> str:
    """A TOML basic string."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F or char in "\u2028\u2029":
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    """A TOML value: a boolean, a number, an array of values, else a basic string of the value's text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return toml_string(str(value))
