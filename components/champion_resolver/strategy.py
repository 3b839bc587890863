"""SameChampion: the TFX Resolver strategy between ChampionResolver and its consumers.

ChampionResolver runs every run, so its artifacts are new every run, and TFX keys a consumer's
cache on its input artifacts' ids: fed directly, DriftValidator and BakeoffEvaluator would never
hit the cache. This strategy gets every artifact ChampionResolver ever emitted, takes the identity
of the newest (this run's resolution) and hands on the FIRST artifacts that carried that
identity: the same ids for as long as the champion stays the same (same version, same revision),
new ones as soon as it changes. Lineage still names the champion a run was judged against.

TFX's Kubeflow V2 compiler builds only its own strategies into a package, so the compiled
pipeline feeds ChampionResolver's artifacts to the consumers directly: on Kubeflow and Vertex AI
every run re-checks drift and re-evaluates against the champion it resolved.
"""

from __future__ import annotations

from typing import Any

from tfx.dsl.components.common import resolver

from components import champion

MODEL = "model"
STATISTICS = "statistics"


def first_with_identity(artifacts: list[Any], identity: str) -> Any:
    return min((a for a in artifacts if champion.identity(a) == identity), key=lambda a: a.id)


class SameChampion(resolver.ResolverStrategy):
    def resolve_artifacts(self, store, input_dict: dict[str, list[Any]]) -> dict[str, list[Any]] | None:
        models = input_dict.get(MODEL) or []
        if not models:
            return None  # ChampionResolver has not run: the consumers wait (it always runs first)
        newest = max(models, key=lambda a: a.id)
        identity = champion.identity(newest)
        statistics = [a for a in input_dict.get(STATISTICS) or [] if champion.identity(a) == identity]
        if not statistics:
            return None
        return {MODEL: [first_with_identity(models, identity)], STATISTICS: [first_with_identity(statistics, identity)]}
