"""`digest subscribers` commands."""

from .base import main  # noqa: F401
