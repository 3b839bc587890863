"""The pipeline's one typed configuration: defaults here, then a YAML file, then flags.

Each setting is declared once, with its help text: the pipeline's own fields here, the trainers'
in `trainers.config.TrainConfig` (the `train` section) and the decision rule's in
`components.bakeoff_evaluator.rule.DecisionRule` (the `rule` section). A YAML file and the
command line name every setting by its field name, sections flattened (`epochs`, `min_metric`);
the flags are generated from these fields (pipelines/cli.py).

Nothing here reads the environment, git or any global: the command line (the edge) does, and
passes what it found in as settings.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml

from components.bakeoff_evaluator.rule import DecisionRule
from components.registry import embedded_uri
from pipelines import validation
from trainers.config import TrainConfig, setting

KfpTarget = Literal["kubeflow", "vertex"]
KfpAccelerator = Literal["none", "gpu", "tpu"]
BeamRunningMode = Literal["in_memory", "multi_threading", "multi_processing"]
BeamRunner = Literal["direct", "dataflow", "flink"]
TunePruner = Literal["median", "hyperband", "none"]
REPO_ROOT = Path(__file__).resolve().parent.parent
SECTIONS = {"train": TrainConfig, "rule": DecisionRule}


@dataclasses.dataclass
class PipelineConfig:
    pipeline_name: str = setting("mnist-bakeoff", "the pipeline's name (ML Metadata, KFP)")
    output_root: str = setting(str(REPO_ROOT / "runs"), "local runs: pipeline root, metadata store "
                                "(metadata.sqlite) and the embedded registry go here")
    artifact_root: str = setting("", "local runs: every artifact on an object store instead, s3://BUCKET/PREFIX "
                                  "(endpoint and keys from the AWS_* environment); empty: under output_root")

    # --- data ---
    source: str = setting("", "where the four IDX files come from: a folder or a gs://, s3://, http(s):// "
                           "prefix; empty: the local cache, then the canonical mirrors (env MNIST_SOURCE)")
    cache_dir: str = setting(str(Path.home() / ".cache" / "mnist-pipeline" / "mnist"),
                              "local cache of verified MNIST files")
    eval_ratio: float = setting(0.1, "share of the training file held out as the eval split")
    train_limit: int = setting(0, "use only the first N training-file records (0: all; smoke runs, tests)")
    test_limit: int = setting(0, "use only the first N test-file records (0: all)")
    schema_path: str = setting(str(REPO_ROOT / "schema" / "schema.pbtxt"), "the curated schema")
    verify_checksums: bool = setting(True, "false: the explicit, logged opt-out of checksum checks for "
                                      "your own IDX files without a SHA256SUMS manifest")
    class_names: tuple[str, ...] = setting(tuple(str(d) for d in range(10)),
                                            "names of the labels, label i = class_names[i] (2 to 10)")
    baseline_statistics: str = setting("", "pinned drift baseline: a statistics file or StatisticsGen folder; "
                                        "empty: schema/baseline_statistics.pbtxt; none: no drift check")
    baseline_from_champion: bool = setting(True, "use the statistics the registry's champion was trained on "
                                            "as the drift baseline when it has them")
    # One digit missing moves the label distribution by >= 0.09; a 1,000-example split drifts ~0.015 by chance.
    drift_label_linf: float = setting(0.06, "drift and skew threshold: L-infinity distance between label "
                                       "distributions")
    drift_pixel_js: float = setting(0.1, "drift and skew threshold: Jensen-Shannon divergence of pixel_mean "
                                     "and ink_fraction")
    # --- the image checks (ImageValidator): thresholds measured on real MNIST in bench/README.md, "Gates" ---
    image_baseline: str = setting("", "pinned image drift baseline, used when the champion has none: a folder with "
                                  "Split-train/FeatureStats.pbtxt and image_moments.json (or their binary forms "
                                  "FeatureStats.pb and image_moments.npz); empty: image_baseline beside schema_path "
                                  "(schema/image_baseline); none: no image drift check")
    # Real MNIST (re-splits, subsets of 200-2,500 images, the canonical test split): at most 0.004; shifted 1 px: 1.0.
    image_centre_js: float = setting(0.1, "image drift threshold: Jensen-Shannon divergence of the digits' centre of "
                                     "mass (x and y) from the baseline's")
    # Real MNIST as above: at most 0.083; scaled by 10 %: 0.88 or more, rotated by 10 degrees: 0.46 or more.
    image_box_linf: float = setting(0.15, "image drift threshold: L-infinity distance of the digits' bounding-box "
                                    "height and width distributions from the baseline's")
    # Real MNIST as above: at most 0.106 (1,000 test images); moved by 2 pixels: 0.35 or more.
    image_mean_excess: float = setting(0.2, "image drift threshold: the mean image's difference from the baseline's "
                                       "beyond what sampling explains, as a share of the baseline's ink")
    # Real MNIST: 0 of its 10,000 test images are copies of a training image under the settings below.
    contamination_max_share: float = setting(0.005, "largest share of test images that may be exact or near copies "
                                             "of training images (this run's train and eval, or the champion's) "
                                             "before the data gate stops the run")
    duplicate_similarity: float = setting(0.997, "a candidate pair is a near duplicate when the cosine similarity of "
                                          "the two images' 14x14 thumbnails is at least this")
    duplicate_hamming: int = setting(1, "near-duplicate candidates: test and training images whose perceptual hashes "
                                     "are at most this many bits apart (0-2; each test image is looked up under "
                                     "9 keys with 0, 58 with 1, 1,234 with 2)")

    # --- the trainers and the decision rule: sections, each declared by its consumer ---
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    seeds: tuple[int, ...] = setting((), "train each framework once per seed (e.g. 42 1 2): every model is "
                                     "scored in the one evaluation, the frameworks are compared across seeds and "
                                     "the best single model of the leading framework goes to the registry; "
                                     "empty: one trainer per framework, with seed")
    rule: DecisionRule = dataclasses.field(default_factory=DecisionRule)

    # --- tuning each framework before its final training (components/tuner; off with tune_trials 0) ---
    tune_trials: int = setting(0, "tune both frameworks first, each with the same budget: this many trials' worth "
                               "of training examples (tune_trials x tune_epochs x tune_examples, counted over every "
                               "trial and worker of its study, a pruned trial counting what it ran), searched by "
                               "Optuna (TPE) over one space for both; each Trainer then trains with its study's "
                               "best values; 0: no tuning")
    tune_epochs: int = setting(1, "tuning: a trial's epochs (its eval accuracy is reported to the pruner after each)")
    tune_examples: int = setting(20000, "tuning: a trial trains on the first N records of the train split "
                                 "(0: all), and is scored on the whole eval split")
    tune_workers: int = setting(1, "tuning: parallel workers of each framework's study, sharing its storage: worker "
                                "processes of the tuner step in local runs, parallel tuner tasks in the compiled "
                                "package")
    tune_pruner: TunePruner = setting("median", "tuning: median (stop a trial whose eval accuracy after an epoch is "
                                      "below the median of the finished trials'), hyperband, or none")
    tune_storage_uri: str = setting("", "tuning, local runs: the studies' Optuna storage, postgresql://USER@HOST:"
                                    "PORT/DB (a database of its own, never the registry's; password from PGPASSWORD) "
                                    "or sqlite:////PATH; empty: SQLite under output_root/tuning")
    kfp_tune_storage_uri: str = setting("postgresql://optuna@mlflow-postgres.mlflow.svc.cluster.local:5432/optuna",
                                        "tuning, compiled package: the studies' Optuna storage, a database of its "
                                        "own on the registry's PostgreSQL server (CREATE DATABASE optuna)")
    kfp_tune_storage_secret: str = setting("mnist-tuning-storage", "kubeflow target, tuning: Kubernetes secret with "
                                           "the PGPASSWORD of kfp_tune_storage_uri, given to the tuner tasks only")

    corruptions_per_example: int = setting(1, "the evaluator's corrupted test copy: how many of the 6 corruptions "
                                           "each test example is scored under (0: none; 6: all, about 4x the "
                                           "evaluator's time)")

    # --- the registry ---
    registry_uri: str = setting("", "MLflow tracking URI of the registry; empty: SQLite under output_root "
                                 "(env MLFLOW_TRACKING_URI)")
    registered_model_name: str = setting("mnist-digits", "the registered model")
    registry_lock_uri: str = setting("", "alias writes on a tracking server: the PostgreSQL database of its backend "
                                     "store (postgresql://USER@HOST:PORT/DB, password from PGPASSWORD), whose "
                                     "advisory lock lets one writer at a time read, compare and move the champion "
                                     "alias; empty: a file lock beside the embedded registry's mlflow.db (a "
                                     "postgresql:// registry locks its own database); none: no lock, concurrent "
                                     "runs may race for the alias")

    # --- Kubeflow / Vertex AI compile ---
    image: str = setting("ghcr.io/mnist-bakeoff/mnist-tfx:0.1.0", "container image of the compiled pipeline")
    kfp_pipeline_root: str = setting("gs://YOUR-BUCKET/mnist-bakeoff", "pipeline root on the cluster")
    kfp_registry_uri: str = setting("http://mlflow.mlflow.svc.cluster.local:5000",
                                     "MLflow tracking URI the cluster's tasks use")
    kfp_registry_lock_uri: str = setting("postgresql://mlflow@mlflow-postgres.mlflow.svc.cluster.local:5432/mlflow",
                                         "the cluster's registry_lock_uri: the tracking server's PostgreSQL "
                                         "(infra/mlflow; its password comes from kfp_model_signing_secret as "
                                         "PGPASSWORD)")
    kfp_model_signing_secret: str = setting("mnist-model-signing", "kubeflow target: Kubernetes secret only the "
                                            "pusher's task gets, with MNIST_MODEL_SIGNING_KEY (the private key every "
                                            "registered version is signed with, PEM) and PGPASSWORD (the alias "
                                            "lock's database)")
    kfp_model_verify_secret: str = setting("mnist-model-verify", "kubeflow target: Kubernetes secret with "
                                           "MNIST_MODEL_VERIFY_KEY (the public key, PEM) for the tasks that load a "
                                           "registered version (ChampionResolver, BakeoffEvaluator)")
    kfp_target: KfpTarget = setting("kubeflow", "kubeflow (open-source KFP: node selectors and tolerations in "
                                     "the Kubernetes platform section) or vertex (Vertex AI Pipelines)")
    kfp_accelerator: KfpAccelerator = setting("gpu", "each trainer's accelerator on the cluster")
    kfp_accelerator_count: int = setting(1, "accelerators per trainer")
    kfp_accelerator_type: str = setting("nvidia-l4", "the accelerator as GKE labels its nodes (nvidia-l4, "
                                         "nvidia-tesla-t4, tpu-v5-lite-podslice, ...)")
    kfp_tpu_topology: str = setting("2x2", "cloud.google.com/gke-tpu-topology of the TPU slice")
    kfp_node_selector: dict[str, str] = setting({}, "extra trainer node labels (kubeflow target; YAML only)")
    kfp_tolerations: list[dict[str, Any]] = setting([], "extra trainer tolerations (kubeflow target; YAML only)")
    kfp_object_store_secret: str = setting("", "Kubernetes secret each task gets as environment (kubeflow target): "
                                            "the object store's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
                                            "AWS_ENDPOINT_URL, AWS_REGION, for an s3:// or minio:// pipeline root")
    kfp_cpu_request: float = setting(0.0, "trainer CPU request on the cluster, cores (0: unset)")
    kfp_cpu_limit: float = setting(0.0, "trainer CPU limit, cores (0: unset)")
    kfp_memory_request_gb: float = setting(0.0, "trainer memory request, GB as KFP counts it (0: unset)")
    kfp_memory_limit_gb: float = setting(0.0, "trainer memory limit, GB (0: unset)")
    kfp_trainer_workers: int = setting(1, "data-parallel replicas of each trainer on the cluster: 1, the trainer runs "
                                       "in its pipeline step's container; N > 1, the step launches a multi-worker "
                                       "job of N replicas (vertex: a Vertex AI CustomJob through TFX's Vertex "
                                       "training extension; kubeflow: a Kubeflow Trainer v2 TrainJob for PyTorch, a "
                                       "TFJob of the v1 training operator for Keras), each with the accelerator "
                                       "above; the training settings are then compiled in, not the trainer_config "
                                       "run parameter")
    kfp_training_job_namespace: str = setting("", "kubeflow target, kfp_trainer_workers > 1: namespace of the "
                                              "trainers' TrainJob/TFJob (empty: the pipeline pod's own)")
    kfp_training_runtime: str = setting("torch-distributed", "kubeflow target, kfp_trainer_workers > 1: the Kubeflow "
                                        "Trainer v2 ClusterTrainingRuntime of the PyTorch trainer's TrainJob (a torch "
                                        "runtime; Keras runs as a TFJob of the v1 training operator: Trainer v2 has "
                                        "no TensorFlow runtime)")
    kfp_training_job_service_account: str = setting("", "kubeflow target, kfp_trainer_workers > 1: service account "
                                                    "of the job's pods, which read and write the pipeline root "
                                                    "(e.g. the pipeline's own, default-editor; empty: the "
                                                    "namespace's default)")
    vertex_machine_type: str = setting("g2-standard-8", "vertex target, kfp_trainer_workers > 1: machine type of "
                                       "every replica; it must carry the accelerator (L4: g2-*, A100: a2-*, "
                                       "H100: a3-*, T4/V100/P100/P4: n1-*)")
    gcp_project: str = setting("", "Google Cloud project of the Vertex AI training jobs and Dataflow jobs")
    gcp_region: str = setting("", "Google Cloud region of the Vertex AI training jobs and Dataflow jobs "
                              "(e.g. europe-west4)")

    # --- serving the champion with KServe (python -m pipelines kserve; the optional last step) ---
    kserve_deploy: bool = setting(False, "Kubeflow target: a last step applies the champion's KServe "
                                  "InferenceService when the run moved the champion alias")
    kserve_namespace: str = setting("", "namespace of the InferenceService (empty: the pipeline pod's own)")
    kserve_service_account: str = setting("mlflow-models-reader", "the service account whose secret reads the "
                                          "registry's bucket (KServe's storage initializer)")
    kserve_artifacts_destination: str = setting("s3://mlflow/artifacts", "the bucket behind the MLflow server's "
                                                "proxied artifacts (its --artifacts-destination)")
    kserve_canary_traffic_percent: int = setting(-1, "share of traffic a new champion gets at first, the "
                                                 "previous one keeping the rest; negative: all at once")

    # --- Beam on the cluster (the package's Beam steps; local runs always use the DirectRunner) ---
    beam_runner: BeamRunner = setting("direct", "runner of the compiled package's Beam steps: direct (in the "
                                      "step's own container), dataflow (Google Cloud Dataflow) or flink (a Flink "
                                      "cluster through Beam's portable runner); the image is the workers' SDK "
                                      "container (build it with infra/build_beam_sdk_image.sh); local runs "
                                      "always use the DirectRunner")
    dataflow_temp_location: str = setting("", "beam_runner dataflow: gs:// folder for Dataflow's temporary and "
                                          "staging files")
    flink_job_endpoint: str = setting("", "beam_runner flink: host:port of the Beam Flink job server")
    beam_max_workers: int = setting(0, "beam_runner dataflow: most workers (--max_num_workers); flink: "
                                    "parallelism; 0: the runner's default")

    # --- Beam's direct runner (local runs, and the package's Beam pods with beam_runner direct) ---
    # in_memory: measured faster than multi_processing for MNIST on 2 cores (bench/README.md).
    beam_direct_running_mode: BeamRunningMode = setting("in_memory", "Beam DirectRunner mode, locally and in the "
                                                        "package's Beam pods (beam_runner direct)")
    beam_direct_workers: int = setting(0, "Beam DirectRunner workers (0: one per core, StatisticsGen "
                                       "one; a package with multi_processing must name them: a pod sees "
                                       "its node's cores)")

    def __post_init__(self) -> None:
        if not 0.0 < self.eval_ratio < 1.0:
            raise ValueError(f"eval_ratio must be in (0, 1), got {self.eval_ratio}")
        if not 2 <= len(self.class_names) <= 10:
            raise ValueError(f"class_names needs 2 to 10 names (label i is class_names[i]), "
                             f"got {len(self.class_names)}")
        self.class_names = tuple(str(c) for c in self.class_names)
        if not (0.0 < self.drift_label_linf <= 1.0 and 0.0 < self.drift_pixel_js <= 1.0):
            raise ValueError("drift_label_linf and drift_pixel_js must be in (0, 1]")
        if not (0.0 < self.image_centre_js <= 1.0 and 0.0 < self.image_box_linf <= 1.0 and self.image_mean_excess > 0):
            raise ValueError("image_centre_js and image_box_linf must be in (0, 1], image_mean_excess above 0")
        if not (0.0 <= self.contamination_max_share < 1.0 and 0.0 < self.duplicate_similarity <= 1.0
                and 0 <= self.duplicate_hamming <= 2):
            raise ValueError("contamination_max_share must be in [0, 1), duplicate_similarity in (0, 1], "
                             f"duplicate_hamming 0-2; got {self.contamination_max_share}, "
                             f"{self.duplicate_similarity}, {self.duplicate_hamming}")
        for name, kind in typing.get_type_hints(PipelineConfig).items():
            allowed = typing.get_args(kind)
            if typing.get_origin(kind) is Literal and getattr(self, name) not in allowed:
                raise ValueError(f"{name} {getattr(self, name)!r} is not {', '.join(allowed[:-1])} or {allowed[-1]}")
        if self.kfp_accelerator != "none" and self.kfp_accelerator_count < 1:
            raise ValueError(f"kfp_accelerator_count must be >= 1 for a {self.kfp_accelerator}, "
                             f"got {self.kfp_accelerator_count}")
        self._check_cluster_settings()
        self._check_tuning_settings()
        if self.kserve_canary_traffic_percent > 100:
            raise ValueError(f"kserve_canary_traffic_percent must be 0-100 (negative: off), "
                             f"got {self.kserve_canary_traffic_percent}")
        if not 0 <= self.corruptions_per_example <= 6:
            raise ValueError(f"corruptions_per_example must be 0..6, got {self.corruptions_per_example}")
        self.seeds = tuple(int(seed) for seed in self.seeds)
        if len(set(self.seeds)) != len(self.seeds) or any(seed < 0 for seed in self.seeds) or len(self.seeds) > 10:
            raise ValueError(f"seeds must be up to 10 different non-negative integers, got {list(self.seeds)}")
        validation.check_config(self)  # names, outputs inside output_root, no credentials in URIs

    def _check_cluster_settings(self) -> None:
        """Multi-worker trainers and the Beam runner: what each choice needs, said at load time."""
        if not 1 <= self.kfp_trainer_workers <= 64:
            raise ValueError(f"kfp_trainer_workers must be 1..64, got {self.kfp_trainer_workers}")
        if self.kfp_trainer_workers > 1 and self.train.batch_size % self.kfp_trainer_workers:
            raise ValueError(f"batch_size {self.train.batch_size} does not split evenly over kfp_trainer_workers "
                             f"{self.kfp_trainer_workers}: every replica would fail; choose a batch_size that is a "
                             f"multiple of {self.kfp_trainer_workers}")
        if self.kfp_trainer_workers > 1 and self.kfp_accelerator == "tpu":
            raise ValueError(f"kfp_trainer_workers {self.kfp_trainer_workers} with kfp_accelerator tpu: multi-worker "
                             "trainers run on CPUs or GPUs (a TPU slice is one TPUStrategy worker); use 1 worker")
        if self.kfp_trainer_workers > 1 and self.kfp_target == "vertex":
            missing = [name for name in ("gcp_project", "gcp_region", "vertex_machine_type") if not getattr(self, name)]
            if missing:
                raise ValueError(f"kfp_trainer_workers {self.kfp_trainer_workers} on the vertex target launches a "
                                 f"Vertex AI CustomJob per trainer: set {', '.join(missing)}")
        if self.beam_max_workers < 0:
            raise ValueError(f"beam_max_workers must be >= 0 (0: the runner's default), got {self.beam_max_workers}")
        if self.beam_runner == "dataflow":
            missing = [name for name in ("gcp_project", "gcp_region") if not getattr(self, name)]
            if missing:
                raise ValueError(f"beam_runner dataflow needs {' and '.join(missing)} (the Dataflow jobs' project "
                                 "and region)")
            if not self.dataflow_temp_location.startswith("gs://"):
                raise ValueError(f"beam_runner dataflow needs dataflow_temp_location, a gs:// folder, got "
                                 f"{self.dataflow_temp_location!r}")
        if self.beam_runner == "flink":
            host, _, port = self.flink_job_endpoint.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"beam_runner flink needs flink_job_endpoint, host:port of the Beam Flink job "
                                 f"server, got {self.flink_job_endpoint!r}")

    def _check_tuning_settings(self) -> None:
        """The budget's three factors, the workers, and storages that are databases of their own."""
        if self.tune_trials < 0 or self.tune_epochs < 1 or self.tune_examples < 0 or not 1 <= self.tune_workers <= 16:
            raise ValueError(f"tuning needs tune_trials >= 0, tune_epochs >= 1, tune_examples >= 0 and tune_workers "
                             f"1..16, got {self.tune_trials}, {self.tune_epochs}, {self.tune_examples}, "
                             f"{self.tune_workers}")
        for field, uri, registry_database in (
                ("tune_storage_uri", self.tune_storage_uri, self.registry_lock_uri or self.registry_uri),
                ("kfp_tune_storage_uri", self.kfp_tune_storage_uri, self.kfp_registry_lock_uri)):
            if uri.startswith(("postgresql://", "postgres://")):
                validation.check_lock_uri(uri, field)  # no password in the URI
            elif uri and not uri.startswith("sqlite:////"):
                raise ValueError(f"{field} {validation.redact_uri(uri)} is neither postgresql://USER@HOST:PORT/DB "
                                 "nor sqlite:////ABSOLUTE/PATH")
            if uri and same_database(uri, registry_database):
                raise ValueError(f"{field} {validation.redact_uri(uri)} is the registry's database: Optuna and MLflow "
                                 "both keep an alembic_version table; give the studies a database of their own")

    def resolved_tune_storage_uri(self) -> str:
        """The studies' storage of local runs: the configured one, else SQLite under output_root."""
        return self.tune_storage_uri or "sqlite:///" + os.path.join(os.path.abspath(self.output_root), "tuning",
                                                                    "optuna.db")

    # Derived locations for local runs.
    @property
    def pipeline_root(self) -> str:
        return self.artifact_root.rstrip("/") or os.path.join(self.output_root, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_root, "metadata.sqlite")

    @property
    def registry_dir(self) -> str:
        return os.path.join(self.output_root, "registry")

    def resolved_baseline_statistics(self) -> str:
        """The pinned drift baseline ("" when drift checks are off)."""
        if self.baseline_statistics.lower() == "none":
            return ""
        return self.baseline_statistics or os.path.join(
            os.path.dirname(self.schema_path), "baseline_statistics.pbtxt")

    def resolved_image_baseline(self) -> str:
        """The pinned image drift baseline folder ("" when the image drift check is off)."""
        if self.image_baseline.lower() == "none":
            return ""
        return self.image_baseline or os.path.join(os.path.dirname(self.schema_path), "image_baseline")

    def resolved_registry_uri(self) -> str:
        """The registry of local runs: the configured URI, else the embedded SQLite one."""
        return self.registry_uri or embedded_uri(self.registry_dir)

    def training_seeds(self) -> tuple[int, ...]:
        """The seed of each framework's trainers: `seeds`, else the train section's one seed."""
        return self.seeds or (self.train.seed,)

    def trainer_config(self) -> dict[str, Any]:
        """What the trainers' run_fn receives as custom_config."""
        return self.train.as_custom_config()

    def replace(self, **settings: Any) -> PipelineConfig:
        """A copy with settings changed, by flat name (`epochs`, `min_metric`, `image`)."""
        return from_settings(self, settings)


def same_database(first: str, second: str) -> bool:
    """Whether two database URIs name the same database (host, port and name; users may differ)."""
    a, b = urlsplit(first), urlsplit(second)
    return bool(a.hostname) and (a.hostname, a.port, a.path) == (b.hostname, b.port, b.path)


def setting_fields() -> dict[str, tuple[str | None, dataclasses.Field, Any]]:
    """Every setting by its flat name: (its section or None, its field, its type)."""
    found: dict[str, tuple[str | None, dataclasses.Field, Any]] = {}
    hints = typing.get_type_hints(PipelineConfig)
    for f in dataclasses.fields(PipelineConfig):
        if f.name not in SECTIONS:
            found[f.name] = (None, f, hints[f.name])
            continue
        section_hints = typing.get_type_hints(SECTIONS[f.name])
        for g in dataclasses.fields(SECTIONS[f.name]):
            assert g.name not in found, f"setting {g.name} is declared twice"
            found[g.name] = (f.name, g, section_hints[g.name])
    return found


def from_settings(base: PipelineConfig, settings: dict[str, Any], where: str = "") -> PipelineConfig:
    """`base` with flat settings applied (a section may also be given whole, as a mapping)."""
    fields = setting_fields()
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        if key in SECTIONS and isinstance(value, dict):
            flat.update({inner if fields.get(inner, (None,))[0] == key else f"{key}.{inner}": v
                         for inner, v in value.items()})
        else:
            flat[key] = value
    unknown = sorted(k for k in flat if k not in fields or k in SECTIONS)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}{where}")
    top = {k: v for k, v in flat.items() if fields[k][0] is None}
    for name in SECTIONS:
        changes = {k: v for k, v in flat.items() if fields[k][0] == name}
        if changes:
            top[name] = dataclasses.replace(getattr(base, name), **changes)
    return dataclasses.replace(base, **top)


def load_config(path: str | None = None, environment: dict[str, Any] | None = None,
                **settings: Any) -> PipelineConfig:
    """Defaults <- `environment` (settings the caller read from the process) <- YAML file <- settings
    (flags); `None` values are unset. Unknown keys are an error naming them and the file."""
    values: dict[str, Any] = {k: v for k, v in (environment or {}).items() if v}
    if path:
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of config keys, got {type(loaded).__name__}")
        values.update(loaded)
    values.update({k: v for k, v in settings.items() if v is not None})
    return from_settings(PipelineConfig(), values, f" in {path}" if path else "")
