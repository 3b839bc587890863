"""The Keras challenger: a TFX Trainer run_fn that reads top to bottom.

data (shared tf.data input) -> model (normalization inside) -> placement -> fit -> export a
SavedModel that takes raw uint8 images [N, 28, 28] and returns probabilities [N, classes].
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import tempfile
import time
from collections.abc import Iterator

import keras
import numpy as np
import tensorflow as tf
from tfx.components.trainer.fn_args_utils import FnArgs

from trainers import common, distributed, machine, model_format
from trainers.trial import OnEpoch, TrialData, TrialResult

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


def build_model(name: str, num_classes: int = model_format.NUM_CLASSES, width: float = 1.0) -> keras.Model:
    """`num_classes` probabilities; same layers, order and trainable parameter count as
    torch_model.build_model(name, num_classes, width). `width` scales every conv layer's channels
    and the dense layer's units (common.scaled); 1 is the architecture as described."""
    if name not in common.MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}")
    inputs = keras.Input(shape=common.IMAGE_SHAPE, dtype="uint8", name="image")
    x = keras.layers.Rescaling(scale=1.0 / (255.0 * common.PIXEL_STD),
                               offset=-common.PIXEL_MEAN / common.PIXEL_STD)(inputs)
    x = keras.layers.Reshape((*common.IMAGE_SHAPE, 1))(x)
    if name == "seed_cnn":
        # The seed's model: Conv 32 3x3 ReLU -> MaxPool 2 -> Flatten -> Dense (10 for MNIST).
        # The seed's conv -> ReLU -> pool as conv -> pool -> ReLU: the same function, see torch_model.
        x = keras.layers.Conv2D(common.scaled(32, width), (3, 3))(x)
        x = keras.layers.MaxPooling2D((2, 2))(x)
        x = keras.layers.ReLU()(x)
        x = keras.layers.Flatten()(x)
    else:
        # Two conv blocks (28 -> conv 26 -> pool 13 -> conv 11 -> pool 5), a dense head, dropout.
        x = _conv_block(_conv_block(x, common.scaled(24, width)), common.scaled(48, width))
        x = keras.layers.Flatten()(x)
        x = keras.layers.Dense(common.scaled(128, width), activation="relu",
                               kernel_initializer=TORCH_INIT)(keras.layers.Dropout(0.25)(x))
        x = keras.layers.Dropout(0.25)(x)
    # float32 probabilities whatever the compute precision (mixed_bfloat16 on GPU/TPU).
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities", dtype="float32",
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


def choose_strategy(accelerator: str, world: distributed.World | None = None) -> tuple[tf.distribute.Strategy, str]:
    """The distribution strategy for `accelerator` and a description of the device used."""
    if world is not None and world.size > 1:
        return multi_worker_strategy(accelerator, world)
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


def multi_worker_strategy(accelerator: str, world: distributed.World) -> tuple[tf.distribute.Strategy, str]:
    """MultiWorkerMirroredStrategy over TF_CONFIG's workers (it reads TF_CONFIG itself): ring
    all-reduce between CPUs, NCCL between GPUs. It configures TensorFlow's runtime, so it comes
    before anything else of TensorFlow runs, and so do the thread and device settings here."""
    if accelerator == "tpu":
        raise RuntimeError("accelerator=tpu with several TF_CONFIG workers: multi-worker training runs on "
                           "CPUs or GPUs (a TPU pod slice is one TPUStrategy worker)")
    gpus = tf.config.list_physical_devices("GPU")
    if accelerator == "gpu" and not gpus:
        raise RuntimeError("accelerator=gpu but TensorFlow sees no GPU")
    if accelerator == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
    if world.local_size > 1:
        threads = distributed.threads_per_worker(common.container_cores(), world)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    on_gpu = bool(gpus) and accelerator != "cpu"
    return tf.distribute.MultiWorkerMirroredStrategy(), f"gpu x{len(gpus)}" if on_gpu else "cpu"


def adapt_fit_to_multi_worker(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Works around two places where Keras 3's fit fails under MultiWorkerMirroredStrategy
    (keras-team/keras#20585), both where it reduces values over the workers:
    - before training it builds the compiled state (metrics, loss, optimizer) from the first batch
      reduced over the replicas, `strategy.reduce("MEAN", (images, labels))`, which TensorFlow
      refuses for a pair ("Attempt to convert a value (PerReplica...) with an unsupported type"):
      the state is built here from a local example batch, and fit's own build is skipped;
    - after each step it reduces each logged metric over the workers with
      `strategy.reduce("MEAN", value, axis=0)`, which fails on a scalar ("Invalid reduction
      dimension 0 for input with 0 dimensions"): the steps return each metric as a [1] vector,
      reduced to the scalar fit expects."""
    example = (tf.zeros((1, *common.IMAGE_SHAPE), tf.uint8), tf.zeros((1,), tf.int64))
    with strategy.scope():
        model._symbolic_build(data_batch=example)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    for name in ("train_step", "test_step"):
        step = getattr(model, name)
        setattr(model, name, lambda data, step=step: {key: tf.reshape(value, [1]) for key, value in step(data).items()})


def per_worker_input(strategy: tf.distribute.Strategy, make) -> tf.distribute.DistributedDataset:
    """`make(input_context)`'s dataset, built on each worker as it is: the dataset's batches are
    this worker's own. Keras would otherwise take a dataset's batch for the global batch and
    re-split (and re-shard) it across the workers."""
    options = tf.distribute.InputOptions(experimental_fetch_to_device=True)
    return strategy.distribute_datasets_from_function(make, options)


class EpochLog(keras.callbacks.Callback):
    """Each epoch's metrics on the trainers' progress logger, as the PyTorch trainer writes them,
    and each epoch's seconds (the model's metadata records them)."""

    def __init__(self) -> None:
        super().__init__()
        self.epoch_seconds: list[float] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch, self.started = epoch, time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        # `batch`: the last step of the execution just run (steps_per_execution steps a call), 0-based.
        total = self.params.get("steps")
        common.log_batches(min(batch + 1, total) if total else batch + 1, total, self.epoch + 1,
                           self.params["epochs"])

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_seconds.append(round(time.monotonic() - self.started, 3))
        common.log_epoch(epoch + 1, self.params["epochs"], logs or {}, self.epoch_seconds[-1])


# --- export ------------------------------------------------------------------------------
def export(model: keras.Model, serving_dir: str, world: distributed.World) -> None:
    """The SavedModel into `serving_dir`, by the chief. With several workers every worker saves
    (saving may read variables synchronised across the workers, which takes all of them), the
    others into a temporary folder that is then deleted."""
    if world.is_chief:
        with model_format.local_folder_for(serving_dir) as export_dir:
            model.export(export_dir, format="tf_saved_model", verbose=False)
        return
    with tempfile.TemporaryDirectory(prefix=f"export-worker-{world.rank}-") as scratch:
        model.export(scratch, format="tf_saved_model", verbose=False)


# --- train ---------------------------------------------------------------------------------
def compile_model(cfg: common.TrainConfig, num_classes: int, total_steps: int, steps_per_execution: int) -> keras.Model:
    """The model with its optimizer, schedule, loss and metric: what run_fn and tune_trial train."""
    model = build_model(cfg.model, num_classes, cfg.width)
    schedule = LearningRate(common.learning_rates(total_steps, cfg.learning_rate, cfg.lr_schedule))
    # epsilon as torch.optim.Adam's (Keras' default is 1e-7)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=schedule, epsilon=1e-8),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    return model


@contextlib.contextmanager
def training_precision(mixed: bool) -> Iterator[None]:
    """mixed_bfloat16 inside the block when it applies; the process's policy and absl's log level
    as they were after it: export(verbose=False) sets absl's verbosity to WARNING for the whole
    process, which would silence the orchestrator's own log lines for the rest of the run."""
    previous_policy, absl_level = keras.mixed_precision.global_policy(), logging.getLogger("absl").level
    try:
        if mixed:
            keras.mixed_precision.set_global_policy("mixed_bfloat16")
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        logging.getLogger("absl").setLevel(absl_level)


# --- train and export --------------------------------------------------------------------
def run_fn(fn_args: FnArgs) -> None:
    cfg = common.TrainConfig.from_custom_config(fn_args.custom_config, fn_args.hyperparameters)
    class_names = common.class_names_from_custom_config(fn_args.custom_config)
    world = distributed.tf_world()
    batch_size = distributed.per_worker_batch(cfg.batch_size, world)
    keras.utils.set_random_seed(cfg.seed)
    strategy, device = choose_strategy(cfg.accelerator, world)
    mixed = common.mixed_precision_applies(cfg, on_cpu=device == "cpu")

    def train_input(context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        # With several workers (a context), each worker's own shard, at its replicas' part of the global batch.
        shard = (context.input_pipeline_id, context.num_input_pipelines) if context else None
        return common.make_dataset(fn_args.train_files, context.get_per_replica_batch_size(cfg.batch_size)
                                   if context else cfg.batch_size, shuffle=True, seed=cfg.seed,
                                   shift=cfg.augment_shift, shard=shard, schema_path=fn_args.schema_path)

    def eval_input(context: tf.distribute.InputContext | None = None) -> tf.data.Dataset:
        # Every worker evaluates the whole split: the metrics, summed over the workers, count each
        # example once per worker, which leaves every mean as one process computes it.
        return common.make_dataset(fn_args.eval_files, 256, shuffle=False, seed=cfg.seed,
                                   schema_path=fn_args.schema_path)

    if world.size == 1:
        train_ds, eval_ds = train_input(), eval_input()
        steps_per_epoch = int(train_ds.cardinality())
    else:
        train_ds, eval_ds = per_worker_input(strategy, train_input), per_worker_input(strategy, eval_input)
        steps_per_epoch = common.count_batches(fn_args.train_files, batch_size, world.size)

    with training_precision(mixed):
        with strategy.scope():
            # One step per call with several workers: Keras' loop of several steps (a tf.while_loop
            # over an optional next batch) fails under MultiWorkerMirroredStrategy with "You must feed
            # a value for placeholder tensor 'while/body/.../while/cond/Placeholder'".
            model = compile_model(cfg, len(class_names), steps_per_epoch * cfg.epochs,
                                  cfg.steps_per_execution if world.size == 1 else 1)
        if world.size > 1:
            adapt_fit_to_multi_worker(model, strategy)
        epoch_log = EpochLog()
        # Only the chief logs for TensorBoard: the workers would write over each other's files.
        tensorboard = [keras.callbacks.TensorBoard(log_dir=fn_args.model_run_dir)] if world.is_chief else []
        started_at, started = time.time(), time.monotonic()
        history = model.fit(train_ds, validation_data=eval_ds, epochs=cfg.epochs, verbose=2,
                            callbacks=[*tensorboard, epoch_log])
        train_seconds = time.monotonic() - started
        export(model, fn_args.serving_model_dir, world)
    if not world.is_chief:
        return

    common.write_json(os.path.join(fn_args.serving_model_dir, common.HISTORY_FILE),
                      {k: [float(v) for v in vs] for k, vs in history.history.items()})
    common.write_json(os.path.join(fn_args.serving_model_dir, common.MODEL_META_FILE), {
        "framework": "keras", "format": "tf_saved_model", "model": cfg.model, "width": cfg.width,
        "class_names": class_names, "num_classes": len(class_names),
        "parameters": count_trainable(model), "device": device, "mixed_precision": mixed,
        "cpu": machine.cpu_description(),
        "world_size": world.size,
        "train_seconds": round(train_seconds, 2), "started_at": started_at,
        "epoch_seconds": epoch_log.epoch_seconds, "steps_per_epoch": steps_per_epoch,
        "config": dataclasses.asdict(cfg),
        "tensorflow_version": tf.__version__, "keras_version": keras.__version__,
    })


# --- a tuning trial ------------------------------------------------------------------------
class ReportEpochs(keras.callbacks.Callback):
    """Each epoch's metrics to a tuning trial's on_epoch; training stops when it says so."""

    def __init__(self, on_epoch: OnEpoch) -> None:
        super().__init__()
        self.on_epoch = on_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.on_epoch(epoch + 1, {key: float(value) for key, value in (logs or {}).items()}):
            self.model.stop_training = True


def use_threads(threads: int) -> None:
    """TensorFlow's thread pools at `threads` (0: as they are). TensorFlow fixes them when it first
    runs an op: a tuner's worker process calls this first; a process already running keeps its pools."""
    if not threads:
        return
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        logging.info("TensorFlow already initialised in this process: its thread pools stay as they are")


def tune_trial(cfg: common.TrainConfig, data: TrialData, on_epoch: OnEpoch) -> TrialResult:
    """One tuning trial (components/tuner): run_fn's data, model and fit, on the first `data.examples`
    training records for up to `data.epochs` epochs, each epoch's eval-split metrics reported to
    `on_epoch` (which may stop it). Nothing is exported."""
    use_threads(data.threads)
    keras.utils.set_random_seed(cfg.seed)
    strategy, device = choose_strategy(cfg.accelerator)
    mixed = common.mixed_precision_applies(cfg, on_cpu=device == "cpu")
    classes = len(data.class_names) or model_format.NUM_CLASSES
    train_ds = common.make_dataset(data.train_files, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                   shift=cfg.augment_shift, schema_path=data.schema_path, limit=data.examples)
    eval_ds = common.make_dataset(data.eval_files, 256, shuffle=False, seed=cfg.seed, schema_path=data.schema_path)
    steps_per_epoch = int(train_ds.cardinality())
    with training_precision(mixed):
        with strategy.scope():
            model = compile_model(cfg, classes, steps_per_epoch * data.epochs, cfg.steps_per_execution)
        started = time.monotonic()
        history = model.fit(train_ds, validation_data=eval_ds, epochs=data.epochs, verbose=0,
                            callbacks=[EpochLog(), ReportEpochs(on_epoch)])
    metrics = {key: [float(v) for v in values] for key, values in history.history.items()}
    return TrialResult(history=metrics, epochs_run=len(metrics.get("loss", [])),
                       examples=data.examples or common.count_records(data.train_files),
                       seconds=round(time.monotonic() - started, 3), device=device, mixed_precision=mixed,
                       parameters=count_trainable(model))
