"""Running the DAG locally (LocalDagRunner + Beam DirectRunner) and compiling it for Kubeflow."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx

from pipelines import recovery, validation
from pipelines.config import REPO_ROOT, PipelineConfig
from pipelines.kubeflow import IMAGE_PROJECT_DIR, TRAINER_CONFIG_PARAMETER, accelerator_resource, post_compile
from pipelines.pipeline import TRAINER_IDS, create_pipeline

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec
RuntimeParameter = tfx.dsl.experimental.RuntimeParameter


def beam_worker_image_arg(cfg: PipelineConfig) -> str:
    # Remote Beam workers would run the pipeline's own image, which has all the code; naming it
    # also stops TFX from building and attaching an sdist of itself at every Beam step (~4 s each).
    return f"--sdk_container_image={cfg.image}"


def local_beam_args(cfg: PipelineConfig) -> list[str]:
    # FnApiRunner is the engine DirectRunner picks for batch pipelines; naming it stops Beam
    # >= 2.6x from first trying to download its Prism runner binary.
    return ["--runner=FnApiRunner", f"--direct_running_mode={cfg.beam_direct_running_mode}",
            f"--direct_num_workers={cfg.beam_direct_workers}", beam_worker_image_arg(cfg)]


def code_fingerprint(package_dir: str = os.path.join(REPO_ROOT, "trainers")) -> str:
    """sha256 over the trainers' source files. TFX's cache key covers a Trainer's run_fn name,
    not its code; on a cluster the image tag versions the code instead."""
    digest = hashlib.sha256()
    for name in sorted(f for f in os.listdir(package_dir) if f.endswith(".py")):
        digest.update(name.encode() + b"\0")
        with open(os.path.join(package_dir, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]


def local_pipeline(cfg: PipelineConfig) -> tfx.dsl.Pipeline:
    return create_pipeline(cfg, registry_uri=cfg.resolved_registry_uri(),
                           pipeline_root=cfg.pipeline_root, metadata_path=cfg.metadata_path,
                           beam_pipeline_args=local_beam_args(cfg), code_version=code_fingerprint())


def run_local(cfg: PipelineConfig) -> dict[str, Any]:
    """Runs the pipeline with LocalDagRunner; one run at a time per output root. What an earlier
    run left unfinished (killed mid-stage) is marked failed and its partial outputs deleted
    first; finished stages of earlier runs come from the cache (pipelines.recovery)."""
    os.makedirs(os.path.join(cfg.output_root, "registry"), exist_ok=True)
    with recovery.exclusive_run(cfg.output_root):
        if os.path.exists(cfg.metadata_path):
            recovery.reap_interrupted_executions(_store(cfg), cfg.pipeline_root)
        tfx.orchestration.LocalDagRunner().run(local_pipeline(cfg))
        return summarize(cfg)


def kubeflow_config(cfg: PipelineConfig) -> PipelineConfig:
    """The config as the cluster sees it: paths inside the image, nothing of this machine."""
    return cfg.replace(schema_path=f"{IMAGE_PROJECT_DIR}/schema/schema.pbtxt",
                       cache_dir="/tmp/mnist-cache", output_root="/tmp/unused")


def trainer_resources(cfg: PipelineConfig) -> ResourceSpec | None:
    """What each trainer asks a Kubeflow node for (LocalDagRunner accepts no ResourceSpec):
    accelerator, CPU and memory; None when nothing is asked."""
    spec = ResourceSpec(cpu_request=cfg.kfp_cpu_request, cpu_limit=cfg.kfp_cpu_limit,
                        memory_request=cfg.kfp_memory_request_gb, memory_limit=cfg.kfp_memory_limit_gb)
    accelerator = accelerator_resource(cfg)
    if accelerator:
        spec.accelerator.type = accelerator
        spec.accelerator.count = cfg.kfp_accelerator_count
    return spec if spec.ByteSize() else None


def submit_time_parameters(cfg: PipelineConfig, registry_uri: str) -> dict[str, RuntimeParameter]:
    """Exec property -> the pipeline parameter that replaces it in the compiled package, so a run
    can set it without a recompile (the pipeline root is a run option of KFP and Vertex already).
    Epochs live in the trainers' custom_config, which TFX passes as one JSON string: the whole
    config is the parameter, and `deploy --param epochs=N` edits it (pipelines.kubeflow)."""
    return {
        "source": RuntimeParameter(name="source", ptype=str, default=cfg.source),
        "registry_uri": RuntimeParameter(name="registry_uri", ptype=str, default=registry_uri),
        "custom_config": RuntimeParameter(name=TRAINER_CONFIG_PARAMETER, ptype=str,
                                          default=json.dumps(cfg.trainer_config(), sort_keys=True)),
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
                         "update pipelines/runners.py:submit_time_parameters")


def compile_kubeflow(cfg: PipelineConfig, output_path: str, registry_uri: str) -> str:
    """Writes the KFP v2 pipeline package (IR YAML) to `output_path`: run parameters with their
    defaults, trainers placed on their accelerator nodes (pipelines.kubeflow.post_compile)."""
    validation.check_registry_uri(registry_uri, "the cluster's registry URI")  # it goes into pipeline.yaml
    kcfg = kubeflow_config(cfg)
    pipeline = create_pipeline(kcfg, registry_uri=registry_uri, pipeline_root=cfg.kfp_pipeline_root,
                               beam_pipeline_args=["--direct_running_mode=multi_processing",
                                                   "--direct_num_workers=0", beam_worker_image_arg(cfg)])
    parameters = submit_time_parameters(kcfg, registry_uri)
    parameterize(pipeline, parameters)
    resources = trainer_resources(cfg)
    for component in pipeline.components:
        if component.id in TRAINER_IDS and resources is not None:
            component.with_platform_config(resources)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        # Pipeline spec 2.1 (what kfp 2.x itself writes): TFX 1.16 cannot write a 2.0 package
        # with pipeline parameters (its YAML writer reads `parameterType`, a 2.1 field).
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=cfg.image, use_pipeline_spec_2_1=True),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
        output_filename=os.path.basename(output_path))
    runner.run(pipeline)
    # TFX keeps parameter defaults only in the run config, which its YAML writer drops.
    post_compile(output_path, cfg, TRAINER_IDS, {p.name: p.default for p in parameters.values()})
    return output_path


# --- summary of the latest local run, read from the metadata store ---------------------------
def _store(cfg: PipelineConfig):
    from ml_metadata.metadata_store import metadata_store

    return metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(cfg.metadata_path))


def run_context(store, run_id: str | None = None):
    """The pipeline_run context of `run_id`, or of the latest run."""
    runs = store.get_contexts_by_type("pipeline_run")
    if run_id:
        runs = [c for c in runs if c.name == run_id]
        if not runs:
            raise ValueError(f"no pipeline run {run_id!r} in this metadata store")
    if not runs:
        raise ValueError("no pipeline run in this metadata store yet: run the pipeline first")
    return max(runs, key=lambda c: c.id)


def run_artifact(store, run, type_name: str):
    """The newest artifact of `type_name` in the run (cached executions attribute theirs too)."""
    try:
        type_id = store.get_artifact_type(type_name).id
    except Exception:  # the type is registered only once some run produced it
        return None
    found = [a for a in store.get_artifacts_by_context(run.id) if a.type_id == type_id]
    return max(found, key=lambda a: a.id) if found else None


def _custom(artifact, key: str) -> Any:
    value = artifact.custom_properties.get(key)
    if value is None:
        return None
    return value.string_value or value.int_value or value.double_value


def stage_seconds(store, run) -> dict[str, float]:
    """Wall time of each node's execution in the run, by node id, in execution order."""
    times: dict[str, float] = {}
    for execution in sorted(store.get_executions_by_context(run.id), key=lambda e: e.id):
        name = recovery.node_id(store, execution.id) or str(execution.type)
        times[name] = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
    return times


def load_evaluation(cfg: PipelineConfig, run_id: str | None = None) -> tuple[dict[str, Any], str]:
    """A run's evaluation.json content and its folder (the latest run by default)."""
    store = _store(cfg)
    run = run_context(store, run_id)
    artifact = run_artifact(store, run, "ModelEvaluation")
    if artifact is None:
        raise ValueError(f"pipeline run {run.name} has no evaluation (did it stop before the bake-off?)")
    with open(os.path.join(artifact.uri, "evaluation.json"), encoding="utf-8") as f:
        return json.load(f), artifact.uri


def summarize(cfg: PipelineConfig, run_id: str | None = None) -> dict[str, Any]:
    from components.bakeoff_evaluator import report

    store = _store(cfg)
    run = run_context(store, run_id)
    evaluation, evaluation_dir = load_evaluation(cfg, run.name)
    pushed = run_artifact(store, run, "PushedModel")
    drift = run_artifact(store, run, "ExampleAnomalies")  # DriftValidator's, the newest of the run
    decision = evaluation["decision"]
    return {
        "run_id": run.name,
        "winner": decision["winner"],
        "blessed": decision["blessed"],
        "reasons": decision["reasons"],
        "accuracy": {name: c["metrics"]["accuracy"] for name, c in evaluation["candidates"].items()},
        "table": report.render_table(evaluation),
        "report": os.path.join(evaluation_dir, "report.html"),
        "evaluation": os.path.join(evaluation_dir, "evaluation.json"),
        "data_review": (_custom(drift, "review_html") or None) if drift else None,
        "artifacts": cfg.pipeline_root,
        "metadata": cfg.metadata_path,
        "registry": cfg.resolved_registry_uri(),
        "registered_version": (_custom(pushed, "registered_version") or None) if pushed else None,
        "stage_seconds": stage_seconds(store, run),
        "config": dataclasses.asdict(cfg),
    }
