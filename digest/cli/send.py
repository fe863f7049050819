"""`digest send` commands."""

from .base import main  # noqa: F401
