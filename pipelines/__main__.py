"""`python -m pipelines COMMAND`: the project's one command-line entry point (pipelines/cli.py)."""

import os

from trainers.distributed import OPENMP_ENVIRONMENT

# Before anything imports torch (see OPENMP_ENVIRONMENT); a user's own setting wins.
for _name, _value in OPENMP_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)

from components.object_store import exit_process  # noqa: E402
from pipelines.cli import main  # noqa: E402

exit_process(main())
