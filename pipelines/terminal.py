"""A local run's terminal: one line per stage and per trainer epoch, everything else in the run's log.

While the run lasts, the process's stdout and stderr (file descriptors 1 and 2, so TensorFlow's
and Beam's native logging too) go to the log file; the lines a person follows go to the terminal
the run was started from: each stage when it ends (seconds, or cached), each trainer epoch as its
trainer logs it on the `trainers.progress` logger. `verbose` leaves the terminal as it was and
only copies the Python logging to the log file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import TextIO

PROGRESS_LOGGER = "trainers.progress"  # what the trainers log their epochs on
_RUNNING = re.compile(r"^Component (\S+) is running\.$")
_FINISHED = re.compile(r"^Component (\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class StageLines(logging.Handler):
    """Turns LocalDagRunner's and the trainers' log records into the terminal's lines."""

    def __init__(self, out: TextIO) -> None:
        super().__init__(level=logging.INFO)
        self.out = out
        self.stage: str | None = None
        self.started = 0.0
        self.cached = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.name == PROGRESS_LOGGER:
            self.out.write(f"      {self.stage or ''}: {message}\n")
        elif match := _RUNNING.match(message):
            self.stage, self.started, self.cached = match.group(1), time.monotonic(), False
        elif _CACHED.match(message):
            self.cached = True
        elif match := _FINISHED.match(message):
            seconds = time.monotonic() - self.started
            self.out.write(f"  done  {match.group(1):<24} {'cached' if self.cached else f'{seconds:6.1f} s'}\n")
            self.stage = None
        else:
            return
        self.out.flush()


@contextlib.contextmanager
def quiet_run(log_path: str, verbose: bool, lines_fd: int = 1) -> Iterator[None]:
    """The run's output to `log_path`; the stage and epoch lines (all output, with `verbose`) to the
    terminal: to stdout, or to stderr (`lines_fd` 2) when stdout is for a machine (--json)."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    root = logging.getLogger()
    to_file = logging.FileHandler(log_path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(FORMAT))
    if verbose:
        root.addHandler(to_file)
        try:
            yield
        finally:
            root.removeHandler(to_file)
            to_file.close()
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal = os.fdopen(os.dup(saved[lines_fd]), "w", buffering=1, encoding="utf-8")
    lines = StageLines(terminal)
    terminal.write(f"log:  {log_path}\n")
    # Python's logging goes to the file by its own handler instead of the console's (one copy of each
    # record, whatever sys.stderr is bound to); the rest of fds 1 and 2 by the redirection below.
    consoles = [h for h in root.handlers if type(h) is logging.StreamHandler
                and h.stream in (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)]
    for handler in consoles:
        root.removeHandler(handler)
    for handler in (to_file, lines):
        root.addHandler(handler)
    with open(log_path, "a", encoding="utf-8") as log:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            for handler in (to_file, lines):
                root.removeHandler(handler)
            for handler in consoles:
                root.addHandler(handler)
            to_file.close()
            terminal.close()
