"""What ChampionResolver's artifacts say of the registry's champion, for every stage that reads
them (DriftValidator, BakeoffEvaluator, RegistryPusher), named once.

The `model` artifact holds the champion version's signed files as the registry had them
(`signed/`, `manifest.sig`: components/registry.py) and, as custom properties, its identity:
present or not, the registered model, the version, the champion's revision. "No champion" is an
artifact too (present = 0), so lineage records that a run was judged against no champion. The
`statistics` artifact holds the statistics of the data the champion was trained on (the drift
baseline; no splits when there is none) and the compact hashes of its training images.
"""

from __future__ import annotations

import json
import os
from typing import Any

from tfx import types

from trainers import loader, manifest
from trainers.model_format import EXPORT_IN_SIGNED, SIGNED_DIR, local_copy

PRESENT = "present"
IDENTITY = "champion_identity"
REGISTRY_URI = "registry_uri"
REGISTERED_MODEL = "registered_model"
VERSION = "registered_version"
REVISION = "champion_revision"
CLASS_NAMES = "class_names"
# What the champion scored when it was registered (the shift alarm of [gates] compares with it).
RECORDED_ACCURACY = "recorded_accuracy"
RECORDED_EXAMPLES = "recorded_examples"
WHY_ABSENT = "reason"
RECORD_FILE = "champion.json"


def is_present(artifact: types.Artifact | None) -> bool:
    return artifact is not None and bool(artifact.get_int_custom_property(PRESENT))


def identity(artifact: types.Artifact) -> str:
    return artifact.get_string_custom_property(IDENTITY)


def version(artifact: types.Artifact) -> str:
    return artifact.get_string_custom_property(VERSION)


def describe(artifact: types.Artifact) -> str:
    """The champion in words: "version 3 of mnist-digits" or why there is none."""
    if is_present(artifact):
        return f"version {version(artifact)} of {artifact.get_string_custom_property(REGISTERED_MODEL)}"
    return artifact.get_string_custom_property(WHY_ABSENT) or "no champion"


def class_names(artifact: types.Artifact) -> list[str] | None:
    recorded = artifact.get_string_custom_property(CLASS_NAMES)
    return json.loads(recorded) if recorded else None


def recorded_scores(artifact: types.Artifact | None) -> dict[str, Any] | None:
    """What the champion scored when it was registered: {"accuracy", "examples"}, or None."""
    if not is_present(artifact) or RECORDED_ACCURACY not in artifact.mlmd_artifact.custom_properties:
        return None
    return {"accuracy": artifact.get_float_custom_property(RECORDED_ACCURACY),
            "examples": artifact.get_int_custom_property(RECORDED_EXAMPLES)}


def set_properties(artifact: types.Artifact, properties: dict[str, Any]) -> None:
    for key, value in properties.items():
        if isinstance(value, bool | int):
            artifact.set_int_custom_property(key, int(value))
        elif isinstance(value, float):
            artifact.set_float_custom_property(key, value)
        else:
            artifact.set_string_custom_property(key, str(value))


def exported_model_dir(model_uri: str) -> str:
    """The exported model (what its trainer wrote) inside the champion's signed files."""
    return os.path.join(model_uri, SIGNED_DIR, EXPORT_IN_SIGNED)


def load_verified(model_uri: str, what: str, verify_key: bytes | str | None = None) -> tuple[loader.Predictor, dict]:
    """The champion's model as a predict function, loaded from the files that were just checked
    against its signed manifest (copied to local disk first when `model_uri` is remote: the check
    and the load read the same bytes)."""
    key = verify_key or manifest.verify_key_from_environment()
    if not key:
        raise manifest.ManifestError(f"{what}: no public key to verify it with: set {manifest.VERIFY_KEY_VARIABLE} "
                                     f"or {manifest.VERIFY_KEY_FILE_VARIABLE}")
    with local_copy(model_uri) as local:
        manifest.verify(os.path.join(local, SIGNED_DIR), key, what)
        return loader.load_predictor(exported_model_dir(local))
