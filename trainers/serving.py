"""Loading an exported model without knowing its framework: uint8 [N, 28, 28] -> probabilities.

The evaluator and the registry's pyfunc both go through `load_predictor`, so the model that is
scored is loaded exactly as the model that is served. Only formats that run no pickled code are
read: TF SavedModel and TorchScript.
"""

from __future__ import annotations

import os
from typing import Callable

import numpy as np

from trainers.spec import IMAGE_SHAPE, read_model_meta

Predictor = Callable[[np.ndarray], np.ndarray]


def _check_input(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"expected uint8 images of shape [N, 28, 28], got {images.dtype} {images.shape}")
    return images


def _load_keras(model_dir: str) -> Predictor:
    import tensorflow as tf

    loaded = tf.saved_model.load(model_dir)

    def predict(images: np.ndarray) -> np.ndarray:
        return loaded.serve(tf.constant(_check_input(images))).numpy()

    return predict


def _load_torchscript(path: str) -> Predictor:
    import torch

    module = torch.jit.load(path, map_location="cpu").eval()

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(_check_input(images)))).numpy()

    return predict


def load_predictor(model_dir: str) -> tuple[Predictor, dict]:
    """The model in `model_dir` as a predict function, with its metadata."""
    meta = read_model_meta(model_dir)
    framework = meta.get("framework")
    if framework == "keras":
        return _load_keras(model_dir), meta
    if framework == "pytorch":
        return _load_torchscript(os.path.join(model_dir, meta["file"])), meta
    raise ValueError(f"{model_dir}: unknown framework {framework!r} in model metadata")


def predict_in_batches(predict: Predictor, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate([predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
