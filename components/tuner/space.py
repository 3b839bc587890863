"""The search space both frameworks are tuned over: one shape, declared once, as data.

Each dimension names a training setting (trainers.config.TrainConfig) and what values it may take;
Optuna samples it (suggest) and KerasTuner's HyperParameters config describes it (the artifact the
Trainers read). Batch size and mixed precision are in the space like the rest, so neither framework
keeps a hand-picked setting the other had tuned.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from trainers.config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Dimension:
    """A setting and its range: `low`..`high` (log-scaled with `log`; integers when both are ints),
    or one of `choices`. One choice only is a fixed value (recorded, not searched)."""

    name: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not any(f.name == self.name for f in dataclasses.fields(TrainConfig)):
            raise ValueError(f"search dimension {self.name!r} is no training setting (trainers/config.py)")
        if bool(self.choices) == (self.low is not None):
            raise ValueError(f"search dimension {self.name!r}: give either low and high, or choices")
        if self.low is not None and not (self.high is not None and self.low < self.high):
            raise ValueError(f"search dimension {self.name!r}: low {self.low} must be below high {self.high}")

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not self.log

    def contains(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        if self.choices:
            return {"name": self.name, "choices": list(self.choices)}
        return {"name": self.name, "low": self.low, "high": self.high, **({"log": True} if self.log else {})}


Space = tuple[Dimension, ...]

# Learning rate around the default 3e-3 (a decade below to three times above); the batch sizes the
# trainers were benchmarked at; both schedules; shifts up to 3 pixels; the model a half narrower to a
# half wider (widths past 1.5 cost more than the budget of a 2-core machine buys back).
SHARED_DIMENSIONS: Space = (
    Dimension("learning_rate", 3e-4, 1e-2, log=True),
    Dimension("batch_size", choices=(32, 64, 128, 256)),
    Dimension("lr_schedule", choices=("constant", "one_cycle")),
    Dimension("augment_shift", 0, 3),
    Dimension("width", choices=(0.5, 1.0, 1.5)),
)


def search_space(train: TrainConfig) -> Space:
    """The space of a run: the shared dimensions, and mixed precision, searched where it applies
    (an accelerator set explicitly: gpu or tpu) and fixed at the train section's value elsewhere
    (on a CPU, cpu_bfloat16 decides the compute whatever it says)."""
    searched = train.accelerator in ("gpu", "tpu")
    return (*SHARED_DIMENSIONS,
            Dimension("mixed_precision", choices=(False, True) if searched else (train.mixed_precision,)))


def to_json(space: Space) -> str:
    return json.dumps([d.to_dict() for d in space], sort_keys=True)


def from_json(text: str) -> Space:
    dims = []
    for d in json.loads(text):
        d = dict(d)
        if "choices" in d:
            d["choices"] = tuple(d["choices"])
        dims.append(Dimension(**d))
    if len({d.name for d in dims}) != len(dims):
        raise ValueError(f"search space names a setting twice: {[d.name for d in dims]}")
    return tuple(dims)


def fingerprint(space: Space) -> str:
    return hashlib.sha256(to_json(space).encode()).hexdigest()


def suggest(trial, space: Space) -> dict[str, Any]:
    """One point of the space, sampled by an Optuna trial (its sampler decides where)."""
    values: dict[str, Any] = {}
    for d in space:
        if d.choices:
            values[d.name] = trial.suggest_categorical(d.name, list(d.choices))
        elif d.is_int:
            values[d.name] = trial.suggest_int(d.name, d.low, d.high)
        else:
            values[d.name] = trial.suggest_float(d.name, float(d.low), float(d.high), log=d.log)
    return values


def point_of(train: TrainConfig, space: Space) -> dict[str, Any] | None:
    """The train section's own values of the space's settings (the untuned baseline), None when
    one of them lies outside the space."""
    values = {d.name: getattr(train, d.name) for d in space}
    return values if all(d.contains(values[d.name]) for d in space) else None


def hyperparameters_config(space: Space, values: dict[str, Any]) -> dict[str, Any]:
    """KerasTuner's HyperParameters config of the space with `values` chosen: what TFX's Tuner
    writes into its HyperParameters artifact and its Trainer hands to run_fn as
    fn_args.hyperparameters ({"space": [...], "values": {...}})."""
    import keras_tuner

    hp = keras_tuner.HyperParameters()
    for d in space:
        if len(d.choices) == 1:
            hp.Fixed(d.name, d.choices[0])
        elif d.choices and all(isinstance(c, bool) for c in d.choices):
            hp.Boolean(d.name)
        elif d.choices:
            hp.Choice(d.name, list(d.choices))
        elif d.is_int:
            hp.Int(d.name, d.low, d.high)
        else:
            hp.Float(d.name, float(d.low), float(d.high), sampling="log" if d.log else "linear")
    missing = sorted({d.name for d in space} - set(values))
    if missing:
        raise ValueError(f"no value for {missing}")
    hp.values.update({d.name: values[d.name] for d in space})
    return hp.get_config()
