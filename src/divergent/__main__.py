"""``python -m divergent``: the command-line interface."""

from divergent.cli import main

if __name__ == "__main__":
    main()
