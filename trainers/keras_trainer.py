"""The Keras challenger: a TFX Trainer run_fn that reads top to bottom.

data (shared tf.data input) -> model (normalization inside) -> placement -> fit -> export a
SavedModel that takes raw uint8 images [N, 28, 28] and returns probabilities [N, 10].
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from trainers import common, model_format

# --- model -------------------------------------------------------------------------------
# PyTorch's default weight initialisation (kaiming_uniform with a=sqrt(5): U(+-1/sqrt(fan_in))),
# so that bn_cnn starts from the same distribution in both frameworks.
TORCH_INIT = keras.initializers.VarianceScaling(scale=1 / 3, mode="fan_in", distribution="uniform")


def _conv_block(x, filters: int):
    """Conv -> MaxPool -> BatchNorm -> ReLU. Pooling first gives batch norm and ReLU a quarter of
    the elements: Keras 3's batch norm is not a fused kernel on TensorFlow's CPU, and after the
    full-size conv output it took 40 % of a training step."""
    x = keras.layers.Conv2D(filters, (3, 3), use_bias=False, kernel_initializer=TORCH_INIT)(x)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)  # torch's BatchNorm2d defaults
    return keras.layers.ReLU()(x)


def build_model(name: str) -> keras.Model:
    """Same layers, order and trainable parameter count as torch_trainer.build_model(name)."""
    if name not in common.MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}")
    inputs = keras.Input(shape=common.IMAGE_SHAPE, dtype="uint8", name="image")
    x = keras.layers.Rescaling(scale=1.0 / (255.0 * common.PIXEL_STD),
                               offset=-common.PIXEL_MEAN / common.PIXEL_STD)(inputs)
    x = keras.layers.Reshape((*common.IMAGE_SHAPE, 1))(x)
    if name == "seed_cnn":
        # The seed's model: Conv 32 3x3 ReLU -> MaxPool 2 -> Flatten -> Dense 10.
        x = keras.layers.Conv2D(32, (3, 3), activation="relu")(x)
        x = keras.layers.MaxPooling2D((2, 2))(x)
        x = keras.layers.Flatten()(x)
    else:
        # Two conv blocks (28 -> conv 26 -> pool 13 -> conv 11 -> pool 5), a dense head, dropout.
        x = _conv_block(_conv_block(x, 24), 48)
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(128, activation="relu", kernel_initializer=TORCH_INIT)(keras.layers.Dropout(0.25)(x))
        x = keras.layers.Dropout(0.25)(x)
    # float32 probabilities whatever the compute precision (mixed_bfloat16 on GPU/TPU).
    outputs = keras.layers.Dense(common.NUM_CLASSES, activation="softmax", name="probabilities", dtype="float32",
                                 kernel_initializer=TORCH_INIT if name == "bn_cnn" else "glorot_uniform")(x)
    return keras.Model(inputs, outputs, name=name)


class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The per-step rates of common.learning_rates, looked up in the graph: one formula for both
    frameworks, evaluated once in Python."""

    def __init__(self, rates: list[float]) -> None:
        self.rates = [float(r) for r in rates]

    def __call__(self, step):
        index = keras.ops.minimum(keras.ops.cast(step, "int32"), len(self.rates) - 1)
        return keras.ops.take(keras.ops.convert_to_tensor(self.rates, "float32"), index)

    def get_config(self) -> dict:
        return {"rates": self.rates}


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


class EpochLog(keras.callbacks.Callback):
    """Each epoch's metrics on the trainers' progress logger, as the PyTorch trainer writes them."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.started = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        common.log_epoch(epoch + 1, self.params["epochs"], logs or {}, time.monotonic() - self.started)


# --- train and export --------------------------------------------------------------------
def run_fn(fn_args: FnArgs) -> None:
    cfg = common.TrainConfig.from_custom_config(fn_args.custom_config)
    keras.utils.set_random_seed(cfg.seed)
    strategy, device = choose_strategy(cfg.accelerator)
    mixed = common.mixed_precision_applies(cfg, on_cpu=device == "cpu")

    train_ds = common.make_dataset(fn_args.train_files, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                   shift=cfg.augment_shift)
    eval_ds = common.make_dataset(fn_args.eval_files, 256, shuffle=False, seed=cfg.seed)
    steps_per_epoch = int(train_ds.cardinality())

    previous_policy, absl_level = keras.mixed_precision.global_policy(), logging.getLogger("absl").level
    try:
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        with strategy.scope():
            model = build_model(cfg.model)
            schedule = LearningRate(common.learning_rates(steps_per_epoch * cfg.epochs, cfg.learning_rate,
                                                          cfg.lr_schedule))
            # epsilon as torch.optim.Adam's (Keras' default is 1e-7)
            model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule, epsilon=1e-8),
                          loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                          steps_per_execution=cfg.steps_per_execution)
        started = time.monotonic()
        history = model.fit(train_ds, validation_data=eval_ds, epochs=cfg.epochs, verbose=2,
                            callbacks=[keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir), EpochLog()])
        train_seconds = time.monotonic() - started
        with model_format.local_folder_for(fn_args.serving_model_dir) as export_dir:
            model.export(export_dir, format="tf_saved_model", verbose=False)
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        # export(verbose=False) sets absl's verbosity to WARNING for the whole process, which would
        # silence the orchestrator's own log lines for the rest of the run.
        logging.getLogger("absl").setLevel(absl_level)

    common.write_json(os.path.join(fn_args.serving_model_dir, common.HISTORY_FILE),
                      {k: [float(v) for v in vs] for k, vs in history.history.items()})
    common.write_json(os.path.join(fn_args.serving_model_dir, common.MODEL_META_FILE), {
        "framework": "keras", "format": "tf_saved_model", "model": cfg.model,
        "parameters": count_trainable(model), "device": device, "mixed_precision": mixed,
        "train_seconds": round(train_seconds, 2), "steps_per_epoch": steps_per_epoch,
        "config": dataclasses.asdict(cfg),
        "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
    })
