"""A local run's terminal: one line per stage and per trainer epoch, everything else in the run's log.

While the run lasts, the process's stdout and stderr (file descriptors 1 and 2, so TensorFlow's
and Beam's native logging too) go to the log file; the lines a person follows go to the terminal
the run was started from: each stage when it ends (seconds, or cached), each trainer epoch as its
trainer logs it on the `trainers.progress` logger, each phase a component logs on
`components.progress`. On a terminal (a TTY) the running stage also has a live line, drawn by
rich's Progress: a spinner, its seconds so far, a trainer's epoch and batch bar, a component's
latest phase; elsewhere (CI, a pipe, `| tee`) plain lines only. `verbose` leaves the terminal as it
was and only copies the Python logging to the log file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

PROGRESS_LOGGER = "trainers.progress"  # what the trainers log their epochs (and batches, at DEBUG) on
COMPONENTS_LOGGER = "components.progress"  # what components log their phases on ("scoring 3 models ...")
_RUNNING = re.compile(r"^Component (\S+) is running\.$")
_FINISHED = re.compile(r"^Component (\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BAR_WIDTH = 16  # a trainer's live line fits 80 columns


def is_live(out: TextIO) -> bool:
    """Whether `out` can take a line redrawn in place: a terminal, and not one that says it is dumb."""
    return out.isatty() and os.environ.get("TERM") != "dumb"


def epoch_text(progress: dict[str, Any]) -> str:
    return f"epoch {progress['epoch']}/{progress['epochs']}"


def _only_when_counting(column_class: type) -> type:
    """A rich column that shows nothing while the running stage counts no batches."""
    from rich.text import Text

    class Counting(column_class):
        def render(self, task):
            return super().render(task) if task.fields.get("counting") else Text("")

    return Counting


class LiveLine:
    """The running stage's live line on a terminal: rich's Progress (one task a stage, redrawn a few
    times a second by rich's own thread; lines printed through its console stay above it)."""

    def __init__(self, out: TextIO, refresh_per_second: float = 4) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = Console(file=out, force_terminal=True, highlight=False, soft_wrap=False)
        self.progress = Progress(SpinnerColumn("line"), TextColumn("{task.fields[stage]:<24}"), TimeElapsedColumn(),
                                 TextColumn("{task.fields[detail]}"),
                                 _only_when_counting(BarColumn)(bar_width=BAR_WIDTH),
                                 _only_when_counting(MofNCompleteColumn)(), console=self.console, transient=True,
                                 refresh_per_second=refresh_per_second)
        self.task = None
        self.progress.start()

    def stage(self, name: str) -> None:
        self.end()
        self.task = self.progress.add_task("", stage=name, detail="", counting=False, total=None)

    def update(self, detail: str, done: int | None = None, total: int | None = None) -> None:
        """The live line's end: a phase or "epoch e/E", with a bar of `done` of `total` batches if known."""
        if self.task is not None:
            counts = {"completed": done, "total": total} if total else {}
            self.progress.update(self.task, detail=detail, counting=bool(total), **counts)

    def print(self, line: str) -> None:
        self.progress.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def end(self) -> None:
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def close(self) -> None:
        self.end()
        self.progress.stop()


class StageLines(logging.Handler):
    """Turns LocalDagRunner's, the trainers' and the components' log records into the terminal's lines.

    Permanent lines: "  done  <stage>  <seconds|cached>" and each epoch (and, not live, each phase).
    Live (`is_live(out)`): the running stage's line (LiveLine), with its batch bar or phase; a
    permanent line is printed above it. `close()` stops it and erases a line a failed stage left."""

    def __init__(self, out: TextIO, refresh_per_second: float = 4) -> None:
        super().__init__(level=logging.DEBUG)  # DEBUG: the trainers' batch records
        self.out = out
        self.live = LiveLine(out, refresh_per_second) if is_live(out) else None
        self.stage: str | None = None
        self.started = 0.0
        self.cached = False

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        progress = getattr(record, "progress", None)
        if progress is not None:  # a trainer's batches: for the live line only
            if self.live:
                self.live.update(epoch_text(progress), progress["done"], progress["total"])
        elif record.levelno < logging.INFO:
            return
        elif record.name == PROGRESS_LOGGER:  # an epoch ended: its line stays, its bar goes
            if self.live:
                self.live.update("")
            self._permanent(f"      {self.stage or ''}: {message}")
        elif record.name == COMPONENTS_LOGGER:
            if self.live:
                self.live.update(message)
            else:
                self._permanent(f"      {self.stage or ''}: {message}")
        elif match := _RUNNING.match(message):
            self.stage, self.started, self.cached = match.group(1), time.monotonic(), False
            if self.live:
                self.live.stage(self.stage)
        elif _CACHED.match(message):
            self.cached = True
            if self.live:
                self.live.update("cached")
        elif match := _FINISHED.match(message):
            seconds = time.monotonic() - self.started
            self.stage = None
            if self.live:
                self.live.end()
            self._permanent(f"  done  {match.group(1):<24} {'cached' if self.cached else f'{seconds:6.1f} s'}")

    def close(self) -> None:
        with self.lock:
            self.stage = None
            if self.live:
                self.live.close()
        super().close()

    def _permanent(self, line: str) -> None:
        """A line that stays (above the live line, on a terminal)."""
        if self.live:
            self.live.print(line)
            return
        self.out.write(line + "\n")
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
    # The trainers' batch records (DEBUG) are made only for a live bar, and never go to the file.
    to_file.addFilter(lambda record: not hasattr(record, "progress"))
    trainer_progress = logging.getLogger(PROGRESS_LOGGER)
    trainer_level = trainer_progress.level
    if lines.live:
        trainer_progress.setLevel(logging.DEBUG)
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
            trainer_progress.setLevel(trainer_level)
            lines.close()
            to_file.close()
            terminal.close()
