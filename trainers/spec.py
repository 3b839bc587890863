"""What a served model is, shared by trainers, evaluator and registry; imports no framework."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from typing import Any

IMAGE_SHAPE = (28, 28)
NUM_CLASSES = 10
# MNIST's training-set pixel mean and std on a 0..1 scale; applied inside both exported models.
PIXEL_MEAN = 0.1307
PIXEL_STD = 0.3081
MODEL_META_FILE = "model_meta.json"
HISTORY_FILE = "history.json"
MODEL_NAMES = ("seed_cnn", "bn_cnn")
LR_SCHEDULES = ("constant", "one_cycle")
ACCELERATORS = ("auto", "cpu", "gpu", "tpu")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """What both trainers' run_fn read from custom_config; the defaults are the pipeline's defaults
    (pipelines.config.PipelineConfig takes them from here)."""

    # bn_cnn: two conv blocks (24, 48 filters) with batch norm, a dense head, dropout; 165,746 parameters.
    # seed_cnn: the seed article's model (with seed-like settings: batch 32, constant 1e-3, 5 epochs,
    # no augmentation).
    model: str = "bn_cnn"
    epochs: int = 4
    batch_size: int = 128
    learning_rate: float = 3e-3  # the peak, with one_cycle
    # one_cycle: linear warm-up over the first 15 % of steps, then cosine decay to 0.
    lr_schedule: str = "one_cycle"
    # Augmentation: each training image moves by up to this many pixels each epoch (0: none).
    augment_shift: int = 2
    seed: int = 42
    accelerator: str = "auto"
    # bfloat16 compute on a GPU or TPU (weights stay float32); ignored, and recorded so, on CPU.
    mixed_precision: bool = False
    # Keras runs this many steps per tf.function call: ~1.5x faster for small models on CPU.
    steps_per_execution: int = 50

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model {self.model!r} is not one of {MODEL_NAMES}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r} is not one of {LR_SCHEDULES}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator {self.accelerator!r} is not one of {ACCELERATORS}")
        if not 0 <= self.augment_shift <= 8:
            raise ValueError(f"augment_shift must be 0..8 pixels, got {self.augment_shift}")
        if self.epochs < 1 or self.batch_size < 1 or self.steps_per_execution < 1 or self.learning_rate <= 0:
            raise ValueError("epochs, batch_size, steps_per_execution and learning_rate must be positive")

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (custom_config or {}).items() if k in known})


WARMUP_FRACTION = 0.15


def mixed_precision_applies(cfg: TrainConfig, on_cpu: bool) -> bool:
    """bfloat16 compute when asked for and not on a CPU; said in the log when it is not applied."""
    if cfg.mixed_precision and on_cpu:
        logging.warning("mixed_precision asked for, but training runs on the CPU: float32 instead")
    return cfg.mixed_precision and not on_cpu


def learning_rate_at(step: int, total_steps: int, peak: float, schedule: str) -> float:
    """The learning rate of training step `step` (0-based): the one definition both frameworks use."""
    if schedule == "constant":
        return peak
    warmup = max(1, int(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def container_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPU cores this process may use: its affinity, capped by the container's CPU quota (cgroup
    v2 cpu.max or v1 cfs quota), which Kubernetes CPU limits set and affinity does not show."""
    cores = len(os.sched_getaffinity(0))
    for quota_file, period_file in (("cpu.max", None), ("cpu/cpu.cfs_quota_us", "cpu/cpu.cfs_period_us")):
        try:
            with open(os.path.join(cgroup_root, quota_file)) as f:
                fields = f.read().split()
            if period_file:
                with open(os.path.join(cgroup_root, period_file)) as f:
                    fields.append(f.read().strip())
        except OSError:
            continue
        quota, period = fields[0], fields[1]
        if quota not in ("max", "-1") and int(period) > 0:
            return max(1, min(cores, math.ceil(int(quota) / int(period))))
        return cores
    return cores


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
