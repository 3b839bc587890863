"""MnistExampleGen: the four MNIST IDX files -> Examples with splits train, eval and test."""

from __future__ import annotations

import json
from typing import Sequence

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.mnist_example_gen import executor


class MnistExampleGenSpec(ComponentSpec):
    PARAMETERS = {
        executor.SOURCE: ExecutionParameter(type=str, optional=True),
        executor.CACHE_DIR: ExecutionParameter(type=str),
        executor.EVAL_RATIO: ExecutionParameter(type=float),
        executor.TRAIN_LIMIT: ExecutionParameter(type=int, optional=True),
        executor.TEST_LIMIT: ExecutionParameter(type=int, optional=True),
        executor.VERIFY_CHECKSUMS: ExecutionParameter(type=int, optional=True),
        executor.CLASS_NAMES: ExecutionParameter(type=str, optional=True),
    }
    INPUTS: dict = {}
    OUTPUTS = {"examples": ChannelParameter(type=standard_artifacts.Examples)}


class MnistExampleGen(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = MnistExampleGenSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, cache_dir: str, eval_ratio: float, source: str = "",
                 train_limit: int = 0, test_limit: int = 0, verify_checksums: bool = True,
                 class_names: Sequence[str] = tuple(executor.DEFAULT_CLASS_NAMES)) -> None:
        spec = MnistExampleGenSpec(
            source=source, cache_dir=cache_dir, eval_ratio=eval_ratio, train_limit=train_limit,
            test_limit=test_limit, verify_checksums=int(verify_checksums),
            class_names=json.dumps(list(class_names)),
            examples=types.Channel(type=standard_artifacts.Examples))
        super().__init__(spec=spec)
