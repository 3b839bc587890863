"""What a served model is, shared by trainers, evaluator and registry; imports no framework."""

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


def read_model_meta(model_dir: str) -> dict[str, Any]:
    path = os.path.join(model_dir, MODEL_META_FILE)
    if "://" in path:  # gs:// and other remote artifact stores
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise FileNotFoundError(f"{path}: missing; {model_dir} was not written by this project's trainers")
        with tf.io.gfile.GFile(path) as f:
            return json.load(f)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing; {model_dir} was not written by this project's trainers")
    with open(path, encoding="utf-8") as f:
        return json.load(f)
