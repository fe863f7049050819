"""Where the public archive lives: the one rule for an issue's web address ("view in browser").

Every email's "view in browser" link, the archive's pages and Atom feed, the admin's links to the
public page and `digest demo`'s summary take the address from here; the web app serves it
(digest.web.archive).
"""

from __future__ import annotations

from .config import Settings

ARCHIVE_PATH = "/archive/"


def archive_path(page: int | str = "") -> str:
    """The path of an archive page on the web app: the index, issue `page`'s page, or e.g. "feed.atom"."""
    return f"{ARCHIVE_PATH}{page}"


def archive_url(settings: Settings, page: int | str = "") -> str:
    """The absolute address of an archive page on `web.base_url` (what emails and the feed link to)."""
    return settings.web.base_url.rstrip("/") + archive_path(page)
