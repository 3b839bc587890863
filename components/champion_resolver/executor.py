"""ChampionResolver's executor: reads the champion alias once (failing closed on any registry
error), downloads the champion version's files and verifies them against its signed manifest,
and writes them, its training data's statistics and its identity as this run's artifacts."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from typing import Any

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components import champion, image_checks
from components.registry import STATISTICS_DIR, ChampionState, MlflowRegistry, VerifiedVersion
from trainers.model_format import copy_tree, write_bytes

REGISTRY_URI = "registry_uri"
MODEL_NAME = "registered_model_name"
MODEL = "model"
STATISTICS = "statistics"


def identity_properties(state: ChampionState) -> dict[str, Any]:
    """What both artifacts carry: the champion's identity, for lineage, caching and the pusher's check."""
    return {champion.PRESENT: state.present, champion.IDENTITY: state.identity,
            champion.REGISTRY_URI: state.registry_uri, champion.REGISTERED_MODEL: state.model_name,
            champion.VERSION: state.version.version if state.version else "", champion.REVISION: state.revision}


def recorded_scores(version_tags: dict[str, str]) -> dict[str, Any]:
    """What the version scored when it was registered, and on how many test examples."""
    found = {champion.CLASS_NAMES: version_tags.get("class_names", "")}
    if version_tags.get("accuracy"):
        found[champion.RECORDED_ACCURACY] = float(version_tags["accuracy"])
    if version_tags.get("data_examples"):
        found[champion.RECORDED_EXAMPLES] = int(version_tags["data_examples"])
    return found


def write_statistics(verified: VerifiedVersion, statistics: types.Artifact) -> list[str]:
    """The champion's training statistics (Split-*/FeatureStats.pb: the drift baseline) and its
    training images' statistics and fingerprints (`images/`: the image drift baseline and the
    contamination check's, components/image_checks.py) into the statistics artifact; the splits
    of its TFDV statistics (none for a version registered without them)."""
    splits = []
    folder = verified.baseline(STATISTICS_DIR)
    if folder:
        splits = sorted(entry[len("Split-"):] for entry in os.listdir(folder) if entry.startswith("Split-"))
        copy_tree(folder, statistics.uri)
    images = verified.baseline(image_checks.CHAMPION_IMAGES_DIR)
    if images:  # not a split of the artifact: a folder of its own
        copy_tree(images, image_checks.champion_images(statistics.uri))
    statistics.split_names = artifact_utils.encode_split_names(splits)
    return splits


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(output_dict[MODEL])
        statistics = artifact_utils.get_single_instance(output_dict[STATISTICS])
        registry = MlflowRegistry(exec_properties[REGISTRY_URI], exec_properties[MODEL_NAME])
        state = registry.champion_state()
        properties = identity_properties(state)
        record: dict[str, Any] = {**properties}
        if state.version is None:
            reason = f"no champion: {state.model_name} has no version with the alias champion in {state.registry_uri}"
            properties[champion.WHY_ABSENT] = reason
            statistics.split_names = artifact_utils.encode_split_names([])
            logging.info("ChampionResolver: %s", reason)
        else:
            with tempfile.TemporaryDirectory(prefix="champion-") as tmp:
                verified = registry.download_verified(state.version, tmp)
                copy_tree(verified.root, model.uri)
                splits = write_statistics(verified, statistics)
            properties.update(recorded_scores(state.version.tags))
            record.update(signed_files=len(verified.signed_files), statistics_splits=splits)
            logging.info("ChampionResolver: %s version %s (revision %s), %d signed files verified",
                         state.model_name, state.version.version, state.revision, len(verified.signed_files))
        for artifact in (model, statistics):
            champion.set_properties(artifact, properties)
        write_bytes(os.path.join(model.uri, champion.RECORD_FILE), json.dumps({**record, **properties}, indent=2,
                                                                              sort_keys=True).encode())
