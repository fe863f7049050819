"""Files only their owner may read: 0600 files and 0700 folders, whatever the umask.

Outbox messages and the SQLite store hold working links (unsubscribe, preferences, confirmation):
any local user able to read them could act for the reader. A subscriber export holds personal data. The usual umask (022) would make them
readable by everyone, so digest sets the modes itself.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TextIO

FILE_MODE = 0o600
FOLDER_MODE = 0o700


def private_folder(path: Path) -> None:
    """Create `path` (and missing parents) if needed; a folder created here is 0700.

    An existing folder keeps its mode: it may be one staff chose and share (the files digest
    writes into it are 0600 anyway).
    """
    if path.is_dir():
        return
    path.mkdir(parents=True, exist_ok=True, mode=FOLDER_MODE)
    os.chmod(path, FOLDER_MODE)  # mkdir's mode is reduced by the umask


def create_private_file(path: Path) -> int:
    """Create `path`, which must not exist, as an 0600 file open for writing; returns its descriptor."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), FILE_MODE)
    try:
        os.chmod(path, FILE_MODE)  # the umask may have taken the owner's write permission too (umask 0277)
    except OSError:
        os.close(fd)
        raise
    return fd


def make_private(path: Path) -> None:
    """Take group and other permissions away from an existing file we own (a store from an older version)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return
    owner = getattr(os, "getuid", lambda: info.st_uid)()  # Windows has no uid, nor these mode bits
    if stat.S_IMODE(info.st_mode) & 0o077 and info.st_uid == owner:
        os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)


def open_private_text(path: Path) -> TextIO:
    """`path` opened for writing text (UTF-8, newlines as written), created 0600 or truncated and made private."""
    handle = open(path, "w", encoding="utf-8", newline="", opener=lambda name, flags: os.open(name, flags, FILE_MODE))
    make_private(path)
    return handle
