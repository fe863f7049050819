"""The `digest` command line: thin commands that parse input and call one pipeline function."""

from . import build, demo, fetch, init, render, run, send, serve, subscribers  # noqa: F401  (register commands)
from .base import main

__all__ = ["main"]
