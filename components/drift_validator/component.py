"""DriftValidator: the new statistics against a baseline (drift) and train against test (skew).

TFDV's comparators on the label distribution (L-infinity) and on the pixel summary features
(Jensen-Shannon divergence). It never fails itself: it writes the drift/skew anomalies and a
self-contained HTML review of the statistics and of every anomaly, so they stay for review when
DataGate then stops the run.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.drift_validator import executor


class DriftValidatorSpec(ComponentSpec):
    PARAMETERS = {
        executor.BASELINE: ExecutionParameter(type=str, optional=True),
        executor.BASELINE_FROM_CHAMPION: ExecutionParameter(type=int, optional=True),
        executor.LABEL_LINF: ExecutionParameter(type=float),
        executor.PIXEL_JS: ExecutionParameter(type=float),
    }
    INPUTS = {
        executor.STATISTICS: ChannelParameter(type=standard_artifacts.ExampleStatistics),
        executor.SCHEMA: ChannelParameter(type=standard_artifacts.Schema),
        executor.ANOMALIES: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
        executor.EXAMPLES: ChannelParameter(type=standard_artifacts.Examples, optional=True),
        # The champion's training statistics (ChampionResolver through SameChampion): the baseline.
        executor.CHAMPION_STATISTICS: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
        # ImageValidator's results: shown in the review beside the statistics.
        executor.IMAGE_CHECKS: ChannelParameter(type=standard_artifacts.ExampleAnomalies, optional=True),
    }
    OUTPUTS = {executor.DRIFT_ANOMALIES: ChannelParameter(type=standard_artifacts.ExampleAnomalies)}


class DriftValidator(base_component.BaseComponent):
    SPEC_CLASS = DriftValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, statistics: types.BaseChannel, schema: types.BaseChannel,
                 anomalies: types.BaseChannel, baseline_statistics: str,
                 label_linf: float, pixel_js: float, baseline_from_champion: bool = False,
                 champion_statistics: types.BaseChannel | None = None,
                 examples: types.BaseChannel | None = None, image_checks: types.BaseChannel | None = None) -> None:
        """baseline_statistics: the pinned file ("" = no drift check). With baseline_from_champion,
        the champion's training statistics (`champion_statistics`) are used instead when it has
        them. `examples`: their first images per label go into the review. `image_checks`:
        ImageValidator's contamination and image drift results, also shown in the review."""
        super().__init__(spec=DriftValidatorSpec(
            statistics=statistics, schema=schema, anomalies=anomalies, examples=examples,
            baseline_statistics=baseline_statistics, label_linf=label_linf, pixel_js=pixel_js,
            baseline_from_champion=int(baseline_from_champion), champion_statistics=champion_statistics,
            image_checks=image_checks, drift_anomalies=types.Channel(type=standard_artifacts.ExampleAnomalies)))
