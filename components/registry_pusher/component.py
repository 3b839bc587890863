"""RegistryPusher: the blessed winner -> a new version in the model registry, alias `champion`."""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.candidates import spec_with_candidates
from components.registry_pusher import executor


class RegistryPusherSpec(ComponentSpec):
    PARAMETERS = {
        executor.REGISTRY_URI: ExecutionParameter(type=str),
        executor.MODEL_NAME: ExecutionParameter(type=str),
        # The PostgreSQL database whose advisory lock serializes alias writes on a tracking server.
        executor.LOCK_URI: ExecutionParameter(type=str, optional=True),
    }
    INPUTS = {
        executor.EVALUATION: ChannelParameter(type=standard_artifacts.ModelEvaluation),
        executor.BLESSING: ChannelParameter(type=standard_artifacts.ModelBlessing),
        # The statistics of the data the models were trained on, recorded on the version.
        executor.STATISTICS: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        # Their training images' statistics and fingerprints (ImageValidator's), recorded with the
        # version: later runs' image drift baseline and contamination check.
        executor.IMAGE_STATISTICS: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        # The champion state the run was judged against: the alias moves only if it still holds.
        executor.CHAMPION: ChannelParameter(type=standard_artifacts.Model),
    }
    OUTPUTS = {executor.PUSHED_MODEL: ChannelParameter(type=standard_artifacts.PushedModel)}


class RegistryPusher(base_component.BaseComponent):
    SPEC_CLASS = RegistryPusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, evaluation: types.BaseChannel, blessing: types.BaseChannel,
                 candidates: dict[str, types.BaseChannel], champion: types.BaseChannel, registry_uri: str,
                 registered_model_name: str, statistics: types.BaseChannel | None = None,
                 image_statistics: types.BaseChannel | None = None, registry_lock_uri: str = "") -> None:
        # The candidates are inputs so that lineage names the model that was pushed.
        spec_class = spec_with_candidates(RegistryPusherSpec, sorted(candidates))
        super().__init__(spec=spec_class(
            evaluation=evaluation, blessing=blessing, statistics=statistics, image_statistics=image_statistics,
            champion=champion,
            registry_uri=registry_uri, registry_lock_uri=registry_lock_uri, **candidates,
            registered_model_name=registered_model_name,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
