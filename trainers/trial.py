"""What a tuning trial is to the trainers: the data it trains on (a subset of the training split,
the whole eval split), the callback it reports each epoch to, and what it returns. The tuner
(components/tuner) calls each trainer's `tune_trial(cfg, data, on_epoch)` in its own process; the
trial runs the trainer's own data, model and training loop, so a tuned setting means what it
means in the Trainer's run_fn. Nothing here knows the tuning engine: `on_epoch` says whether to go on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

# on_epoch(epoch, metrics): epoch is 1-based; metrics hold loss, accuracy, val_loss, val_accuracy
# of that epoch. True: train the next epoch; False: stop here (the tuner's pruner said so).
OnEpoch = Callable[[int, dict[str, float]], bool]


@dataclasses.dataclass(frozen=True)
class TrialData:
    train_files: list[str]  # the Trainer's glob patterns of the train split
    eval_files: list[str]
    examples: int  # the first N training records (0: all of them)
    epochs: int  # at most this many epochs
    schema_path: str | None = None
    class_names: tuple[str, ...] = ()  # empty: the ten digits
    threads: int = 0  # compute threads of this trial's process (0: the container's cores)


@dataclasses.dataclass(frozen=True)
class TrialResult:
    history: dict[str, list[float]]  # per epoch run: loss, accuracy, val_loss, val_accuracy
    epochs_run: int
    examples: int  # training records per epoch
    seconds: float
    device: str
    mixed_precision: bool  # bfloat16 compute applied (on a CPU: as cpu_bfloat16 decided)
    parameters: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
