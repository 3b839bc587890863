"""The bake-off's decision rule: how the winner is chosen and when it is blessed. Its field names
are the config's, the evaluator's execution properties', evaluation.json's and the report's."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainers.config import setting

PRIMARY_METRICS = ("accuracy", "macro_f1")
CHAMPION_POLICIES = ("better_by", "not_significantly_worse")


@dataclasses.dataclass(frozen=True)
class DecisionRule:
    primary_metric: str = setting("accuracy", "what the bake-off ranks by (higher wins; ties: lower log loss, "
                                   "then the name)", PRIMARY_METRICS)
    min_metric: float = setting(0.98, "primary metric the winner needs to be blessed")
    champion_policy: str = setting("better_by", "against the registry's champion: better_by (beat it by at "
                                    "least champion_min_delta) or not_significantly_worse (blessed unless "
                                    "McNemar finds it worse at champion_alpha)", CHAMPION_POLICIES)
    champion_min_delta: float = setting(0.0, "better_by: the margin over the champion's primary metric")
    champion_alpha: float = setting(0.05, "not_significantly_worse: McNemar's significance level")

    def __post_init__(self) -> None:
        if self.primary_metric not in PRIMARY_METRICS:
            raise ValueError(f"primary_metric must be accuracy or macro_f1, got {self.primary_metric!r}")
        if self.champion_policy not in CHAMPION_POLICIES:
            raise ValueError(f"champion_policy must be better_by or not_significantly_worse, "
                             f"got {self.champion_policy!r}")
        if not 0.0 <= self.min_metric <= 1.0:
            raise ValueError(f"min_metric must be in [0, 1], got {self.min_metric}")
        if not 0.0 < self.champion_alpha < 1.0:
            raise ValueError(f"champion_alpha must be in (0, 1), got {self.champion_alpha}")

    @classmethod
    def from_properties(cls, properties: dict[str, Any]) -> DecisionRule:
        """The rule from execution properties (or evaluation.json's `rule`) of the same names."""
        return cls(**{f.name: properties[f.name] for f in dataclasses.fields(cls) if f.name in properties})
