"""Running the DAG locally (LocalDagRunner + Beam DirectRunner) and compiling it for Kubeflow."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from kfp.pipeline_spec import pipeline_spec_pb2
from tfx import v1 as tfx

from pipelines.config import PipelineConfig
from pipelines.pipeline import TRAINER_IDS, create_pipeline

ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec

# Where the image (infra/Dockerfile) puts the project; compiled paths point inside the image.
IMAGE_PROJECT_DIR = "/pipeline"


def local_beam_args(cfg: PipelineConfig) -> list[str]:
    # FnApiRunner is the engine DirectRunner picks for batch pipelines; naming it stops Beam
    # >= 2.6x from first trying to download its Prism runner binary.
    return ["--runner=FnApiRunner", f"--direct_running_mode={cfg.beam_direct_running_mode}",
            f"--direct_num_workers={cfg.beam_direct_workers}"]


def local_pipeline(cfg: PipelineConfig) -> tfx.dsl.Pipeline:
    return create_pipeline(cfg, registry_uri=cfg.resolved_registry_uri(),
                           pipeline_root=cfg.pipeline_root, metadata_path=cfg.metadata_path,
                           beam_pipeline_args=local_beam_args(cfg))


def run_local(cfg: PipelineConfig) -> dict[str, Any]:
    os.makedirs(os.path.join(cfg.output_root, "registry"), exist_ok=True)
    tfx.orchestration.LocalDagRunner().run(local_pipeline(cfg))
    return summarize(cfg)


def kubeflow_config(cfg: PipelineConfig) -> PipelineConfig:
    """The config as the cluster sees it: paths inside the image, nothing of this machine."""
    return cfg.replace(schema_path=f"{IMAGE_PROJECT_DIR}/schema/schema.pbtxt",
                       cache_dir="/tmp/mnist-cache", output_root="/tmp/unused")


def trainer_resources(cfg: PipelineConfig) -> ResourceSpec | None:
    """What each trainer asks a Kubeflow node for (LocalDagRunner accepts no ResourceSpec)."""
    if cfg.kfp_gpus_per_trainer <= 0:
        return None
    return ResourceSpec(accelerator=ResourceSpec.AcceleratorConfig(
        type="nvidia.com/gpu", count=cfg.kfp_gpus_per_trainer))


def compile_kubeflow(cfg: PipelineConfig, output_path: str, registry_uri: str) -> str:
    """Writes the KFP v2 pipeline package (IR YAML) to `output_path`."""
    kcfg = kubeflow_config(cfg)
    pipeline = create_pipeline(kcfg, registry_uri=registry_uri, pipeline_root=cfg.kfp_pipeline_root,
                               beam_pipeline_args=["--direct_running_mode=multi_processing",
                                                   "--direct_num_workers=0"])
    resources = trainer_resources(cfg)
    for component in pipeline.components:
        if component.id in TRAINER_IDS and resources is not None:
            component.with_platform_config(resources)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=cfg.image),
        output_dir=os.path.dirname(os.path.abspath(output_path)),
        output_filename=os.path.basename(output_path))
    runner.run(pipeline)
    return output_path


# --- summary of the latest local run, read from the metadata store ---------------------------
def _store(cfg: PipelineConfig):
    from ml_metadata.metadata_store import metadata_store

    return metadata_store.MetadataStore(
        tfx.orchestration.metadata.sqlite_metadata_connection_config(cfg.metadata_path))


def _latest_artifact(store, type_name: str):
    artifacts = store.get_artifacts_by_type(type_name)
    return max(artifacts, key=lambda a: a.id) if artifacts else None


def _custom(artifact, key: str) -> Any:
    value = artifact.custom_properties.get(key)
    if value is None:
        return None
    return value.string_value or value.int_value or value.double_value


def stage_seconds(store) -> dict[str, float]:
    """Wall time of each node's latest execution, by node id, in execution order."""
    times: dict[str, float] = {}
    for execution in sorted(store.get_executions(), key=lambda e: e.id):
        nodes = [c.name.split(".")[-1] for c in store.get_contexts_by_execution(execution.id)
                 if c.type == "node"]
        name = nodes[0] if nodes else str(execution.type)
        times.pop(name, None)
        times[name] = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1000
    return times


def summarize(cfg: PipelineConfig) -> dict[str, Any]:
    store = _store(cfg)
    evaluation_artifact = _latest_artifact(store, "ModelEvaluation")
    pushed = _latest_artifact(store, "PushedModel")
    with open(os.path.join(evaluation_artifact.uri, "evaluation.json"), encoding="utf-8") as f:
        evaluation = json.load(f)
    decision = evaluation["decision"]
    return {
        "winner": decision["winner"],
        "blessed": decision["blessed"],
        "reasons": decision["reasons"],
        "accuracy": {name: c["metrics"]["accuracy"] for name, c in evaluation["candidates"].items()},
        "report": os.path.join(evaluation_artifact.uri, "report.html"),
        "evaluation": os.path.join(evaluation_artifact.uri, "evaluation.json"),
        "artifacts": cfg.pipeline_root,
        "metadata": cfg.metadata_path,
        "registry": cfg.resolved_registry_uri(),
        "registered_version": _custom(pushed, "registered_version") if pushed else None,
        "stage_seconds": stage_seconds(store),
        "config": dataclasses.asdict(cfg),
    }
