"""``python -m compressflow``: the command-line interface."""

from compressflow.cli import main

# guarded: importing the module (doctest collection, API walks) must not run the CLI
if __name__ == "__main__":
    raise SystemExit(main())
