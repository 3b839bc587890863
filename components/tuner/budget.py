"""The budget rule: each framework's study gets the same budget, counted in training examples seen
(trial-epochs x examples), summed over every trial of the study whichever worker ran it.

- budget = trials x epochs x examples (the settings tune_trials, tune_epochs, tune_examples);
- a finished, pruned or failed trial counts the epochs it ran x its examples: a trial pruned after
  one epoch leaves the rest of its share to later trials;
- a running trial counts all it may still use (its reservation) until it ends, so parallel workers
  never start more than the budget holds;
- a trial starts only while a whole epoch fits; it gets the epochs that remain, at most `epochs`.

Pure functions over Optuna's FrozenTrials and their user attributes; the workers take the study's
lock around reading the trials and reserving (components/tuner/study.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from optuna.trial import FrozenTrial, TrialState

# The user attributes a trial carries for the rule.
EPOCHS = "epochs"  # the epochs it was given
EPOCHS_RUN = "epochs_run"  # the epochs it finished (updated after each)
EXAMPLES = "examples"  # training examples per epoch


@dataclasses.dataclass(frozen=True)
class Budget:
    trials: int
    epochs: int
    examples: int

    def __post_init__(self) -> None:
        if self.trials < 1 or self.epochs < 1 or self.examples < 1:
            raise ValueError(f"a tuning budget needs trials, epochs and examples >= 1, got {self}")

    @property
    def total(self) -> int:
        """Training examples the study may use: trials x epochs x examples."""
        return self.trials * self.epochs * self.examples

    def to_dict(self) -> dict[str, int]:
        return {**dataclasses.asdict(self), "total": self.total}


def used(trial: FrozenTrial) -> int:
    """Training examples this trial has used, or (running) may still use."""
    attrs: dict[str, Any] = trial.user_attrs
    if EXAMPLES not in attrs:  # enqueued, not started: nothing reserved yet
        return 0
    epochs = attrs[EPOCHS] if trial.state == TrialState.RUNNING else attrs.get(EPOCHS_RUN, 0)
    return int(epochs) * int(attrs[EXAMPLES])


def spent(trials: Iterable[FrozenTrial]) -> int:
    return sum(used(t) for t in trials)


def epochs_for_next_trial(budget: Budget, trials: Iterable[FrozenTrial]) -> int:
    """The epochs a new trial may run now (0: the budget holds no further epoch)."""
    remaining = budget.total - spent(trials)
    return max(0, min(budget.epochs, remaining // budget.examples))


def reservation(epochs: int, examples: int) -> dict[str, int]:
    """The user attributes a trial starts with."""
    return {EPOCHS: epochs, EXAMPLES: examples, EPOCHS_RUN: 0}
