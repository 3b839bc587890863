"""Artifact types the Kubeflow Pipelines v2 UI renders, declared as TFX artifact types.

KubeflowV2DagRunner writes a custom type's TYPE_NAME as the artifact's schema title, so these
arrive in KFP as system.HTML / system.Markdown (the UI shows the file at the artifact's URI) and
system.Metrics / system.ClassificationMetrics (the UI reads the artifact's metadata, which the
TFX launcher fills from custom properties). HTML and Markdown are ValueArtifacts so that their
URI is a file, locally too.
"""

from __future__ import annotations

from tfx.types import artifact, value_artifact


class _TextArtifact(value_artifact.ValueArtifact):
    def encode(self, value: str) -> bytes:
        return value.encode("utf-8")

    def decode(self, serialized_value: bytes) -> str:
        return serialized_value.decode("utf-8")


class HTML(_TextArtifact):
    TYPE_NAME = "system.HTML"


class Markdown(_TextArtifact):
    TYPE_NAME = "system.Markdown"


class Metrics(artifact.Artifact):
    TYPE_NAME = "system.Metrics"


class ClassificationMetrics(artifact.Artifact):
    TYPE_NAME = "system.ClassificationMetrics"
