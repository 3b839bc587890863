"""The bake-off in MLflow's tracking, beside the registry: one run per trained model and one for
the evaluation, in the experiment `<registered model>-bakeoff`, all tagged with the pipeline run id.

A trained model's run holds its trainer's settings (params), its per-epoch loss and accuracy on
train and eval (metrics by epoch, at the times the epochs ended), the device, wall time and
examples/s, its test scores from the bake-off, and its TensorBoard logs as artifacts. The
evaluation run holds every model's metrics, the decision and the report.

The evaluator writes these runs, not the trainers: it already holds the registry connection, so
the trainers need neither the tracking server's address and keys nor a tracking URI in their cache
key. The trainers record what a run needs beside their model (history.json, model_meta.json with
start time and per-epoch seconds); a model taken from the cache keeps the run it got when trained.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from components.registry import MlflowRegistry
from trainers.model_format import local_copy, read_model_meta

EXPERIMENT_SUFFIX = "-bakeoff"
MODEL_URI_TAG = "model_uri"  # the trained model's folder: one training run per model
PIPELINE_RUN_TAG = "pipeline_run_id"
TRAINING_RUN_TAG = "training_run_id"
EVALUATION_RUN_TAG = "evaluation_run_id"
HEADLINE_METRICS = ("accuracy", "macro_f1", "log_loss", "expected_calibration_error")
# MLflow's SQL stores keep a tag's value in a VARCHAR(5000) (PostgreSQL refuses longer ones).
TAG_VALUE_LIMIT = 5000


def fit_tag(value: str) -> str:
    cut = " … (cut: the whole text is in evaluation.json)"
    return value if len(value) <= TAG_VALUE_LIMIT else value[:TAG_VALUE_LIMIT - len(cut)] + cut


def flatten_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """Every candidate's headline metrics as flat MLflow metric names."""
    out = {f"{name}.{key}": float(c["metrics"][key])
           for name, c in evaluation["candidates"].items() for key in HEADLINE_METRICS}
    for t in evaluation["comparisons"]:
        out[f"mcnemar_p.{t['first']}.vs.{t['second']}"] = float(t["p_value"])
    return out


def run_link(experiment_id: str, run_id: str) -> str:
    """The run's page, relative to the MLflow UI's address (as the UI's own links are)."""
    return f"#/experiments/{experiment_id}/runs/{run_id}"


def training_params(meta: dict[str, Any]) -> dict[str, str]:
    """The trainer's settings and where it ran, as MLflow params (strings)."""
    params = {key: str(value) for key, value in meta.get("config", {}).items() if key != "code_version"}
    for key in ("framework", "format", "parameters", "device", "mixed_precision", "threads", "steps_per_epoch",
                "world_size"):
        if key in meta:
            params[key] = str(meta[key])
    return params


def epoch_metrics(history: dict[str, list[float]], started_at: float | None,
                  epoch_seconds: list[float]) -> list[tuple[str, float, int, int]]:
    """(name, value, timestamp ms, epoch) of each epoch's loss and accuracy, train and eval; stamped
    when the epoch ended where the trainer recorded it, else now."""
    now = int(time.time() * 1000)
    ends = [int((started_at + elapsed) * 1000) for elapsed in itertools.accumulate(epoch_seconds)] if started_at else []
    return [(name, float(value), ends[epoch] if epoch < len(ends) else now, epoch + 1)
            for name, values in history.items() for epoch, value in enumerate(values)]


class BakeoffTracking:
    """Writes the bake-off's runs into the registry's tracking store."""

    def __init__(self, registry: MlflowRegistry, pipeline_run_id: str) -> None:
        self.registry = registry
        self.client = registry.client
        self.pipeline_run_id = pipeline_run_id
        self.experiment_id = registry.experiment_id(EXPERIMENT_SUFFIX)

    def existing_training_run(self, model_uri: str) -> str | None:
        """The finished run of this trained model (a model from the cache was tracked when trained)."""
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.{MODEL_URI_TAG} = '{model_uri}' and "
                                                "attributes.status = 'FINISHED'", max_results=1)
        return found[0].info.run_id if found else None

    def log_training(self, name: str, candidate: dict[str, Any], meta: dict[str, Any],
                     scores: dict[str, float], tensorboard_dir: str | None) -> str:
        """One trained model's run (reused when this model already has one); returns its id."""
        from mlflow.entities import Metric, Param

        model_uri = candidate["uri"]
        existing = self.existing_training_run(model_uri)
        if existing:
            return existing
        training = candidate.get("training", {})
        started_at = meta.get("started_at")
        run = self.client.create_run(
            self.experiment_id, run_name=name, start_time=int(started_at * 1000) if started_at else None,
            tags={PIPELINE_RUN_TAG: self.pipeline_run_id, MODEL_URI_TAG: model_uri,
                  "framework": candidate["framework"], "candidate": name, "kind": "training",
                  "mlflow.note.content": f"{candidate['framework']} {candidate['model']} trained on "
                                         f"{candidate['device']}; test scores from the bake-off's evaluation"})
        run_id = run.info.run_id
        try:
            metrics = [Metric(n, v, t, step) for n, v, t, step in epoch_metrics(
                training.get("history", {}), started_at, meta.get("epoch_seconds", []))]
            now = int(time.time() * 1000)
            finals = {"train_seconds": training.get("seconds"),
                      "examples_per_second": training.get("examples_per_second"),
                      **{f"test_{key}": value for key, value in scores.items()}}
            metrics += [Metric(k, float(v), now, 0) for k, v in finals.items() if v is not None]
            params = [Param(k, v) for k, v in training_params(meta).items()]
            for start in range(0, max(len(metrics), len(params)), 100):  # MLflow's batch limits
                self.client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100])
            if tensorboard_dir:
                with local_copy(tensorboard_dir) as local:
                    self.client.log_artifacts(run_id, local, artifact_path="tensorboard")
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        ended = int((started_at + training["seconds"]) * 1000) if started_at and training.get("seconds") else None
        self.client.set_terminated(run_id, end_time=ended)
        return run_id

    def start_evaluation(self, evaluation: dict[str, Any], training_runs: dict[str, str]) -> str:
        """The evaluation's run, open: its files are logged once written (finish_evaluation)."""
        from mlflow.entities import Metric, Param

        decision = evaluation["decision"]
        tags = {PIPELINE_RUN_TAG: self.pipeline_run_id, "kind": "evaluation", "winner": decision["winner"],
                "blessed": str(decision["blessed"]).lower(),
                "statistical_tie": str(decision.get("statistical_tie", "unknown")).lower(),
                "decision_reasons": fit_tag(" | ".join(decision["reasons"])),
                "mlflow.note.content": fit_tag("\n\n".join(
                    [f"**Winner: {decision['winner']}**", *decision["reasons"],
                     *(f"- {name}: [training run]({run_link(self.experiment_id, run_id)})"
                       for name, run_id in training_runs.items())])),
                **{f"{TRAINING_RUN_TAG}.{name}": run_id for name, run_id in training_runs.items()}}
        run = self.client.create_run(self.experiment_id, run_name="bakeoff", tags=tags)
        now = int(time.time() * 1000)
        params = {"split": evaluation["data"]["split"], "examples": evaluation["data"]["examples"],
                  "corruptions_per_example": evaluation["robustness"]["corruptions_per_example"],
                  **{f"rule.{key}": value for key, value in decision["rule"].items()}}
        try:
            self.client.log_batch(run.info.run_id,
                                  metrics=[Metric(k, v, now, 0) for k, v in flatten_metrics(evaluation).items()],
                                  params=[Param(k, fit_tag(str(v))) for k, v in params.items()])
        except BaseException:
            self.client.set_terminated(run.info.run_id, status="FAILED")
            raise
        return run.info.run_id

    def start(self, evaluation: dict[str, Any], tensorboard_dirs: dict[str, str | None]) -> dict[str, Any]:
        """Every trained model's run (`tensorboard_dirs`: each candidate's Trainer logs, by name; a
        model already tracked keeps its run) and the evaluation's run, open: evaluation.json's
        `tracking` record."""
        training_runs = {name: self.log_training(name, c, read_model_meta(c["uri"]),
                                                 {k: c["metrics"][k] for k in HEADLINE_METRICS},
                                                 tensorboard_dirs.get(name))
                         for name, c in evaluation["candidates"].items() if name in tensorboard_dirs}
        evaluation_run = self.start_evaluation(evaluation, training_runs)
        return {"experiment_id": self.experiment_id, "evaluation_run_id": evaluation_run,
                "training_run_ids": training_runs, "tracking_uri": self.registry.uri}

    def fail(self, record: dict[str, Any]) -> None:
        self.client.set_terminated(record["evaluation_run_id"], status="FAILED")

    def finish(self, record: dict[str, Any], files: dict[str, str]) -> None:
        self.finish_evaluation(record["evaluation_run_id"], files)

    def finish_evaluation(self, run_id: str, files: dict[str, str]) -> None:
        """Logs the evaluation's files ({artifact name: text}: the report, evaluation.json) and ends its run."""
        try:
            for name, text in files.items():
                self.client.log_text(run_id, text, name)
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id)
