"""`digest demo` commands."""

from .base import main  # noqa: F401
