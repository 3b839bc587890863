"""What a local run did, read back from its ML Metadata store: the decision, the accuracies,
where the report and the data review are, and each stage's wall time."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from tfx import v1 as tfx
from tfx.dsl.io import fileio

from components import artifacts
from pipelines import recovery
from pipelines.config import PipelineConfig


def open_store(cfg: PipelineConfig):
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
    store = open_store(cfg)
    run = run_context(store, run_id)
    artifact = run_artifact(store, run, "ModelEvaluation")
    if artifact is None:
        raise ValueError(f"pipeline run {run.name} has no evaluation (did it stop before the bake-off?)")
    return read_evaluation(artifact.uri), artifact.uri


def read_evaluation(evaluation_dir: str) -> dict[str, Any]:
    """evaluation.json of an evaluation folder, local or on an object store."""
    with fileio.open(os.path.join(evaluation_dir, artifacts.EVALUATION_FILE), "r") as f:
        return json.load(f)


def decision_summary(evaluation: dict[str, Any], evaluation_dir: str) -> dict[str, Any]:
    """What the summary says of the bake-off, from its evaluation (any runner's)."""
    from components.bakeoff_evaluator import report

    decision = evaluation["decision"]
    return {
        "winner": decision["winner"],
        "blessed": decision["blessed"],
        "reasons": decision["reasons"],
        "statistical_tie": decision.get("statistical_tie"),
        "tie_statement": report.tie_statement(evaluation),
        "accuracy": {name: c["metrics"]["accuracy"] for name, c in evaluation["candidates"].items()},
        "table": report.render_table(evaluation),
        "report": os.path.join(evaluation_dir, artifacts.REPORT_FILE),
        "evaluation": os.path.join(evaluation_dir, artifacts.EVALUATION_FILE),
        "tracking": evaluation.get("tracking"),
    }


def summarize(cfg: PipelineConfig, run_id: str | None = None) -> dict[str, Any]:
    store = open_store(cfg)
    run = run_context(store, run_id)
    evaluation, evaluation_dir = load_evaluation(cfg, run.name)
    pushed = run_artifact(store, run, "PushedModel")
    drift = run_artifact(store, run, "ExampleAnomalies")  # DriftValidator's, the newest of the run
    return {
        "run_id": run.name,
        **decision_summary(evaluation, evaluation_dir),
        "data_review": (_custom(drift, artifacts.REVIEW_HTML) or None) if drift else None,
        "artifacts": cfg.pipeline_root,
        "metadata": cfg.metadata_path,
        "registry": cfg.resolved_registry_uri(),
        "registered_version": (_custom(pushed, "registered_version") or None) if pushed else None,
        "promoted": bool(_custom(pushed, "champion")) if pushed else False,
        "push_reason": (_custom(pushed, "reason") or "") if pushed else "",
        "champion_resolved": evaluation.get("champion", {}).get("description", ""),
        "stage_seconds": stage_seconds(store, run),
        "config": dataclasses.asdict(cfg),
    }
