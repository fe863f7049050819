"""The admin's schedule and branding pages: the store-managed settings, or read-only when digest.toml provisions them."""

from __future__ import annotations

from collections.abc import Callable

from starlette.routing import BaseRoute

from .admin import Admin


def routes(admin: Admin, get: Callable, post: Callable) -> list[BaseRoute]:
    """The schedule and branding pages' routes."""
    return []
