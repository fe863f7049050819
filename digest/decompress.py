"""Content-Encoding decoders with a bound: a body never inflates past the room left under `fetch.max_bytes`.

A decoder's `decode(data, room)` and `flush(room)` raise TooLarge the moment the decoded bytes would
pass `room`, so a gzip bomb costs at most the cap in memory, never its inflated size.
"""

from __future__ import annotations

import zlib


class TooLarge(Exception):
    """The decoded body passed the cap."""


class _Identity:
    """No Content-Encoding: the bytes as they came, within the room left."""


    def decode(self, data: bytes, room: int) -> bytes:
        if len(data) > room:
            raise TooLarge
        return data

    def flush(self, room: int) -> bytes:
        return b""


class _Inflate:
    """gzip or deflate with bounded output: never inflates more than the room left under the cap."""

    def __init__(self, wbits: int) -> None:
        self.wbits = wbits
        self.obj = zlib.decompressobj(wbits)
        self.tried_raw = wbits != zlib.MAX_WBITS

    def decode(self, data: bytes, room: int) -> bytes:
        out = bytearray()
        while data:
            try:
                chunk = self.obj.decompress(data, room - len(out) + 1)
            except zlib.error:
                # Some servers send raw deflate for "deflate"; retry once that way.
                if self.tried_raw or out:
                    raise
                self.tried_raw = True
                self.obj = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            out += chunk
            if len(out) > room:
                raise TooLarge
            data = self.obj.unconsumed_tail
            if self.obj.eof:
                # Concatenated gzip members are one body; anything else after the end is ignored.
                data = self.obj.unused_data if self.wbits > zlib.MAX_WBITS else b""
                if data:
                    self.obj = zlib.decompressobj(self.wbits)
        return bytes(out)

    def flush(self, room: int) -> bytes:
        out = self.obj.flush()
        if len(out) > room:
            raise TooLarge
        return out


def bounded_decoder(encoding: str) -> _Identity | _Inflate | None:
    """The decoder for a Content-Encoding (identity, gzip, deflate), or None for one we do not read."""
    if encoding in ("", "identity"):
        return _Identity()
    if encoding in ("gzip", "x-gzip"):
        return _Inflate(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return _Inflate(zlib.MAX_WBITS)
    return None
