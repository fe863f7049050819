"""`digest render` commands."""

from .base import main  # noqa: F401
