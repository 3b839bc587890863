"""BakeoffEvaluator: scores the Keras and PyTorch models on the same test examples, decides."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.bakeoff_evaluator import executor


class BakeoffEvaluatorSpec(ComponentSpec):
    PARAMETERS = {
        executor.MIN_ACCURACY: ExecutionParameter(type=float),
        executor.SPLIT: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        executor.EXAMPLES: ChannelParameter(type=standard_artifacts.Examples),
        **{name: ChannelParameter(type=standard_artifacts.Model) for name in executor.CANDIDATES},
    }
    OUTPUTS = {
        executor.EVALUATION: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        executor.BLESSING: ChannelParameter(type=standard_artifacts.ModelBlessing),
    }


class BakeoffEvaluator(base_component.BaseComponent):
    SPEC_CLASS = BakeoffEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, keras_model: types.BaseChannel,
                 pytorch_model: types.BaseChannel, min_accuracy: float, split: str = "test") -> None:
        super().__init__(spec=BakeoffEvaluatorSpec(
            examples=examples, keras_model=keras_model, pytorch_model=pytorch_model,
            min_accuracy=min_accuracy, split=split,
            evaluation=types.Channel(type=standard_artifacts.ModelEvaluation),
            blessing=types.Channel(type=standard_artifacts.ModelBlessing)))
