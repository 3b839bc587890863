"""The DAG: ingest -> validate (schema, drift, skew) -> gate -> Keras + PyTorch trainers -> bake-off -> registry."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tfx import v1 as tfx

from components.bakeoff_evaluator.component import BakeoffEvaluator
from components.data_gate.component import DataGate
from components.drift_validator.component import DriftValidator
from components.kserve_deployer.component import KServeDeployer
from components.mnist_example_gen.component import MnistExampleGen
from components.registry_pusher.component import RegistryPusher
from pipelines.config import PipelineConfig

TRAINERS = {"keras": "trainers.keras_trainer.run_fn", "pytorch": "trainers.torch_trainer.run_fn"}
TRAINER_IDS = tuple(f"{framework}_trainer" for framework in TRAINERS)  # one seed
# framework -> (the Trainer class, custom_config keys it adds): how a trainer step trains.
TrainerLaunch = Callable[[str], tuple[type, dict[str, Any]]]


def in_step_container(framework: str) -> tuple[type, dict[str, Any]]:
    """The default: TFX's Trainer, training in its step's own container."""
    return tfx.components.Trainer, {}


def trainer_runs(cfg: PipelineConfig) -> list[tuple[str, str, int]]:
    """(component id, framework, seed) of every trainer: one per framework, or one per framework
    and seed (`keras_trainer_seed1`) when the config asks for several seeds."""
    seeds = cfg.training_seeds()
    return [(f"{framework}_trainer" + (f"_seed{seed}" if len(seeds) > 1 else ""), framework, seed)
            for framework in TRAINERS for seed in seeds]


def trainer_ids(cfg: PipelineConfig) -> tuple[str, ...]:
    return tuple(component_id for component_id, _, _ in trainer_runs(cfg))


def create_pipeline(cfg: PipelineConfig, *, registry_uri: str, pipeline_root: str,
                    metadata_path: str | None = None,
                    beam_pipeline_args: list[str] | None = None, code_version: str = "",
                    code_revision: str = "", kserve_deploy: bool = False,
                    trainer_launch: TrainerLaunch = in_step_container) -> tfx.dsl.Pipeline:
    """`code_version` (local runs): a fingerprint of the trainers' code, part of their cache key, so
    editing a trainer retrains instead of reusing a model the old code made. `code_revision`: the
    revision recorded on a registered version. `kserve_deploy` (Kubeflow target only): a last step
    applies the champion's InferenceService when the run moved the alias. `trainer_launch`: the
    Trainer class of each framework and the keys it adds to custom_config (the compile's
    multi-worker trainers, pipelines/kubeflow/compile.py)."""
    example_gen = MnistExampleGen(source=cfg.source, cache_dir=cfg.cache_dir, eval_ratio=cfg.eval_ratio,
                                  train_limit=cfg.train_limit, test_limit=cfg.test_limit,
                                  verify_checksums=cfg.verify_checksums, class_names=cfg.class_names)
    examples = example_gen.outputs["examples"]
    schema_importer = tfx.components.ImportSchemaGen(schema_file=cfg.schema_path)
    # With the schema, the categorical label gets a value distribution (for the L-infinity check).
    statistics_gen = tfx.components.StatisticsGen(examples=examples, schema=schema_importer.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"])
    drift_validator = DriftValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"],
        anomalies=example_validator.outputs["anomalies"], examples=examples,
        # The pinned baseline; the champion's training statistics replace it at run time.
        baseline_statistics=cfg.resolved_baseline_statistics(), baseline_from_champion=cfg.baseline_from_champion,
        registry_uri=registry_uri, registered_model_name=cfg.registered_model_name,
        label_linf=cfg.drift_label_linf, pixel_js=cfg.drift_pixel_js)
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"],
                         schema=schema_importer.outputs["schema"],
                         drift_anomalies=drift_validator.outputs["drift_anomalies"])

    # Independent trainers (one per framework, or per framework and seed): none depends on another,
    # so orchestrators run them in parallel. They start only after the gate passed (an explicit
    # dependency, not its output: a rerun whose gate re-checks drift against a new champion's
    # statistics still reuses the trained models).
    trainers = {}
    for component_id, framework, seed in trainer_runs(cfg):
        trainer_class, launch_config = trainer_launch(framework)
        trainers[component_id] = trainer_class(
            run_fn=TRAINERS[framework], examples=examples, schema=schema_importer.outputs["schema"],
            train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["eval"]),
            custom_config={**cfg.trainer_config(), "seed": seed,
                           **({"code_version": code_version} if code_version else {}), **launch_config},
        ).with_id(component_id)
    for trainer in trainers.values():
        trainer.add_upstream_node(data_gate)

    models = {component_id.replace("_trainer", "_model"): t.outputs["model"] for component_id, t in trainers.items()}
    logs = {component_id.replace("_trainer", "_model"): t.outputs["model_run"] for component_id, t in trainers.items()}
    # One evaluation for all candidates and the registry's current champion; one decision; the
    # bake-off's runs in MLflow (each training with its TensorBoard logs, the evaluation).
    evaluator = BakeoffEvaluator(examples=examples, candidates=models, training_logs=logs, rule=cfg.rule,
                                 corruptions_per_example=cfg.corruptions_per_example,
                                 registry_uri=registry_uri, registered_model_name=cfg.registered_model_name)
    pusher = RegistryPusher(evaluation=evaluator.outputs["evaluation"], blessing=evaluator.outputs["blessing"],
                            candidates=models, statistics=statistics_gen.outputs["statistics"],
                            registry_uri=registry_uri, registered_model_name=cfg.registered_model_name,
                            code_revision=code_revision)

    serving = [KServeDeployer(
        pushed_model=pusher.outputs["pushed_model"], registry_uri=registry_uri,
        registered_model_name=cfg.registered_model_name, namespace=cfg.kserve_namespace,
        service_account=cfg.kserve_service_account, artifacts_destination=cfg.kserve_artifacts_destination,
        canary_traffic_percent=cfg.kserve_canary_traffic_percent)] if kserve_deploy else []

    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=pipeline_root,
        components=[example_gen, schema_importer, statistics_gen, example_validator, drift_validator, data_gate,
                    *trainers.values(), evaluator, pusher, *serving],
        enable_cache=True,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
            if metadata_path else None),
        beam_pipeline_args=beam_pipeline_args or [],
    )
