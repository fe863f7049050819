"""`digest build` commands."""

from .base import main  # noqa: F401
