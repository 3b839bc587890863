"""`make ui`: the MLflow UI on the latest local run's tracking store and TensorBoard on its
trainers' logs, both on 127.0.0.1; prints where to look, serves until Ctrl-C, then stops both.

The MLflow UI is MLflow's own (`mlflow ui`) on the run's embedded SQLite store; when the run's
registry is a tracking server, that server already is the UI and only its pages are printed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from infra.services import process_group, wait_until
from pipelines import summary
from pipelines.config import PipelineConfig
from serving.server import free_ports, stop_on_signals


def tensorboard_logdirs(cfg: PipelineConfig, run_id: str | None = None) -> dict[str, str]:
    """{trainer id: its TensorBoard log folder} of the run (the Trainers' ModelRun artifacts)."""
    store = summary.open_store(cfg)
    run = summary.run_context(store, run_id)
    type_id = store.get_artifact_type("ModelRun").id
    # <pipeline root>/<trainer id>/model_run/<execution id>
    return {a.uri.rstrip("/").split("/")[-3]: a.uri
            for a in sorted(store.get_artifacts_by_context(run.id), key=lambda a: a.id) if a.type_id == type_id}


def mlflow_pages(base_url: str, evaluation: dict, registered: tuple[str, str] | None) -> dict[str, str]:
    """The MLflow UI's pages for the run: its experiment, its evaluation run, the registered version."""
    runs = evaluation.get("tracking")
    if not runs:
        return {"MLflow": base_url}
    experiment = f"{base_url}/#/experiments/{runs['experiment_id']}"
    pages = {"runs (trainings, evaluation)": f"{experiment}/runs",
             "training curves, side by side": f"{experiment}/runs?compareRunsMode=CHART",
             "evaluation run": f"{experiment}/runs/{runs['evaluation_run_id']}"}
    if registered:
        name, version = registered
        pages["registered version"] = f"{base_url}/#/models/{name}/versions/{version}"
    return pages


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def serving_process(command: list[str], ready_url: str, log_path: str, what: str) -> Iterator[None]:
    """`command` in its own process group (infra/services.py) until `ready_url` answers; stopped,
    the group by its id, when the block ends."""
    log = Path(log_path)
    with process_group(command, log) as process:
        wait_until(lambda: _answers(ready_url), process, log, what)
        yield


@contextlib.contextmanager
def mlflow_ui(tracking_uri: str, log_dir: str) -> Iterator[str]:
    """The MLflow UI for `tracking_uri`: the server itself, or `mlflow ui` on an embedded store."""
    if tracking_uri.startswith(("http://", "https://")):
        yield tracking_uri.rstrip("/")
        return
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with serving_process(command, f"{url}/health", os.path.join(log_dir, "mlflow-ui.log"), "the MLflow UI"):
        yield url


@contextlib.contextmanager
def tensorboard(logdirs: dict[str, str], log_dir: str) -> Iterator[str]:
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}"
    spec = ",".join(f"{name}:{path}" for name, path in sorted(logdirs.items()))
    command = [sys.executable, "-m", "tensorboard.main", "--logdir_spec", spec, "--host", "127.0.0.1",
               "--port", str(port)]
    with serving_process(command, url, os.path.join(log_dir, "tensorboard.log"), "TensorBoard"):
        yield url


@contextlib.contextmanager
def open_ui(cfg: PipelineConfig, run_id: str | None = None) -> Iterator[dict[str, str]]:
    """Both UIs on the run; yields {what: URL}."""
    run = summary.summarize(cfg, run_id)
    evaluation = summary.read_evaluation(os.path.dirname(run["evaluation"]))
    tracking_uri = evaluation.get("tracking", {}).get("tracking_uri") or run["registry"]
    registered = (cfg.registered_model_name, run["registered_version"]) if run["registered_version"] else None
    log_dir = os.path.join(cfg.output_root, "logs")
    os.makedirs(log_dir, exist_ok=True)
    with mlflow_ui(tracking_uri, log_dir) as base, tensorboard(tensorboard_logdirs(cfg, run_id), log_dir) as board:
        yield {**mlflow_pages(base, evaluation, registered), "TensorBoard (training curves)": board}


def serve(cfg: PipelineConfig, run_id: str | None = None) -> int:
    """Serves both UIs until Ctrl-C."""
    stop_on_signals()
    with open_ui(cfg, run_id) as pages:
        for what, url in pages.items():
            print(f"{what + ':':<36} {url}")
        print("Ctrl-C stops both.", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
    return 0
