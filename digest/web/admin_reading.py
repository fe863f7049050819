"""The admin's reading page: clicks counted per issue, section, item and language (counts only)."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute

from .admin import Admin


def routes(admin: Admin, get: Callable, post: Callable) -> list[BaseRoute]:
    """The reading page's routes."""
    return []
