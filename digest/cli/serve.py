"""`digest serve` commands."""

from .base import main  # noqa: F401
