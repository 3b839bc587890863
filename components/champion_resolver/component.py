"""ChampionResolver: the registry's champion as an input of the run, read once at its head.

The one stage that reads the champion alias (the pusher, which writes it, checks it again). It is
never taken from the cache (pipelines/local_runner.py and the compile turn caching off for it):
it emits, every run, the champion's verified model, its training data's statistics and its
identity, or an explicit "no champion". Its consumers reach it through SameChampion
(strategy.py), which hands them the first artifacts that carried the same identity, so an
unchanged champion keeps their cache and a changed one (a new version, a rollback, a reinstate)
means a new drift check and a new evaluation.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.champion_resolver import executor


class ChampionResolverSpec(ComponentSpec):
    PARAMETERS = {
        executor.REGISTRY_URI: ExecutionParameter(type=str),
        executor.MODEL_NAME: ExecutionParameter(type=str),
    }
    INPUTS: dict = {}
    OUTPUTS = {
        executor.MODEL: ChannelParameter(type=standard_artifacts.Model),
        executor.STATISTICS: ChannelParameter(type=standard_artifacts.ExampleStatistics),
    }


class ChampionResolver(base_component.BaseComponent):
    SPEC_CLASS = ChampionResolverSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, registry_uri: str, registered_model_name: str) -> None:
        super().__init__(spec=ChampionResolverSpec(
            registry_uri=registry_uri, registered_model_name=registered_model_name,
            model=types.Channel(type=standard_artifacts.Model),
            statistics=types.Channel(type=standard_artifacts.ExampleStatistics)))
