"""What the parse workers' fork server loads once, so that no worker it forks loads it again.

Imported only there (digest.parse_workers names it in the fork server's preload list): the parser,
and the language model (≈0.7 s to read), which a worker would otherwise load for every fetch.
"""

from __future__ import annotations

from . import parse_workers
from .language import load_model

__all__ = ["parse_workers"]

load_model()
