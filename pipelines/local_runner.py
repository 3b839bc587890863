"""Running the DAG locally: LocalDagRunner and Beam's DirectRunner, one run at a time per output
root, after cleaning up what a killed earlier run left behind (pipelines/recovery.py)."""

from __future__ import annotations

import os
from typing import Any

from tfx import v1 as tfx
from tfx.dsl.compiler import compiler
from tfx.proto.orchestration import pipeline_pb2

from pipelines import beam_options, recovery, summary
from pipelines.config import PipelineConfig
from pipelines.pipeline import NEVER_CACHED, create_pipeline
from trainers import machine


def local_beam_args(cfg: PipelineConfig) -> list[str]:
    return beam_options.direct_args(cfg)


def local_pipeline(cfg: PipelineConfig, code_version: str = "") -> tfx.dsl.Pipeline:
    return create_pipeline(cfg, registry_uri=cfg.resolved_registry_uri(), pipeline_root=cfg.pipeline_root,
                           metadata_path=cfg.metadata_path, beam_pipeline_args=local_beam_args(cfg),
                           code_version=code_version, cpu_precision=machine.cpu_precision(cfg.train.cpu_bfloat16))


def compiled(pipeline: tfx.dsl.Pipeline) -> pipeline_pb2.Pipeline:
    """The pipeline's IR with caching off for the nodes that must run every time (TFX 1.16 gives
    every node the pipeline's caching setting)."""
    ir = compiler.Compiler().compile(pipeline)
    for node in ir.nodes:
        if node.pipeline_node.node_info.id in NEVER_CACHED:
            node.pipeline_node.execution_options.caching_options.enable_cache = False
    return ir


def run_local(cfg: PipelineConfig, code_version: str = "") -> dict[str, Any]:
    """Runs the pipeline with LocalDagRunner; one run at a time per output root. What an earlier
    run left unfinished (killed mid-stage) is marked failed and its partial outputs deleted
    first; finished stages of earlier runs come from the cache; the champion is resolved anew.
    `code_version` (pipelines/revision.py) comes from the caller; the revision recorded on a
    registered version from $CODE_REVISION."""
    os.makedirs(cfg.output_root, exist_ok=True)
    if not cfg.registry_uri:  # the embedded registry
        os.makedirs(cfg.registry_dir, exist_ok=True)
    with recovery.exclusive_run(cfg.output_root):
        if os.path.exists(cfg.metadata_path):
            recovery.reap_interrupted_executions(summary.open_store(cfg), cfg.pipeline_root)
        tfx.orchestration.LocalDagRunner().run_with_ir(compiled(local_pipeline(cfg, code_version)))
        return summary.summarize(cfg)
