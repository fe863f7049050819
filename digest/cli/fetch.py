"""`digest fetch` commands."""

from .base import main  # noqa: F401
