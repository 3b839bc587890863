"""Compiling the DAG to a KFP v2 package for Kubeflow Pipelines or Vertex AI: the config as the
cluster sees it, run parameters a run can set without a recompile, the trainers' placement, and
what TFX's compiler leaves out of the package (post_compile)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from tfx import v1 as tfx

from pipelines import beam_options, validation
from pipelines.config import PipelineConfig
from pipelines.kubeflow import entrypoint, placement, training_jobs
from pipelines.kubeflow.package import IMAGE_PROJECT_DIR, TRAINER_CONFIG_PARAMETER, Package, PackageError
from pipelines.pipeline import NEVER_CACHED, create_pipeline, trainer_ids, tuner_ids

RuntimeParameter = tfx.dsl.experimental.RuntimeParameter


# beam_runner -> Beam's runner class (direct: pipelines/beam_options.py).
BEAM_RUNNERS = {"dataflow": "DataflowRunner", "flink": "PortableRunner"}


def beam_args(cfg: PipelineConfig) -> list[str]:
    """The Beam steps' pipeline args (TFX appends them to each Beam executor's container args). The
    workers of a remote runner run the pipeline's own image as the SDK container
    (infra/Dockerfile.beam-sdk adds Beam's boot entrypoint). Dataflow turns on Runner v2, which
    custom containers need, by itself (Beam >= 2.45)."""
    image = beam_options.worker_image_arg(cfg)
    if cfg.beam_runner == "dataflow":
        return [f"--runner={BEAM_RUNNERS['dataflow']}", f"--project={cfg.gcp_project}", f"--region={cfg.gcp_region}",
                f"--temp_location={cfg.dataflow_temp_location}", image,
                *([f"--max_num_workers={cfg.beam_max_workers}"] if cfg.beam_max_workers else [])]
    if cfg.beam_runner == "flink":
        # The portable runner takes the workers' image from environment_config (its DOCKER
        # environment does not read sdk_container_image).
        return [f"--runner={BEAM_RUNNERS['flink']}", f"--job_endpoint={cfg.flink_job_endpoint}",
                "--environment_type=DOCKER", f"--environment_config={cfg.image}", image,
                *([f"--parallelism={cfg.beam_max_workers}"] if cfg.beam_max_workers else [])]
    # A pod's Beam runs as a local run's does (in_memory by default: MNIST's steps are faster in
    # one process than with worker subprocesses that each import TensorFlow, bench/README.md).
    return beam_options.direct_args(cfg, in_pods=True)


def kubeflow_config(cfg: PipelineConfig) -> PipelineConfig:
    """The config as the cluster sees it: paths inside the image, nothing of this machine."""
    return cfg.replace(schema_path=f"{IMAGE_PROJECT_DIR}/schema/schema.pbtxt",
                       cache_dir="/tmp/mnist-cache", output_root="/tmp/unused",
                       registry_lock_uri=cfg.kfp_registry_lock_uri, tune_storage_uri=cfg.kfp_tune_storage_uri)


def tuner_task_ids(cfg: PipelineConfig) -> list[str]:
    """The package's tuner tasks: tune_workers per framework, sharing their study's storage (TFX
    compiles no ParallelFor, and a Katib Experiment would be a second search engine beside Optuna's
    with its own trial budget: the parallel tasks run the same workers as a local run)."""
    return [task for tasks in tuner_ids(cfg, parallel_tasks=True).values() for task in tasks]


def submit_time_parameters(cfg: PipelineConfig, registry_uri: str) -> dict[str, RuntimeParameter]:
    """Exec property -> the pipeline parameter that replaces it in the compiled package, so a run
    can set it without a recompile (the pipeline root is a run option of KFP and Vertex already).
    Epochs live in the trainers' custom_config, which TFX passes as one JSON string: the whole
    config is the parameter, and `deploy --param epochs=N` edits it (pipelines/kubeflow/deploy.py).
    The revision recorded on a registered version is the image's ($CODE_REVISION, infra/Dockerfile).
    With several seeds each trainer's custom_config differs (its seed), and a multi-worker trainer's
    holds its job (pipelines/kubeflow/training_jobs.py), so the training settings are then compiled
    in as constants: change them by recompiling."""
    constants = len(cfg.training_seeds()) > 1 or training_jobs.multi_worker(cfg)
    trainer_config = {} if constants else {
        "custom_config": RuntimeParameter(name=TRAINER_CONFIG_PARAMETER, ptype=str,
                                          default=json.dumps(cfg.trainer_config(), sort_keys=True))}
    return {
        "source": RuntimeParameter(name="source", ptype=str, default=cfg.source),
        "registry_uri": RuntimeParameter(name="registry_uri", ptype=str, default=registry_uri),
        **trainer_config,
    }


def parameterize(pipeline: tfx.dsl.Pipeline, parameters: dict[str, RuntimeParameter]) -> None:
    """Swaps each named exec property, on every component that has it, for its parameter. Only the
    Kubeflow compile does this: LocalDagRunner runs keep their constants."""
    unused = set(parameters)
    for component in pipeline.components:
        for key, parameter in parameters.items():
            if key in component.exec_properties:
                component.exec_properties[key] = parameter
                unused.discard(key)
    if unused:
        raise ValueError(f"no component has the exec properties {sorted(unused)}; "
                         "update pipelines/kubeflow/compile.py:submit_time_parameters")


def compile_kubeflow(cfg: PipelineConfig, output_path: str) -> str:
    """Writes the KFP v2 pipeline package (IR YAML) to `output_path`: run parameters with their
    defaults, trainers placed on their accelerator nodes (post_compile)."""
    registry_uri = validation.check_registry_uri(cfg.kfp_registry_uri, "kfp_registry_uri")  # goes into the package
    kcfg = kubeflow_config(cfg)
    # TFX's Kubeflow V2 compiler builds only its own resolver strategies: every run re-evaluates
    # against the champion it resolved (components/champion_resolver/strategy.py).
    pipeline = create_pipeline(kcfg, registry_uri=registry_uri, pipeline_root=cfg.kfp_pipeline_root,
                               beam_pipeline_args=beam_args(cfg), reuse_unchanged_champion=False,
                               kserve_deploy=cfg.kserve_deploy and cfg.kfp_target == "kubeflow",
                               trainer_launch=training_jobs.trainer_launch(cfg), parallel_tuner_tasks=True)
    parameters = submit_time_parameters(kcfg, registry_uri)
    parameterize(pipeline, parameters)
    # A multi-worker trainer's step only launches its job: the replicas get the accelerator. The
    # tuner tasks train too, on the trainers' hardware (mixed precision and batch sizes mean the same).
    resources = None if training_jobs.multi_worker(cfg) else placement.trainer_resources(cfg)
    tuner_resources = placement.trainer_resources(cfg)
    for component in pipeline.components:
        if component.id in trainer_ids(cfg) and resources is not None:
            component.with_platform_config(resources)
        if component.id in tuner_task_ids(cfg) and tuner_resources is not None:
            component.with_platform_config(tuner_resources)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        # Pipeline spec 2.1 (what kfp 2.x itself writes): TFX 1.16 cannot write a 2.0 package
        # with pipeline parameters (its YAML writer reads `parameterType`, a 2.1 field).
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=cfg.image, use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
        output_filename=os.path.basename(output_path))
    runner.run(pipeline)
    # TFX keeps parameter defaults only in the run config, which its YAML writer drops.
    post_compile(output_path, cfg, trainer_ids(cfg), {p.name: p.default for p in parameters.values()})
    return output_path


def set_parameter_defaults(package: Package, defaults: dict[str, Any]) -> None:
    declared = package.root_parameters
    missing = sorted(set(defaults) - set(declared))
    if missing:
        raise PackageError(f"{package.path}: the compiled pipeline lacks the parameters {missing}")
    for name, value in defaults.items():
        declared[name]["defaultValue"] = value
        declared[name]["isOptional"] = True


def post_compile(path: str, cfg: PipelineConfig, trainer_ids: Iterable[str],
                 parameter_defaults: dict[str, Any]) -> None:
    """What TFX's compiler leaves out of the package: the pipeline root, the parameters' defaults
    (both live in the run config, which its YAML writer drops), the trainers' placement, and what
    an S3 pipeline root needs: an executor command that can write to it
    (pipelines/kubeflow/entrypoint.py) and the store's keys from a Kubernetes secret."""
    package = Package.read(path)
    package.spec["defaultPipelineRoot"] = cfg.kfp_pipeline_root
    set_parameter_defaults(package, parameter_defaults)
    placement.place_trainers(package, cfg, trainer_ids)
    placement.place_tuners(package, cfg, tuner_task_ids(cfg))
    placement.attach_object_store_secret(package, cfg)
    placement.attach_model_key_secrets(package, cfg)
    for task_id in NEVER_CACHED:  # TFX's compiler gives every task the pipeline's caching setting
        package.tasks[task_id]["cachingOptions"] = {"enableCache": False}
    for executor in package.executors.values():  # TFX's entry point, with object stores enabled
        executor["container"]["command"] = list(entrypoint.COMMAND)
    package.write()
