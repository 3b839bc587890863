"""What both trainers' run_fn read from custom_config: the training settings, declared once, and
the learning-rate schedule they define (one formula for both frameworks).

The pipeline's config (pipelines/config.py) holds a TrainConfig as its `train` section, the
command line's flags are generated from these fields and their help, and the compiled package
passes them to the trainers as one JSON parameter.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from trainers.model_format import DEFAULT_CLASS_NAMES, NUM_CLASSES

MODEL_NAMES = ("seed_cnn", "bn_cnn")
WIDTH_RANGE = (0.25, 4.0)
LR_SCHEDULES = ("constant", "one_cycle")
ACCELERATORS = ("auto", "cpu", "gpu", "tpu")
CPU_BFLOAT16 = ("auto", "on", "off")


def setting(default: Any, help_text: str, choices: tuple[str, ...] | None = None) -> Any:
    """A dataclass field declared once with its help text (and choices): the command line's flags
    are generated from these (pipelines/cli.py). Also used by the pipeline's and the decision
    rule's configs."""
    metadata = {"help": help_text, "choices": choices}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    model: str = setting("bn_cnn", "architecture, both trainers: bn_cnn (two conv blocks with batch norm, "
                          "165,746 parameters) or seed_cnn (the seed article's model)", MODEL_NAMES)
    epochs: int = setting(4, "training epochs, both trainers")
    batch_size: int = setting(128, "training batch size, both trainers")
    learning_rate: float = setting(3e-3, "learning rate, both trainers (the peak with one_cycle)")
    lr_schedule: str = setting("one_cycle", "one_cycle (linear warm-up over 15 % of the steps, cosine decay "
                                "to 0) or constant", LR_SCHEDULES)
    augment_shift: int = setting(2, "each training image moves by a random offset of up to N pixels per "
                                  "axis, new every epoch (0: no augmentation)")
    seed: int = setting(42, "training seed, both trainers")
    accelerator: str = setting("auto", "where the trainers run: auto, cpu, gpu or tpu (asking for an absent "
                                "device is an error)", ACCELERATORS)
    mixed_precision: bool = setting(False, "bfloat16 compute on a GPU or TPU (on a CPU, cpu_bfloat16 decides)")
    cpu_bfloat16: str = setting("auto", "bfloat16 compute (float32 weights) on a CPU: auto (where the CPU has it "
                                "in hardware: AMX or AVX-512 BF16), on or off", CPU_BFLOAT16)
    steps_per_execution: int = setting(50, "Keras: training steps per compiled call (~1.5x faster for small "
                                        "models on CPU)")
    width: float = setting(1.0, "model width, both trainers: every conv layer's channels and the dense layer's "
                            "units times this, rounded (1: the architectures as described; 0.25..4)")

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model {self.model!r} is not one of {MODEL_NAMES}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule {self.lr_schedule!r} is not one of {LR_SCHEDULES}")
        if self.cpu_bfloat16 not in CPU_BFLOAT16:
            raise ValueError(f"cpu_bfloat16 {self.cpu_bfloat16!r} is not one of {CPU_BFLOAT16}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator {self.accelerator!r} is not one of {ACCELERATORS}")
        if not 0 <= self.augment_shift <= 8:
            raise ValueError(f"augment_shift must be 0..8 pixels, got {self.augment_shift}")
        if not WIDTH_RANGE[0] <= self.width <= WIDTH_RANGE[1]:
            raise ValueError(f"width must be {WIDTH_RANGE[0]}..{WIDTH_RANGE[1]}, got {self.width}")
        if self.epochs < 1 or self.batch_size < 1 or self.steps_per_execution < 1 or self.learning_rate <= 0:
            raise ValueError("epochs, batch_size, steps_per_execution and learning_rate must be positive")

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None,
                           hyperparameters: dict[str, Any] | None = None) -> TrainConfig:
        """The Trainer's custom_config may carry more keys (the code fingerprint): those are ignored.
        `hyperparameters` (the Trainer's fn_args.hyperparameters: a tuner's best values) apply over it."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in (custom_config or {}).items() if k in known}).tuned(hyperparameters)

    def tuned(self, hyperparameters: dict[str, Any] | None) -> TrainConfig:
        """This config with a tuner's values applied: KerasTuner's HyperParameters config (what TFX's
        Trainer reads from a HyperParameters artifact into fn_args.hyperparameters: {"space": [...],
        "values": {name: value}}) or a plain {name: value}. A value that names no setting is an
        error: a tuned value the trainer silently dropped would make the comparison unfair."""
        if not hyperparameters:
            return self
        values = hyperparameters["values"] if "space" in hyperparameters else hyperparameters
        kinds = {f.name: type(getattr(self, f.name)) for f in dataclasses.fields(self)}
        unknown = sorted(set(values) - set(kinds))
        if unknown:
            raise ValueError(f"hyperparameters {unknown} are no training setting (TrainConfig: {sorted(kinds)})")
        return dataclasses.replace(self, **{k: kinds[k](v) for k, v in values.items()})

    def as_custom_config(self) -> dict[str, Any]:
        """What a Trainer's custom_config holds: every setting, except `width` at 1 (the architectures
        as described), which a trainer reads as 1 when absent: a run that does not tune passes the
        trainers what it passed before width existed, and the compiled package's trainer_config
        parameter keeps its default."""
        settings = dataclasses.asdict(self)
        if settings["width"] == 1.0:
            del settings["width"]
        return settings


def scaled(units: int, width: float) -> int:
    """A layer's channels or units at model width `width`: the same rounding in both frameworks."""
    return max(1, round(units * width))


# The dataset's class names (label i names class i) are the pipeline's, declared once in its config
# and not a training setting: it passes them to each Trainer under this custom_config key.
CLASS_NAMES_KEY = "class_names"


def class_names_from_custom_config(custom_config: dict[str, Any] | None) -> list[str]:
    """The class names of the Trainer's custom_config (2 to 10 strings); the ten digits if absent."""
    names = (custom_config or {}).get(CLASS_NAMES_KEY)
    if names is None:
        return list(DEFAULT_CLASS_NAMES)
    if (not isinstance(names, (list, tuple)) or not all(isinstance(name, str) for name in names)
            or not 2 <= len(names) <= NUM_CLASSES):
        raise ValueError(f"{CLASS_NAMES_KEY} must be a list of 2 to {NUM_CLASSES} strings, got {names!r}")
    return list(names)


# one_cycle: linear warm-up over this share of the steps, then cosine decay to 0.
WARMUP_FRACTION = 0.15


def learning_rate_at(step: int, total_steps: int, peak: float, schedule: str) -> float:
    """The learning rate of training step `step` (0-based): the one definition both frameworks use
    (PyTorch calls it per step; Keras looks its values up in `learning_rates`)."""
    if schedule == "constant":
        return peak
    warmup = max(1, int(WARMUP_FRACTION * total_steps))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rates(total_steps: int, peak: float, schedule: str) -> list[float]:
    """learning_rate_at for every step of a training run."""
    return [learning_rate_at(step, total_steps, peak, schedule) for step in range(max(1, total_steps))]
