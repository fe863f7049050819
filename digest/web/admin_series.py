"""The admin's series page: names per language, aliases, URL; unmatched categories to add as aliases."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute

from .admin import Admin


def routes(admin: Admin, get: Callable, post: Callable) -> list[BaseRoute]:
    """The series page's routes."""
    return []
