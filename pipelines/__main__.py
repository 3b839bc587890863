"""`python -m pipelines COMMAND`: the project's one command-line entry point (pipelines/cli.py)."""

import os

from trainers.machine import runtime_defaults

# Before anything imports TensorFlow or torch (see runtime_defaults); a user's own setting wins.
for _name, _value in runtime_defaults().items():
    os.environ.setdefault(_name, _value)

from components.object_store import exit_process  # noqa: E402
from pipelines.cli import main  # noqa: E402

exit_process(main())
