"""What an exported model is, for whoever loads it (evaluator, registry, serving): its input and
output, the files beside it, and how they are read from a local folder or an artifact store.
Imports no framework."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from typing import Any

IMAGE_SHAPE = (28, 28)
# The default dataset, MNIST: ten classes named by their digits. A dataset of 2 to 10 classes names
# its own (the pipeline's class_names); the models then have that many outputs.
NUM_CLASSES = 10
DEFAULT_CLASS_NAMES = tuple(str(digit) for digit in range(NUM_CLASSES))
# MNIST's training-set pixel mean and std on a 0..1 scale; applied inside both exported models.
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081
MODEL_META_FILE = "model_meta.json"
HISTORY_FILE = "history.json"
# A registered version's files, as the pusher lays them out in its run's artifacts
# (components/registry.py) and every loader reads them: `signed/` holds everything the pusher
# signed, its signature (trainers/manifest.py) lies beside it; the pyfunc is `signed/model/`, the
# export the trainer wrote `signed/model/artifacts/model_dir/`.
SIGNED_DIR = "signed"
PYFUNC_IN_SIGNED = "model"
EXPORT_IN_SIGNED = "model/artifacts/model_dir"


def _is_remote(path: str) -> bool:
    return "://" in path  # gs:// and other remote artifact stores, read through TensorFlow's gfile


def remote_gfile(path: str):
    """TensorFlow's gfile for a remote `path`. For s3:// it needs tensorflow-io's filesystems,
    registered by importing it: a Beam worker process inherits the environment with the store's
    endpoint and keys, but not that registration."""
    import tensorflow as tf

    if path.startswith("s3://"):
        import tensorflow_io  # noqa: F401
    return tf.io.gfile


def file_exists(path: str) -> bool:
    if _is_remote(path):
        return remote_gfile(path).exists(path)
    return os.path.isfile(path)


def read_bytes(path: str) -> bytes:
    if _is_remote(path):
        with remote_gfile(path).GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def write_bytes(path: str, data: bytes) -> None:
    """One file at `path`, local or on an object store (gs://, s3://), its folder created."""
    if _is_remote(path):
        gfile = remote_gfile(path)
        gfile.makedirs(os.path.dirname(path))
        with gfile.GFile(path, "wb") as f:
            f.write(data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def copy_tree(src: str, dst: str) -> None:
    """Every file under folder `src` to the same place under `dst`; either side may be on an
    object store (gfile), where a key must not contain "./"."""
    gfile = remote_gfile(src if _is_remote(src) else dst)
    for folder, _dirs, files in gfile.walk(src):
        relative = os.path.relpath(folder.rstrip("/"), src.rstrip("/"))
        target = dst if relative == "." else os.path.join(dst, relative)
        gfile.makedirs(target)
        for name in files:
            gfile.copy(os.path.join(folder, name), os.path.join(target, name), overwrite=True)


@contextlib.contextmanager
def local_copy(model_dir: str) -> Iterator[str]:
    """`model_dir` as a local folder: itself, or a temporary copy of a remote one (TensorFlow's
    checkpoint reader, run on tensorflow-io's S3 files, can crash the process)."""
    if not _is_remote(model_dir):
        yield model_dir
        return
    with tempfile.TemporaryDirectory(prefix="model-") as local:
        copy_tree(model_dir, local)
        yield local


@contextlib.contextmanager
def local_folder_for(uri: str) -> Iterator[str]:
    """A local folder whose files end up at `uri`: `uri` itself when local; for an object store a
    temporary folder uploaded when the block ends (TensorFlow's SavedModel writer merges its
    checkpoint shards in place, reading back what it just wrote, which crashes on S3)."""
    if not _is_remote(uri):
        yield uri
        return
    with tempfile.TemporaryDirectory(prefix="export-") as local:
        yield local
        copy_tree(local, uri)


def read_model_meta(model_dir: str) -> dict[str, Any]:
    path = os.path.join(model_dir, MODEL_META_FILE)
    if not file_exists(path):
        raise FileNotFoundError(f"{path}: missing; {model_dir} was not written by this project's trainers")
    return json.loads(read_bytes(path))
