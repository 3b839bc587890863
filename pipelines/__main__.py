"""`python -m pipelines COMMAND`: the project's one command-line entry point (pipelines/cli.py)."""

from components.object_store import exit_process
from pipelines.cli import main

exit_process(main())
