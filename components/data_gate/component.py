"""DataGate: stops the pipeline before training when the data has anomalies, drift or skew, or
ImageValidator found contaminated test images or drifted images."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec

from components.data_gate import executor


class DataGateSpec(ComponentSpec):
    PARAMETERS: dict = {}
    INPUTS = {
        executor.ANOMALIES: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        executor.DRIFT_ANOMALIES: ChannelParameter(type=standard_artifacts.ExampleAnomalies, optional=True),
        executor.IMAGE_CHECKS: ChannelParameter(type=standard_artifacts.ExampleAnomalies, optional=True),
    }
    OUTPUTS: dict = {}  # the trainers depend on the gate itself (pipelines/pipeline.py)


class DataGate(base_component.BaseComponent):
    SPEC_CLASS = DataGateSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, anomalies: types.BaseChannel, drift_anomalies: types.BaseChannel | None = None,
                 image_checks: types.BaseChannel | None = None) -> None:
        super().__init__(spec=DataGateSpec(anomalies=anomalies, drift_anomalies=drift_anomalies,
                                           image_checks=image_checks))
