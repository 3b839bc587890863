"""BakeoffEvaluator: N candidate models (and the registry's champion) on the same test examples."""

from __future__ import annotations

import dataclasses
import typing

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.bakeoff_evaluator import corruptions, executor, kfp_artifacts
from components.bakeoff_evaluator.rule import DecisionRule
from components.candidates import run_input, spec_with_candidates


class BakeoffEvaluatorSpec(ComponentSpec):
    """Base spec; each instance adds one Model input per candidate (components/candidates.py)."""

    PARAMETERS = {
        executor.SPLIT: ExecutionParameter(type=str, optional=True),
        executor.REGISTRY_URI: ExecutionParameter(type=str, optional=True),
        executor.MODEL_NAME: ExecutionParameter(type=str, optional=True),
        # The robustness suite's size: how many of the corruptions each test example is scored under.
        executor.CORRUPTIONS_PER_EXAMPLE: ExecutionParameter(type=int, optional=True),
        # The decision rule, one property per DecisionRule field, under the field's name.
        **{name: ExecutionParameter(type=kind) for name, kind in typing.get_type_hints(DecisionRule).items()},
    }
    INPUTS = {
        executor.EXAMPLES: ChannelParameter(type=standard_artifacts.Examples),
        # The registry's champion as the run resolved it (ChampionResolver through SameChampion).
        executor.CHAMPION: ChannelParameter(type=standard_artifacts.Model, optional=True),
    }
    OUTPUTS = {
        executor.EVALUATION: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        executor.BLESSING: ChannelParameter(type=standard_artifacts.ModelBlessing),
        executor.REPORT: ChannelParameter(type=kfp_artifacts.HTML),
        executor.SUMMARY: ChannelParameter(type=kfp_artifacts.Markdown),
        executor.METRICS: ChannelParameter(type=kfp_artifacts.Metrics),
        executor.CLASSIFICATION_METRICS: ChannelParameter(type=kfp_artifacts.ClassificationMetrics),
    }


class BakeoffEvaluator(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = BakeoffEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, candidates: dict[str, types.BaseChannel],
                 rule: DecisionRule, registry_uri: str = "", registered_model_name: str = "",
                 split: str = "test", corruptions_per_example: int = corruptions.DEFAULT_PER_EXAMPLE,
                 training_logs: dict[str, types.BaseChannel] | None = None,
                 champion: types.BaseChannel | None = None,
                 tuning: dict[str, types.BaseChannel] | None = None) -> None:
        """`training_logs`: each candidate's Trainer `model_run` (TensorBoard logs), by candidate name;
        with a registry (`registry_uri`: only for the bake-off's MLflow runs), they go into the
        candidate's MLflow run (components/tracking.py). `champion`: ChampionResolver's model, scored
        with the candidates (verified against its signed manifest first) when there is one.
        `tuning`: each framework's TunerResults (components/tuner), by framework, when the run tuned."""
        spec_class = spec_with_candidates(BakeoffEvaluatorSpec, sorted(candidates), minimum=2,
                                          with_runs=bool(training_logs))
        studies = {executor.tuning_input(framework): channel for framework, channel in (tuning or {}).items()}
        if studies:
            spec_class = type(spec_class.__name__, (spec_class,), {"INPUTS": {**spec_class.INPUTS, **{
                name: ChannelParameter(type=standard_artifacts.TunerResults, optional=True) for name in studies}}})
        logs = {run_input(name): channel for name, channel in (training_logs or {}).items()}
        outputs = {key: types.Channel(type=param.type) for key, param in BakeoffEvaluatorSpec.OUTPUTS.items()}
        super().__init__(spec=spec_class(
            examples=examples, champion=champion, split=split, registry_uri=registry_uri,
            corruptions_per_example=corruptions_per_example,
            registered_model_name=registered_model_name, **dataclasses.asdict(rule), **candidates, **logs,
            **studies, **outputs))
