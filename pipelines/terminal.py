"""A local run's terminal: one line per stage and per trainer epoch, everything else in the run's log.

While the run lasts, the process's stdout and stderr (file descriptors 1 and 2, so TensorFlow's
and Beam's native logging too) go to the log file; the lines a person follows go to the terminal
the run was started from: each stage when it ends (seconds, or cached), each trainer epoch as its
trainer logs it on the `trainers.progress` logger, each phase a component logs on
`components.progress`. On a terminal (a TTY) the running stage also has a live line, redrawn in
place: its seconds so far, a trainer's epoch and batch bar, a component's latest phase; elsewhere
(CI, a pipe, `| tee`) plain lines only. `verbose` leaves the terminal as it was and only copies the
Python logging to the log file.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TextIO

PROGRESS_LOGGER = "trainers.progress"  # what the trainers log their epochs (and batches, at DEBUG) on
COMPONENTS_LOGGER = "components.progress"  # what components log their phases on ("scoring 3 models ...")
_RUNNING = re.compile(r"^Component (\S+) is running\.$")
_FINISHED = re.compile(r"^Component (\S+) is finished\.$")
_CACHED = re.compile(r"^A cached execution \d+ is used\.$")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SPINNER = "|/-\\"
BAR_WIDTH = 16  # a trainer's live line fits 80 columns
CLEAR_LINE = "\r\x1b[K"  # back to the line's start, erase to its end


def is_live(out: TextIO) -> bool:
    """Whether `out` can take a line redrawn in place: a terminal, and not one that says it is dumb."""
    return out.isatty() and os.environ.get("TERM") != "dumb"


def columns(out: TextIO) -> int:
    """The terminal's width: a longer live line would wrap, and \\r goes back to its last row only."""
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, io.UnsupportedOperation):
        return 80


def batch_bar(progress: dict[str, Any]) -> str:
    """'epoch 1/4 [######----------] 180/469' (no bar when the epoch's batches are not known)."""
    done, total = progress["done"], progress["total"]
    epoch = f"epoch {progress['epoch']}/{progress['epochs']}"
    if not total:
        return f"{epoch} batch {done}"
    filled = BAR_WIDTH * min(done, total) // total
    return f"{epoch} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {done}/{total}"


class StageLines(logging.Handler):
    """Turns LocalDagRunner's, the trainers' and the components' log records into the terminal's lines.

    Permanent lines: "  done  <stage>  <seconds|cached>" and each epoch (and, not live, each phase).
    Live (`is_live(out)`): the running stage's line, redrawn when a record comes and every `tick`
    seconds by a daemon thread (the seconds move while a stage logs nothing); a permanent line first
    erases it. `close()` stops the thread and erases a line a failed stage left."""

    def __init__(self, out: TextIO, tick: float = 0.5) -> None:
        super().__init__(level=logging.DEBUG)  # DEBUG: the trainers' batch records
        self.out = out
        self.live = is_live(out)
        self.stage: str | None = None
        self.started = 0.0
        self.cached = False
        self.detail = ""  # the live line's end: a batch bar or a component's phase
        self.drawn = False  # a live line is on the screen
        self.spins = 0
        self.stopped = threading.Event()
        self.ticker: threading.Thread | None = None
        if self.live:
            self.ticker = threading.Thread(target=self._tick, args=(tick,), name="stage-lines", daemon=True)
            self.ticker.start()

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        progress = getattr(record, "progress", None)
        if progress is not None:  # a trainer's batches: for the live line only
            if self.live:
                self.detail = batch_bar(progress)
                self._draw()
        elif record.levelno < logging.INFO:
            return
        elif record.name == PROGRESS_LOGGER:  # an epoch ended: its line stays, its bar goes
            self.detail = ""
            self._permanent(f"      {self.stage or ''}: {message}")
        elif record.name == COMPONENTS_LOGGER:
            if self.live:
                self.detail = message
                self._draw()
            else:
                self._permanent(f"      {self.stage or ''}: {message}")
        elif match := _RUNNING.match(message):
            self.stage, self.started, self.cached, self.detail = match.group(1), time.monotonic(), False, ""
            self._draw()
        elif _CACHED.match(message):
            self.cached, self.detail = True, "cached"
            self._draw()
        elif match := _FINISHED.match(message):
            seconds = time.monotonic() - self.started
            self.stage = None  # before the line: nothing to redraw after it
            self._permanent(f"  done  {match.group(1):<24} {'cached' if self.cached else f'{seconds:6.1f} s'}")

    def close(self) -> None:
        self.stopped.set()
        if self.ticker is not None and self.ticker is not threading.current_thread():
            self.ticker.join()
        with self.lock:
            self.stage = None
            self._erase()
        super().close()

    def _tick(self, interval: float) -> None:
        while not self.stopped.wait(interval):
            with self.lock:
                try:
                    self._draw()
                except (OSError, ValueError):  # the terminal went away: nothing left to draw on
                    return

    def _draw(self) -> None:
        """The running stage's live line, in place of the one before (only on a live terminal)."""
        if not self.live or self.stage is None:
            return
        self.spins += 1
        seconds = time.monotonic() - self.started
        line = f"  run {SPINNER[self.spins % len(SPINNER)]} {self.stage:<24} {seconds:6.1f} s  {self.detail}"
        self.out.write(CLEAR_LINE + line[:columns(self.out) - 1])
        self.out.flush()
        self.drawn = True

    def _erase(self) -> None:
        if self.drawn:
            self.out.write(CLEAR_LINE)
            self.out.flush()
            self.drawn = False

    def _permanent(self, line: str) -> None:
        """A line that stays: the live line makes way for it and comes back under it."""
        self._erase()
        self.out.write(line + "\n")
        self.out.flush()
        self._draw()


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
