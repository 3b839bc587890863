"""What an exported model is, for whoever loads it (evaluator, registry, serving): its input and
output, the files beside it, and how they are read from a local folder or an artifact store.
Imports no framework."""

from __future__ import annotations

import json
import os
from typing import Any

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# MNIST's training-set pixel mean and std on a 0..1 scale; applied inside both exported models.
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081
MODEL_META_FILE = "model_meta.json"
HISTORY_FILE = "history.json"


def _is_remote(path: str) -> bool:
    return "://" in path  # gs:// and other remote artifact stores, read through TensorFlow's gfile


def file_exists(path: str) -> bool:
    if _is_remote(path):
        import tensorflow as tf

        return tf.io.gfile.exists(path)
    return os.path.isfile(path)


def read_bytes(path: str) -> bytes:
    if _is_remote(path):
        import tensorflow as tf

        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    with open(path, "rb") as f:
        return f.read()


def read_model_meta(model_dir: str) -> dict[str, Any]:
    path = os.path.join(model_dir, MODEL_META_FILE)
    if not file_exists(path):
        raise FileNotFoundError(f"{path}: missing; {model_dir} was not written by this project's trainers")
    return json.loads(read_bytes(path))
