"""``python -m compressflow``: the command-line interface."""

from compressflow.cli import main

raise SystemExit(main())
