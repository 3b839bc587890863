"""The bake-off's decision rule: how the winner is chosen and when it is blessed. Its field names
are the config's, the evaluator's execution properties', evaluation.json's and the report's."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainers.config import setting

PRIMARY_METRICS = ("accuracy", "macro_f1")
CHAMPION_POLICIES = ("significantly_better", "better_by", "not_significantly_worse")
SHIFT_ACTIONS = ("stop", "register")


@dataclasses.dataclass(frozen=True)
class DecisionRule:
    primary_metric: str = setting("accuracy", "what the bake-off ranks by (higher wins; ties: lower log loss, "
                                   "then the name)", PRIMARY_METRICS)
    min_metric: float = setting(0.98, "primary metric the winner needs to be blessed")
    # The default keeps the champion alias from moving on noise: reruns with other seeds are
    # statistically tied with the champion and leave it; a better architecture is promoted.
    champion_policy: str = setting("significantly_better", "against the registry's champion: significantly_better "
                                    "(the winner beats it and McNemar finds the difference significant at "
                                    "champion_alpha / number of challengers, Bonferroni, since the winner is the "
                                    "best of them), better_by (beat it by at least champion_min_delta) or "
                                    "not_significantly_worse (blessed unless McNemar finds it worse at "
                                    "champion_alpha)", CHAMPION_POLICIES)
    champion_min_delta: float = setting(0.0, "better_by and significantly_better: the margin over the champion's "
                                        "primary metric")
    champion_alpha: float = setting(0.05, "McNemar's significance level: for not_significantly_worse, and for "
                                    "saying a lead is a statistical tie (the winner's lead over the runner-up "
                                    "or the champion with p >= champion_alpha)")
    # Optional gates against the champion; a negative margin (the default, -1) turns a gate off.
    corruption_max_drop: float = setting(-1.0, "robustness gate: the winner's mean accuracy over the corruptions "
                                         "of the corrupted test copy may be at most this much below the "
                                         "champion's (e.g. 0.01); negative: off")
    slice_max_recall_drop: float = setting(-1.0, "slice gate: no digit's recall of the winner may be more "
                                           "than this below the champion's (e.g. 0.01; the offending digits "
                                           "are named); negative: off")

    # The champion shift alarm: the champion scores significantly less on this run's test split than
    # when it was promoted. The examples differ, so a one-sided two-sample test of proportions.
    shift_alarm_alpha: float = setting(0.01, "champion shift alarm: its significance level (one-sided two-sample "
                                       "z-test of the champion's accuracy now against the accuracy recorded when it "
                                       "was registered)")
    shift_alarm_min_drop: float = setting(0.02, "champion shift alarm: the smallest accuracy drop that counts "
                                          "(negative: the alarm is off)")
    shift_alarm_action: str = setting("stop", "what a fired alarm does: stop (the run fails with the evidence; "
                                      "nothing is registered) or register (the challenger is registered without "
                                      "moving the alias, for a person to promote)", SHIFT_ACTIONS)

    def __post_init__(self) -> None:
        if self.primary_metric not in PRIMARY_METRICS:
            raise ValueError(f"primary_metric must be accuracy or macro_f1, got {self.primary_metric!r}")
        if self.champion_policy not in CHAMPION_POLICIES:
            raise ValueError(f"champion_policy must be one of {', '.join(CHAMPION_POLICIES)}, "
                             f"got {self.champion_policy!r}")
        if not 0.0 <= self.min_metric <= 1.0:
            raise ValueError(f"min_metric must be in [0, 1], got {self.min_metric}")
        if not 0.0 < self.champion_alpha < 1.0:
            raise ValueError(f"champion_alpha must be in (0, 1), got {self.champion_alpha}")
        if self.shift_alarm_action not in SHIFT_ACTIONS:
            raise ValueError(f"shift_alarm_action must be stop or register, got {self.shift_alarm_action!r}")
        if not 0.0 < self.shift_alarm_alpha < 1.0:
            raise ValueError(f"shift_alarm_alpha must be in (0, 1), got {self.shift_alarm_alpha}")
        for name in ("corruption_max_drop", "slice_max_recall_drop", "shift_alarm_min_drop"):
            if getattr(self, name) > 1.0:
                raise ValueError(f"{name} must be negative (off) or in [0, 1], got {getattr(self, name)}")

    @property
    def corruption_gate(self) -> bool:
        return self.corruption_max_drop >= 0

    @property
    def slice_gate(self) -> bool:
        return self.slice_max_recall_drop >= 0

    @property
    def shift_alarm(self) -> bool:
        return self.shift_alarm_min_drop >= 0

    @classmethod
    def from_properties(cls, properties: dict[str, Any]) -> DecisionRule:
        """The rule from execution properties (or evaluation.json's `rule`) of the same names."""
        return cls(**{f.name: properties[f.name] for f in dataclasses.fields(cls) if f.name in properties})
