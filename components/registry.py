"""The model registry client both the evaluator and the pusher use (and the CLI's registry
commands): one registered model in an MLflow Model Registry, embedded SQLite or any tracking
server. It holds its own MlflowClient and never touches MLflow's process-wide tracking or
registry URI, so two registries in one process cannot mix.

There is one implementation and no interface class: MLflow's own client already abstracts the
store (SQLite, a server, Databricks), and nothing else is planned to stand behind this.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import random
import tempfile
import time
import urllib.error
import urllib.request

from components.names import RULE, is_safe_name
from trainers.model_format import MODEL_META_FILE, local_copy, read_bytes

CHAMPION_ALIAS = "champion"
# The exported model folder a version was registered from: one version per trained model.
SOURCE_MODEL_TAG = "source_model_uri"
# Where the statistics of the data the version was trained on live (the drift baseline).
STATISTICS_TAG = "statistics_uri"
# Tag holding the value of the decision rule's primary metric, compared when promoting.
PRIMARY_VALUE_TAG = "primary_value"
PYFUNC_CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry_pyfunc.py")
TRAINERS_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trainers")


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says which registry and why."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    tags: dict[str, str]
    aliases: tuple[str, ...]

    @property
    def primary_value(self) -> float | None:
        value = self.tags.get(PRIMARY_VALUE_TAG)
        return float(value) if value else None


def embedded_uri(registry_dir: str) -> str:
    """The embedded registry: an SQLite database in `registry_dir`, artifacts beside it."""
    return "sqlite:///" + os.path.abspath(os.path.join(registry_dir, "mlflow.db"))


def _requirements(framework: str) -> list[str]:
    import numpy

    if framework == "keras":
        import tensorflow

        return [f"tensorflow=={tensorflow.__version__}", f"numpy=={numpy.__version__}"]
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}"]


def _beats(candidate: ModelVersion, champion: ModelVersion) -> bool:
    # A champion without a recorded value predates this rule: the evaluator already judged it.
    if champion.primary_value is None or candidate.primary_value is None:
        return True
    return candidate.primary_value > champion.primary_value


def _local_file(path: str, folder: str) -> str:
    """`path`, or a copy of it in `folder` when it is on an object store."""
    if "://" not in path:
        return path
    os.makedirs(folder, exist_ok=True)
    local = os.path.join(folder, os.path.basename(path))
    with open(local, "wb") as f:
        f.write(read_bytes(path))
    return local


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fails fast on a server that does not answer (MLflow's client would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise RegistryError(f"MLflow tracking server {uri} answered /health with HTTP {response.status}")
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise RegistryError(f"MLflow tracking server {uri} is unreachable: {e}") from e


class MlflowRegistry:
    """One registered model in an MLflow Model Registry at `uri`."""

    def __init__(self, uri: str, model_name: str) -> None:
        # Stricter than MLflow (which refuses '/' and ':'): names also end up in paths and URIs.
        if not is_safe_name(model_name):
            raise RegistryError(f"invalid registered model name {model_name!r}: {RULE}")
        check_reachable(uri)
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.model_name = model_name
        self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    @property
    def client(self):
        """The MlflowClient of this registry's store (tracking and registry alike)."""
        return self._client

    def experiment_id(self, suffix: str = "-pushes") -> str:
        """The id of the experiment `<model name><suffix>`, created on first use: `-pushes` holds
        the registered versions' runs, `-bakeoff` the trainings and evaluations (components/tracking.py)."""
        from mlflow.exceptions import MlflowException

        name = f"{self.model_name}{suffix}"
        existing = self._client.get_experiment_by_name(name)
        if existing:
            return existing.experiment_id
        artifact_location = None
        if self.uri.startswith("sqlite:///"):  # embedded: artifacts beside the database file
            db_path = self.uri[len("sqlite:///"):]
            artifact_location = "file://" + os.path.join(os.path.dirname(os.path.abspath(db_path)), "artifacts")
        try:
            return self._client.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:  # a concurrent pusher created it first
            return self._client.get_experiment_by_name(name).experiment_id

    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(self.model_name)
        except MlflowException:
            try:
                self._client.create_registered_model(self.model_name)
            except MlflowException:  # a concurrent pusher created it first
                self._client.get_registered_model(self.model_name)

    def register(self, model_dir: str, framework: str, tags: dict[str, str], metrics: dict[str, float],
                 files: dict[str, str] | None = None, description: str = "") -> ModelVersion:
        """Logs the model as an MLflow pyfunc in a run, then registers it as a new version.

        Upload first, register second: a failed upload leaves a failed run and no version; a
        version whose registration fails half-way is deleted before the error is raised.
        """
        import mlflow.pyfunc
        import numpy as np
        from mlflow.entities import Metric
        from mlflow.models import infer_signature

        signature = infer_signature(np.zeros((1, 28, 28), dtype=np.uint8), np.zeros((1, 10), dtype=np.float32))
        run = self._client.create_run(self.experiment_id(), run_name=tags.get("pipeline_run_id"), tags=tags)
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            self._client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
            # MLflow uploads local files: what is on an object store is copied down first.
            with tempfile.TemporaryDirectory(prefix="pyfunc-") as tmp, local_copy(model_dir) as local_model:
                for name, path in (files or {}).items():
                    self._client.log_artifact(run_id, _local_file(path, os.path.join(tmp, name)), artifact_path=name)
                local = os.path.join(tmp, "model")
                mlflow.pyfunc.save_model(local, python_model=PYFUNC_CODE, artifacts={"model_dir": local_model},
                                         code_paths=[TRAINERS_PACKAGE], signature=signature,
                                         pip_requirements=_requirements(framework))
                self._client.log_artifacts(run_id, local, artifact_path="model")
        except BaseException:
            self._client.set_terminated(run_id, status="FAILED")
            raise
        self._client.set_terminated(run_id)
        self._ensure_registered_model()
        version = None
        try:
            version = self._client.create_model_version(self.model_name, f"{run.info.artifact_uri}/model",
                                                        run_id=run_id, tags={**tags, "mlflow_run_id": run_id},
                                                        description=description or None)
            return self._version(version.version)
        except Exception:
            if version is not None:
                self._client.delete_model_version(self.model_name, version.version)
            raise

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

    def promote_if_better(self, version: ModelVersion, baseline_version: str = "", settle_s: float = 2.0) -> bool:
        """Moves `champion` to `version`, which the evaluation blessed against `baseline_version`.

        If the alias has meanwhile moved to another version (a concurrent run), the recorded
        primary values decide instead. Pushers of concurrent runs may check and set between each
        other's steps, so each one keeps re-checking for `settle_s` after setting and puts the
        alias back when a worse version took it: the alias settles on the version the rule
        prefers. Returns whether `version` holds the alias.
        """
        deadline = time.monotonic() + settle_s
        while True:
            current = self.champion()
            if current is not None and current.version == version.version:
                if time.monotonic() > deadline:
                    return True
            elif current is None or current.version == baseline_version or _beats(version, current):
                self.promote(version.version)
            else:
                return False
            time.sleep(0.2 + random.random() * 0.3)

    def rollback(self, version: str, reason: str = "") -> ModelVersion:
        """Moves `champion` back to an existing `version`, recording it on the version."""
        from mlflow.exceptions import MlflowException

        try:
            target = self._version(str(version))
        except MlflowException as e:
            known = [v.version for v in self.versions()]
            raise RegistryError(f"{self.model_name} has no version {version!r} at {self.uri} "
                                f"(versions: {', '.join(known) or 'none'})") from e
        previous = self.champion()
        self.promote(target.version)
        self._client.set_model_version_tag(self.model_name, target.version, "rolled_back_from",
                                           previous.version if previous else "")
        self._client.set_model_version_tag(self.model_name, target.version, "rolled_back_at",
                                           time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        if reason:
            self._client.set_model_version_tag(self.model_name, target.version, "rollback_reason", reason)
        return self._version(target.version)

    def find_version(self, tag: str, value: str) -> ModelVersion | None:
        """The oldest version whose `tag` is `value` (e.g. the model a killed pusher had already registered)."""
        matches = [v for v in self.versions() if v.tags.get(tag) == value]
        return matches[0] if matches else None

    def versions(self) -> list[ModelVersion]:
        found = self._client.search_model_versions(f"name = '{self.model_name}'")
        return sorted((self._version(mv.version) for mv in found), key=lambda v: int(v.version))

    def champion_source(self) -> tuple[ModelVersion, str] | None:
        """The champion and where its registered pyfunc's files are (the version's download URI), or None.
        Resolved through this registry's own client: a `models:/` URI would be resolved against the
        process-wide registry URI, which in a fresh process is not this registry."""
        champion = self.champion()
        if champion is None:
            return None
        return champion, self._client.get_model_version_download_uri(self.model_name, champion.version)

    def download_champion(self, dst_dir: str) -> tuple[ModelVersion, str] | None:
        """The champion's exported model, copied to `dst_dir`: (version, model folder), or None."""
        found = self.champion_source()
        if found is None:
            return None
        import mlflow.artifacts

        champion, source = found
        local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=dst_dir, tracking_uri=self.uri)
        metas = sorted(glob.glob(os.path.join(local, "artifacts", "*", MODEL_META_FILE)))
        if not metas:
            raise FileNotFoundError(f"champion version {champion.version} of {self.model_name} at {self.uri} "
                                    f"holds no exported model ({MODEL_META_FILE} not found in {local})")
        return champion, os.path.dirname(metas[0])

    def champion_uri(self) -> str:
        return f"models:/{self.model_name}@{CHAMPION_ALIAS}"
