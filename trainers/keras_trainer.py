"""The Keras challenger: a TFX Trainer run_fn that reads top to bottom.

data (shared tf.data input) -> model (normalization inside) -> placement -> fit -> export a
SavedModel that takes raw uint8 images [N, 28, 28] and returns probabilities [N, 10].
"""

from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from trainers import common


# --- model -------------------------------------------------------------------------------
def _conv_bn_relu(x, filters: int):
    x = keras.layers.Conv2D(filters, (3, 3), use_bias=False)(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)  # torch's BatchNorm2d defaults
    return keras.layers.ReLU()(x)


def build_model(name: str) -> keras.Model:
    """Same layers, order and trainable parameter count as torch_trainer.build_model(name)."""
    if name not in ("seed_cnn", "bn_cnn"):
        raise ValueError(f"unknown model {name!r}")
    inputs = keras.Input(shape=common.IMAGE_SHAPE, dtype="uint8", name="image")
    x = keras.layers.Rescaling(scale=1.0 / (255.0 * common.PIXEL_STD),
                               offset=-common.PIXEL_MEAN / common.PIXEL_STD)(inputs)
    x = keras.layers.Reshape((*common.IMAGE_SHAPE, 1))(x)
    if name == "seed_cnn":
        # The seed's model: Conv 32 3x3 ReLU -> MaxPool 2 -> Flatten -> Dense 10.
        x = keras.layers.Conv2D(32, (3, 3), activation="relu")(x)
        x = keras.layers.MaxPooling2D((2, 2))(x)
    else:
        # Two conv blocks with batch norm, pooling and dropout: 28 -> 26 -> 13 -> 11 -> 5.
        x = keras.layers.MaxPooling2D((2, 2))(_conv_bn_relu(x, 32))
        x = keras.layers.MaxPooling2D((2, 2))(_conv_bn_relu(x, 64))
        x = keras.layers.Dropout(0.25)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(common.NUM_CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)


def count_trainable(model: keras.Model) -> int:
    # Keras counts batch-norm moving statistics as weights; torch keeps them as buffers.
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# --- placement ---------------------------------------------------------------------------
def _tpu_visible() -> bool:
    # Only probe for a TPU where one can be: the resolver otherwise queries GCE metadata.
    return bool(os.environ.get("TPU_NAME") or os.environ.get("KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS")
                or os.environ.get("TPU_WORKER_HOSTNAMES") or os.path.exists("/dev/accel0"))


def choose_strategy(accelerator: str) -> tuple[tf.distribute.Strategy, str]:
    """The distribution strategy for `accelerator` and a description of the device used."""
    if accelerator == "tpu" or (accelerator == "auto" and _tpu_visible()):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver), "tpu"
        except (ValueError, RuntimeError, tf.errors.OpError) as e:
            if accelerator == "tpu":
                raise RuntimeError(f"accelerator=tpu but no TPU could be initialised: {e}") from e
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and accelerator in ("auto", "gpu"):
        return tf.distribute.MirroredStrategy(), f"gpu x{len(gpus)}"
    if accelerator == "gpu":
        raise RuntimeError("accelerator=gpu but TensorFlow sees no GPU")
    return tf.distribute.get_strategy(), "cpu"


# --- train and export --------------------------------------------------------------------
def run_fn(fn_args: FnArgs) -> None:
    cfg = common.TrainConfig.from_custom_config(fn_args.custom_config)
    keras.utils.set_random_seed(cfg.seed)
    strategy, device = choose_strategy(cfg.accelerator)

    train_ds = common.make_dataset(fn_args.train_files, cfg.batch_size, shuffle=True, seed=cfg.seed)
    eval_ds = common.make_dataset(fn_args.eval_files, 256, shuffle=False, seed=cfg.seed)

    with strategy.scope():
        model = build_model(cfg.model)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      steps_per_execution=cfg.steps_per_execution)
    started = time.monotonic()
    history = model.fit(train_ds, validation_data=eval_ds, epochs=cfg.epochs, verbose=2,
                        callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)])
    train_seconds = time.monotonic() - started

    model.export(fn_args.serving_model_dir, format="tf_saved_model", verbose=False)
    common.write_json(os.path.join(fn_args.serving_model_dir, common.HISTORY_FILE),
                      {k: [float(v) for v in vs] for k, vs in history.history.items()})
    common.write_json(os.path.join(fn_args.serving_model_dir, common.MODEL_META_FILE), {
        "framework": "keras", "format": "tf_saved_model", "model": cfg.model,
        "parameters": count_trainable(model), "device": device,
        "train_seconds": round(train_seconds, 2), "config": dataclasses.asdict(cfg),
        "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
    })
