"""The DAG: the champion resolved -> ingest -> validate (schema, drift, skew, the images'
contamination and drift) -> gate -> (tuning each framework, when asked) -> Keras + PyTorch
trainers -> bake-off -> registry."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import tensorflow_data_validation as tfdv
from tfx import types
from tfx import v1 as tfx
from tfx.types import standard_artifacts

from components.bakeoff_evaluator.component import BakeoffEvaluator
from components.champion_resolver.component import ChampionResolver
from components.champion_resolver.strategy import SameChampion
from components.data_gate.component import DataGate
from components.drift_validator.component import DriftValidator
from components.image_validator.component import ImageValidator
from components.kserve_deployer.component import KServeDeployer
from components.mnist_example_gen.component import MnistExampleGen
from components.registry_pusher.component import RegistryPusher
from components.tuner import space
from components.tuner.component import OptunaTuner
from pipelines import beam_options
from pipelines.config import PipelineConfig

TRAINERS = {"keras": "trainers.keras_trainer.run_fn", "pytorch": "trainers.torch_trainer.run_fn"}
# Each framework's per-epoch trial entry point, which its tuner calls (trainers/trial.py).
TRIALS = {"keras": "trainers.keras_trainer.tune_trial", "pytorch": "trainers.torch_trainer.tune_trial"}
TRAINER_IDS = tuple(f"{framework}_trainer" for framework in TRAINERS)  # one seed
CHAMPION_RESOLVER = "ChampionResolver"
# Nodes that must run every time (the orchestrator's caching is turned off for them by the runner
# and the compile: TFX 1.16 applies the pipeline's caching setting to every node).
NEVER_CACHED = (CHAMPION_RESOLVER,)
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


def tuner_ids(cfg: PipelineConfig, parallel_tasks: bool = False) -> dict[str, list[str]]:
    """framework -> its tuner nodes (none without tuning): one, or tune_workers parallel tasks."""
    tasks = cfg.tune_workers if parallel_tasks else 1
    return {framework: [f"{framework}_tuner" + (f"_{i}" if tasks > 1 else "") for i in range(tasks)]
            for framework in TRAINERS} if cfg.tune_trials else {}


def tuners(cfg: PipelineConfig, examples: types.BaseChannel, schema: types.BaseChannel,
           custom_config: Callable[[int], dict[str, Any]], registry_uri: str,
           parallel_tasks: bool) -> dict[str, list[OptunaTuner]]:
    """Each framework's study, with the same space and budget (components/tuner): one tuner node
    running tune_workers processes, or (`parallel_tasks`, the compiled package: TFX compiles no
    ParallelFor) tune_workers nodes of one process each, sharing the study through its storage.
    They tune at the first seed; every trainer of the framework trains with the best values."""
    processes = 1 if parallel_tasks else cfg.tune_workers
    dims = space.to_json(space.search_space(cfg.train))
    return {framework: [OptunaTuner(
        examples=examples, schema=schema, framework=framework, trial_fn=TRIALS[framework],
        custom_config=json.dumps(custom_config(cfg.training_seeds()[0]), sort_keys=True), space=dims,
        trials=cfg.tune_trials, epochs=cfg.tune_epochs, examples_per_trial=cfg.tune_examples,
        storage_uri=cfg.resolved_tune_storage_uri(), pruner=cfg.tune_pruner, study_prefix=cfg.pipeline_name,
        processes=processes, task_index=task, registry_uri=registry_uri,
        registered_model_name=cfg.registered_model_name).with_id(node_id)
        for task, node_id in enumerate(ids)] for framework, ids in tuner_ids(cfg, parallel_tasks).items()}


def resolve_champion(registry_uri: str, model_name: str, reuse_unchanged_champion: bool) -> tuple[list, dict]:
    """The champion as the run's input: ChampionResolver (reads the alias, never cached) and, where
    the orchestrator can run it, SameChampion, which keeps the consumers' cache while the champion
    stays the same (components/champion_resolver/strategy.py). (nodes, {"model", "statistics"})."""
    resolver = ChampionResolver(registry_uri=registry_uri, registered_model_name=model_name).with_id(CHAMPION_RESOLVER)
    if not reuse_unchanged_champion:
        return [resolver], dict(resolver.outputs)
    same = tfx.dsl.Resolver(
        strategy_class=SameChampion,
        model=types.Channel(type=standard_artifacts.Model, producer_component_id=CHAMPION_RESOLVER,
                            output_key="model"),
        statistics=types.Channel(type=standard_artifacts.ExampleStatistics,
                                 producer_component_id=CHAMPION_RESOLVER, output_key="statistics"),
    ).with_id("SameChampion")
    same.add_upstream_node(resolver)
    return [resolver, same], dict(same.outputs)


def create_pipeline(cfg: PipelineConfig, *, registry_uri: str, pipeline_root: str,
                    metadata_path: str | None = None,
                    beam_pipeline_args: list[str] | None = None, code_version: str = "", cpu_precision: str = "",
                    kserve_deploy: bool = False, reuse_unchanged_champion: bool = True,
                    trainer_launch: TrainerLaunch = in_step_container,
                    parallel_tuner_tasks: bool = False) -> tfx.dsl.Pipeline:
    """`code_version` (local runs): a fingerprint of the trainers' code, part of their cache key, so
    editing a trainer retrains instead of reusing a model the old code made. `cpu_precision` (local
    runs): what the trainers compute in on this machine's CPU (trainers/machine.cpu_precision), also
    part of their cache key, so a model trained in float32 is not reused where they would train in
    bfloat16, nor the other way round (on a cluster the node decides; its model_meta.json says what
    it chose). `kserve_deploy`
    (Kubeflow target only): a last step applies the InferenceService of the version the pusher
    promoted. `reuse_unchanged_champion`: SameChampion between the champion's resolution and its
    consumers (local runs; TFX's Kubeflow compiler cannot build it). `trainer_launch`: the Trainer
    class of each framework and the keys it adds to custom_config (the compile's multi-worker
    trainers, pipelines/kubeflow/compile.py). `parallel_tuner_tasks` (the compile): tune_workers
    tuner tasks per framework instead of one tuner step with tune_workers processes."""
    resolution, champion = resolve_champion(registry_uri, cfg.registered_model_name, reuse_unchanged_champion)
    example_gen = MnistExampleGen(source=cfg.source, cache_dir=cfg.cache_dir, eval_ratio=cfg.eval_ratio,
                                  train_limit=cfg.train_limit, test_limit=cfg.test_limit,
                                  verify_checksums=cfg.verify_checksums, class_names=cfg.class_names)
    examples = example_gen.outputs["examples"]
    schema_importer = tfx.components.ImportSchemaGen(schema_file=cfg.schema_path)
    # With the schema, the categorical label gets a value distribution (for the L-infinity check).
    # Top-k and unique values by sketches: one combiner with the other statistics instead of a Beam
    # graph of its own per split (exact for the label's ten values; bench/README.md).
    statistics_gen = tfx.components.StatisticsGen(
        examples=examples, schema=schema_importer.outputs["schema"],
        stats_options=tfdv.StatsOptions(use_sketch_based_topk_uniques=True),
    ).with_beam_pipeline_args(beam_options.statistics_args(cfg))
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"])
    # The images themselves: copies of training images in the test split, and shifted, scaled or
    # rotated digits, against the champion's training images (the pinned image baseline without them).
    image_validator = ImageValidator(
        examples=examples, champion_statistics=champion["statistics"], image_baseline=cfg.resolved_image_baseline(),
        baseline_from_champion=cfg.baseline_from_champion, centre_js=cfg.image_centre_js,
        box_linf=cfg.image_box_linf, mean_image_excess=cfg.image_mean_excess,
        contamination_max_share=cfg.contamination_max_share, duplicate_similarity=cfg.duplicate_similarity,
        duplicate_hamming=cfg.duplicate_hamming)
    drift_validator = DriftValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_importer.outputs["schema"],
        anomalies=example_validator.outputs["anomalies"], examples=examples,
        # The pinned baseline; the champion's training statistics replace it when it has them.
        baseline_statistics=cfg.resolved_baseline_statistics(), baseline_from_champion=cfg.baseline_from_champion,
        champion_statistics=champion["statistics"], label_linf=cfg.drift_label_linf, pixel_js=cfg.drift_pixel_js,
        image_checks=image_validator.outputs["image_checks"])
    data_gate = DataGate(anomalies=example_validator.outputs["anomalies"],
                         drift_anomalies=drift_validator.outputs["drift_anomalies"],
                         image_checks=image_validator.outputs["image_checks"])

    def custom_config(seed: int) -> dict[str, Any]:
        return {**cfg.trainer_config(), "seed": seed, "class_names": list(cfg.class_names),
                **({"code_version": code_version} if code_version else {}),
                **({"cpu_precision": cpu_precision} if cpu_precision else {})}

    # Independent trainers (one per framework, or per framework and seed): none depends on another,
    # so orchestrators run them in parallel. They start only after the gate passed (an explicit
    # dependency, not its output: a rerun whose gate re-checks drift against a new champion's
    # statistics still reuses the trained models).
    # Tuning (tune_trials > 0): each framework's tuner after the gate; its best values go into every
    # trainer of the framework as TFX's HyperParameters artifact, after all of its tasks ended.
    tuning = tuners(cfg, examples, schema_importer.outputs["schema"], custom_config, registry_uri,
                    parallel_tuner_tasks)
    trainers = {}
    for component_id, framework, seed in trainer_runs(cfg):
        trainer_class, launch_config = trainer_launch(framework)
        tuned = {"hyperparameters": tuning[framework][0].outputs["best_hyperparameters"]} if tuning else {}
        trainers[component_id] = trainer_class(
            run_fn=TRAINERS[framework], examples=examples, schema=schema_importer.outputs["schema"],
            train_args=tfx.proto.TrainArgs(splits=["train"]), eval_args=tfx.proto.EvalArgs(splits=["eval"]),
            custom_config={**custom_config(seed), **launch_config}, **tuned,
        ).with_id(component_id)
        for task in tuning.get(framework, [])[1:]:
            trainers[component_id].add_upstream_node(task)
    for node in [*trainers.values(), *(t for tasks in tuning.values() for t in tasks)]:
        node.add_upstream_node(data_gate)

    models = {component_id.replace("_trainer", "_model"): t.outputs["model"] for component_id, t in trainers.items()}
    logs = {component_id.replace("_trainer", "_model"): t.outputs["model_run"] for component_id, t in trainers.items()}
    # One evaluation for all candidates and the champion the run resolved; one decision; the
    # bake-off's runs in MLflow (each training with its TensorBoard logs, the evaluation).
    evaluator = BakeoffEvaluator(examples=examples, candidates=models, training_logs=logs, rule=cfg.rule,
                                 champion=champion["model"], corruptions_per_example=cfg.corruptions_per_example,
                                 registry_uri=registry_uri, registered_model_name=cfg.registered_model_name,
                                 tuning={f: tasks[0].outputs["tuner_results"] for f, tasks in tuning.items()})
    pusher = RegistryPusher(evaluation=evaluator.outputs["evaluation"], blessing=evaluator.outputs["blessing"],
                            candidates=models, champion=champion["model"],
                            image_statistics=image_validator.outputs["image_statistics"],
                            statistics=statistics_gen.outputs["statistics"], registry_uri=registry_uri,
                            registry_lock_uri=cfg.registry_lock_uri, registered_model_name=cfg.registered_model_name)

    serving = [KServeDeployer(
        pushed_model=pusher.outputs["pushed_model"], registry_uri=registry_uri,
        registered_model_name=cfg.registered_model_name, namespace=cfg.kserve_namespace,
        service_account=cfg.kserve_service_account, artifacts_destination=cfg.kserve_artifacts_destination,
        canary_traffic_percent=cfg.kserve_canary_traffic_percent)] if kserve_deploy else []

    return tfx.dsl.Pipeline(
        pipeline_name=cfg.pipeline_name,
        pipeline_root=pipeline_root,
        components=[*resolution, example_gen, schema_importer, statistics_gen, example_validator, image_validator,
                    drift_validator, data_gate, *(t for tasks in tuning.values() for t in tasks), *trainers.values(),
                    evaluator, pusher, *serving],
        enable_cache=True,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(metadata_path)
            if metadata_path else None),
        beam_pipeline_args=beam_pipeline_args or [],
    )
