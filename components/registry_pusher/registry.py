"""The project's model registry: a small interface, with MLflow's Model Registry behind it.

The pipeline talks only to `ModelRegistry`; MLflow is one implementation (embedded SQLite by
default, any tracking server by URI), so a Vertex AI or Kubeflow registry can be added later.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Protocol

CHAMPION_ALIAS = "champion"
PYFUNC_CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "pyfunc_model.py")
TRAINERS_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "trainers")


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    tags: dict[str, str]
    aliases: tuple[str, ...]


class ModelRegistry(Protocol):
    def register(self, model_dir: str, framework: str, tags: dict[str, str],
                 metrics: dict[str, float]) -> ModelVersion: ...

    def champion(self) -> ModelVersion | None: ...

    def promote(self, version: str) -> None: ...

    def versions(self) -> list[ModelVersion]: ...


def _requirements(framework: str) -> list[str]:
    import numpy

    if framework == "keras":
        import tensorflow

        return [f"tensorflow=={tensorflow.__version__}", f"numpy=={numpy.__version__}"]
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}"]


class MlflowRegistry:
    """One registered model in an MLflow Model Registry at `uri`."""

    def __init__(self, uri: str, model_name: str) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.model_name = model_name
        self._mlflow = mlflow
        self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    @staticmethod
    def default_uri(root: str) -> str:
        return "sqlite:///" + os.path.abspath(os.path.join(root, "mlflow.db"))

    def _experiment_id(self) -> str:
        name = f"{self.model_name}-pushes"
        existing = self._client.get_experiment_by_name(name)
        if existing:
            return existing.experiment_id
        artifact_location = None
        if self.uri.startswith("sqlite:///"):  # embedded: artifacts beside the database file
            db_path = self.uri[len("sqlite:///"):]
            artifact_location = "file://" + os.path.join(os.path.dirname(os.path.abspath(db_path)), "artifacts")
        return self._client.create_experiment(name, artifact_location=artifact_location)

    def register(self, model_dir: str, framework: str, tags: dict[str, str],
                 metrics: dict[str, float]) -> ModelVersion:
        """Logs the model as an MLflow pyfunc in a run and registers it as a new version."""
        import numpy as np
        from mlflow.models import infer_signature

        mlflow = self._mlflow
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        sample = np.zeros((1, 28, 28), dtype=np.uint8)
        signature = infer_signature(sample, np.zeros((1, 10), dtype=np.float32))
        with mlflow.start_run(experiment_id=self._experiment_id(),
                              run_name=tags.get("pipeline_run_id")) as run:
            mlflow.set_tags(tags)
            mlflow.log_metrics(metrics)
            info = mlflow.pyfunc.log_model(
                name="model", python_model=PYFUNC_CODE, artifacts={"model_dir": model_dir},
                code_paths=[TRAINERS_PACKAGE], signature=signature,
                pip_requirements=_requirements(framework))
        mv = mlflow.register_model(info.model_uri, self.model_name,
                                   tags={**tags, "mlflow_run_id": run.info.run_id})
        return self._version(mv.version)

    def _version(self, version: str) -> ModelVersion:
        mv = self._client.get_model_version(self.model_name, version)
        return ModelVersion(self.model_name, str(mv.version), dict(mv.tags), tuple(mv.aliases))

    def champion(self) -> ModelVersion | None:
        from mlflow.exceptions import MlflowException

        try:
            mv = self._client.get_model_version_by_alias(self.model_name, CHAMPION_ALIAS)
        except MlflowException:
            return None
        return self._version(mv.version)

    def promote(self, version: str) -> None:
        self._client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, version)

    def versions(self) -> list[ModelVersion]:
        found = self._client.search_model_versions(f"name = '{self.model_name}'")
        return sorted((self._version(mv.version) for mv in found), key=lambda v: int(v.version))

    def champion_uri(self) -> str:
        return f"models:/{self.model_name}@{CHAMPION_ALIAS}"


def flatten_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """Every candidate's headline metrics as flat MLflow metric names."""
    out = {}
    for name, c in evaluation["candidates"].items():
        m = c["metrics"]
        for key in ("accuracy", "log_loss", "expected_calibration_error"):
            out[f"{name}.{key}"] = float(m[key])
    for t in evaluation["comparisons"]:
        out[f"mcnemar_p.{t['first']}.vs.{t['second']}"] = float(t["p_value"])
    return out
