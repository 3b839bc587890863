"""`python -m pipelines COMMAND`: the project's one command-line entry point (pipelines/cli.py)."""

import sys

from pipelines.cli import main

sys.exit(main())
