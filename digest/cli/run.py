"""`digest run` commands."""

from .base import main  # noqa: F401
