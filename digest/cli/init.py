"""`digest init` commands."""

from .base import main  # noqa: F401
