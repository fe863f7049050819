"""`python -m digest`: the `digest` command line (the installed `digest` script calls `main` from here)."""


def main() -> None:
    """Run the command line.

    Imported only when called: every parse worker runs the caller's main script again (multiprocessing
    does), and the `digest` script imports this module, which should cost a worker nothing.
    """
    from .cli import main as command_line

    command_line()


if __name__ == "__main__":
    main()
