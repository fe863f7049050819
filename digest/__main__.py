"""`python -m digest`: the `digest` command line (the installed `digest` script calls `main` from here)."""

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    main()
