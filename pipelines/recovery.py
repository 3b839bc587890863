"""What a local run does before it starts, so a run killed earlier (SIGKILL, OOM, power) leaves
nothing behind that a later run could trip over.

- One local run at a time per output root: an exclusive lock on `<output_root>/.run.lock`.
- Executions a killed run left RUNNING (or NEW) in the metadata store are marked FAILED, with the
  reason, and their partial output folders are deleted. TFX deletes a failed executor's outputs
  itself, but only when the executor raises; a killed process never gets there. Outputs of an
  unfinished execution were never published in ML Metadata, so no later step could have read
  them as inputs; deleting them also keeps the pipeline root free of half-written models.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Iterator

from ml_metadata.proto import metadata_store_pb2
from tfx.dsl.io import fileio

from pipelines import validation

RUNNING_STATES = (metadata_store_pb2.Execution.RUNNING, metadata_store_pb2.Execution.NEW)
REAPED_PROPERTY = "reaped_reason"


class RunInProgressError(RuntimeError):
    pass


@contextlib.contextmanager
def exclusive_run(output_root: str) -> Iterator[None]:
    """Holds `<output_root>/.run.lock` for the duration of one local run (released on any exit,
    including SIGKILL: the kernel drops the lock with the process)."""
    os.makedirs(output_root, exist_ok=True)
    path = os.path.join(output_root, ".run.lock")
    with open(path, "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RunInProgressError(f"another local run (pid {holder}) is using {output_root}; "
                                     f"wait for it or use another --output-root") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        yield


def node_id(store, execution_id: int) -> str:
    """The pipeline node an execution belongs to ("" if none)."""
    nodes = [c.name.split(".")[-1] for c in store.get_contexts_by_execution(execution_id) if c.type == "node"]
    return nodes[0] if nodes else ""


def _partial_output_dirs(pipeline_root: str, node: str, execution_id: int) -> list[str]:
    """`<pipeline_root>/<node>/<output key>/<execution id>`: where TFX puts an execution's outputs
    (listed through TFX's fileio: the root may be on an object store)."""
    node_dir = os.path.join(pipeline_root, node)
    if not node or not fileio.isdir(node_dir):
        return []
    found = [os.path.join(node_dir, key.rstrip("/"), str(execution_id)) for key in fileio.listdir(node_dir)]
    return [d for d in found if fileio.isdir(d)]


def _delete_inside(root: str, folder: str) -> None:
    if "://" in root:  # an object store: no symlinks that could lead out of it
        if folder.startswith(root.rstrip("/") + "/"):
            fileio.rmtree(folder)
    elif validation.is_inside(root, folder):
        shutil.rmtree(folder, ignore_errors=True)


def reap_interrupted_executions(store, pipeline_root: str) -> list[tuple[int, str]]:
    """Marks the executions an earlier, killed run left unfinished as FAILED and deletes their
    partial outputs. Only call it while holding `exclusive_run`: then none of them is live.
    Returns (execution id, node id) of each one reaped."""
    reaped = []
    for execution in store.get_executions():
        if execution.last_known_state not in RUNNING_STATES:
            continue
        node = node_id(store, execution.id)
        for partial in _partial_output_dirs(pipeline_root, node, execution.id):
            _delete_inside(pipeline_root, partial)
        execution.last_known_state = metadata_store_pb2.Execution.FAILED
        execution.custom_properties[REAPED_PROPERTY].string_value = (
            f"interrupted: still RUNNING when a later run started at "
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}; partial outputs deleted")
        store.put_executions([execution])
        logging.warning("Execution %d of %s was interrupted by an earlier run's death: marked FAILED, "
                        "partial outputs deleted; it runs again from scratch", execution.id, node)
        reaped.append((execution.id, node))
    return reaped
