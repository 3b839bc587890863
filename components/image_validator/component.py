"""ImageValidator: what the statistics of DriftValidator cannot see in the images themselves.

- Contamination: test images that are exact or near copies of this run's train/eval images, or of
  the champion's training images (from the fingerprints the registry keeps with each version; for
  a version without them the results say the check could not run, and why).
- Image drift: the centre-of-mass and bounding-box distributions (TFX's DistributionValidator with
  TFDV's comparators) and the mean image, against the champion's training images or, without
  them, the pinned full-MNIST image baseline.

It never fails on bad data itself: `image_checks` holds every count, measure and problem (DataGate
raises the problems, the data review shows them); `image_statistics` holds each split's image
statistics and fingerprints, the training split's becoming the registered version's baseline.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_beam_component, executor_spec
from tfx.types import standard_artifacts
from tfx.types.component_spec import ChannelParameter, ComponentSpec, ExecutionParameter

from components.image_validator import executor


class ImageValidatorSpec(ComponentSpec):
    PARAMETERS = {
        executor.BASELINE: ExecutionParameter(type=str, optional=True),
        executor.BASELINE_FROM_CHAMPION: ExecutionParameter(type=int, optional=True),
        executor.CENTRE_JS: ExecutionParameter(type=float),
        executor.BOX_LINF: ExecutionParameter(type=float),
        executor.MEAN_IMAGE: ExecutionParameter(type=float),
        executor.MAX_SHARE: ExecutionParameter(type=float),
        executor.SIMILARITY: ExecutionParameter(type=float),
        executor.HAMMING: ExecutionParameter(type=int),
    }
    INPUTS = {
        executor.EXAMPLES: ChannelParameter(type=standard_artifacts.Examples),
        # The champion's training statistics (ChampionResolver through SameChampion): its images/ baseline.
        executor.CHAMPION_STATISTICS: ChannelParameter(type=standard_artifacts.ExampleStatistics, optional=True),
    }
    OUTPUTS = {
        executor.IMAGE_STATISTICS: ChannelParameter(type=standard_artifacts.ExampleStatistics),
        executor.IMAGE_CHECKS: ChannelParameter(type=standard_artifacts.ExampleAnomalies),
    }


class ImageValidator(base_beam_component.BaseBeamComponent):
    SPEC_CLASS = ImageValidatorSpec
    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, *, image_baseline: str, centre_js: float, box_linf: float,
                 mean_image_excess: float, contamination_max_share: float, duplicate_similarity: float,
                 duplicate_hamming: int, baseline_from_champion: bool = True,
                 champion_statistics: types.BaseChannel | None = None) -> None:
        """image_baseline: the pinned image baseline folder ("" = no image drift check); the
        champion's replaces it when it has one and `baseline_from_champion`."""
        super().__init__(spec=ImageValidatorSpec(
            examples=examples, champion_statistics=champion_statistics, image_baseline=image_baseline,
            baseline_from_champion=int(baseline_from_champion), centre_js=centre_js, box_linf=box_linf,
            mean_image_excess=mean_image_excess, contamination_max_share=contamination_max_share,
            duplicate_similarity=duplicate_similarity, duplicate_hamming=duplicate_hamming,
            image_statistics=types.Channel(type=standard_artifacts.ExampleStatistics),
            image_checks=types.Channel(type=standard_artifacts.ExampleAnomalies)))
