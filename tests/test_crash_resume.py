"""Crash and resume, reruns, and three runs against one registry and metadata store.

One output root (pipeline root, ML Metadata, embedded MLflow registry) serves a chain of real
local runs, each `python -m pipelines.cli run` in its own process:

1. attempt 1 is killed with SIGKILL while MnistExampleGen runs (nothing is cached yet); attempt 2
   resumes and is killed while pytorch_trainer trains (TensorBoard has written into its run);
   attempt 3 while RegistryPusher runs, after it registered the version and before it finished.
   Each restart must redo the killed stage from scratch and take the stages that had finished
   from the cache (checked in ML Metadata: CACHED executions, not timing). The other stages
   resume through the same code (the recovery reaps whatever execution was left RUNNING), so
   killing them too would repeat these checks at a minute each;
2. attempt 4 finishes;
3. the same run again: the champion is resolved anew and is now the version attempt 7 promoted,
   so the drift check, the evaluation and the push run again against it (and adopt that same
   version: no new one); once more, and every stage but the resolution is cached;
4. the same run on changed data with a minimum no model reaches: a new decision is recorded, not
   blessed, nothing pushed; the metadata store has no execution left running.

Every run has secrets planted in its environment (registry password and token, a cloud key) and
all of TensorFlow's logging on: none of them may appear in the runs' logs or in any file they wrote.

The time each restart takes to get back to where it was killed is printed (pytest -s).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from ml_metadata.proto import metadata_store_pb2

from components.registry import SOURCE_MODEL_TAG, MlflowRegistry
from conftest import FAST_TRAINING
from pipelines import recovery, revision, summary
from pipelines.config import REPO_ROOT, load_config
from tests.test_secrets import SECRET_VARIABLES, files_holding
from trainers import machine

Execution = metadata_store_pb2.Execution
KILL_ORDER = ("MnistExampleGen", "pytorch_trainer", "RegistryPusher")
SUBSET = {"train_limit": 2000, "test_limit": 800, "eval_ratio": 0.2, "epochs": 1, "min_metric": 0.5,
          **FAST_TRAINING}


PLANTED = {name: f"planted-secret-{secrets.token_hex(12)}" for name in SECRET_VARIABLES}


def _start(config: Path, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PLANTED, MLFLOW_TRACKING_USERNAME="pipeline-user", PYTHONPATH=str(REPO_ROOT),
               TF_CPP_MIN_LOG_LEVEL="0")
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "pipelines", "run", "--config", str(config)],
                                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def _execution_dirs(pipeline_root: Path, node: str) -> set[Path]:
    return {d for d in pipeline_root.glob(f"{node}/*/*") if d.is_dir() and d.name.isdigit()}


def _registered_versions(registry_db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{registry_db}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("SELECT count(*) FROM model_versions").fetchone()[0]
    except sqlite3.Error:  # not created yet, or being written
        return 0


def _in_stage(cfg, node: str, before: set[Path]) -> Path | None:
    """The output folder of `node`'s new execution once it is far enough in to have partial output."""
    new = _execution_dirs(Path(cfg.pipeline_root), node) - before
    if not new:
        return None
    out = max(new, key=lambda d: int(d.name))
    if node.endswith("_trainer"):  # training has begun: TensorBoard has written into model_run
        run_dirs = list(Path(cfg.pipeline_root, node, "model_run", out.name).rglob("*"))
        return out if any(p.is_file() for p in run_dirs) else None
    if node == "RegistryPusher":  # the version is registered, the pusher has not finished
        return out if _registered_versions(Path(cfg.output_root, "registry", "mlflow.db")) else None
    return out


def _kill_during(cfg, config: Path, log: Path, node: str, timeout_s: float = 600) -> tuple[float, Path]:
    before = _execution_dirs(Path(cfg.pipeline_root), node)
    started, launched_at = time.monotonic(), time.time()
    proc = _start(config, log)
    while (out := _in_stage(cfg, node, before)) is None:
        if proc.poll() is not None:
            pytest.fail(f"the run ended (rc {proc.returncode}) before {node} ran:\n{log.read_text()[-4000:]}")
        if time.monotonic() - started > timeout_s:
            proc.kill()
            pytest.fail(f"{node} did not start within {timeout_s} s")
        time.sleep(0.05)
    if node not in ("RegistryPusher",) and not node.endswith("_trainer"):
        time.sleep(0.3)  # let it write something
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return launched_at, out


def _run_to_end(config: Path, log: Path) -> tuple[float, float]:
    """(when it was launched, seconds it took)"""
    started, launched_at = time.monotonic(), time.time()
    proc = _start(config, log)
    if proc.wait(timeout=900):
        pytest.fail(f"the run failed:\n{log.read_text()[-4000:]}")
    return launched_at, time.monotonic() - started


def _seconds_to_restart(store, execution_id: int, launched_at: float) -> float:
    """From the relaunch to the start of the killed stage's new execution."""
    (execution,) = store.get_executions_by_id([execution_id])
    return execution.create_time_since_epoch / 1000 - launched_at


def _states_by_node(store, run) -> dict[str, list[tuple[int, int]]]:
    """node id -> [(execution id, state)] of the run."""
    found: dict[str, list[tuple[int, int]]] = {}
    for e in store.get_executions_by_context(run.id):
        found.setdefault(recovery.node_id(store, e.id), []).append((e.id, e.last_known_state))
    return found


def _all_inputs_complete(store, run) -> None:
    """What the run's executions read was published by an execution that finished: a killed
    execution's partial output is never an input."""
    for execution in store.get_executions_by_context(run.id):
        events = [ev for ev in store.get_events_by_execution_ids([execution.id]) if ev.type == ev.INPUT]
        for event in events:
            producers = [p for p in store.get_events_by_artifact_ids([event.artifact_id]) if p.type == p.OUTPUT]
            for producer in producers:
                (made_by,) = store.get_executions_by_id([producer.execution_id])
                assert made_by.last_known_state in (Execution.COMPLETE, Execution.CACHED), made_by


@pytest.mark.timeout(1800)
def test_killed_runs_resume_reruns_are_cached_and_three_runs_stay_consistent(mnist_dir, tmp_path, capsys):
    root = tmp_path / "out"
    values = {"output_root": str(root), "source": str(mnist_dir), "cache_dir": str(tmp_path / "cache"),
              "registered_model_name": "mnist-crash", **SUBSET}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(values))
    cfg = load_config(str(config))
    log = tmp_path / "runs.log"
    registry = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name)
    report = []

    killed: list[tuple[str, int, Path]] = []
    for i, node in enumerate(KILL_ORDER):
        launched_at, partial = _kill_during(cfg, config, log, node)
        store = summary.open_store(cfg)
        run = summary.run_context(store)
        states = _states_by_node(store, run)
        execution_id = int(partial.name)
        # Killed while running: ML Metadata still says RUNNING, the partial folder is there.
        assert (execution_id, Execution.RUNNING) in states[node], states
        assert partial.exists()
        if killed:  # this attempt resumed the previous one
            previous_node, previous_id, previous_partial = killed[-1]
            (reaped,) = store.get_executions_by_id([previous_id])
            assert reaped.last_known_state == Execution.FAILED
            assert "interrupted" in reaped.custom_properties[recovery.REAPED_PROPERTY].string_value
            assert not previous_partial.exists(), "the killed stage's partial output was left behind"
            # The killed stage ran again from scratch in this attempt and finished ...
            assert [s for _, s in states[previous_node]] == [Execution.COMPLETE], states
            assert all(eid != previous_id for eid, _ in states[previous_node])
            # ... and every stage that had finished before came from the cache.
            for done in KILL_ORDER[:i - 1]:
                assert [s for _, s in states[done]] == [Execution.CACHED], (done, states)
            _all_inputs_complete(store, run)
            report.append((previous_node, _seconds_to_restart(store, states[previous_node][0][0], launched_at)))
        killed.append((node, execution_id, partial))
        # Never a partial version or an alias on one: only the pusher registers, in one call.
        versions = registry.versions()
        assert len(versions) == (1 if node == "RegistryPusher" else 0)
    # The pusher was killed once its version existed: before or after it moved the alias (a few
    # milliseconds apart). After: the champion changed, and the final attempt judges against it.
    promoted_before_the_kill = registry.champion() is not None

    launched_at, total = _run_to_end(config, log)
    store = summary.open_store(cfg)
    first = summary.run_context(store)
    states = _states_by_node(store, first)
    assert [s for _, s in states["RegistryPusher"]] == [Execution.COMPLETE]
    judged_again = ("BakeoffEvaluator",) if promoted_before_the_kill else ()
    for done in KILL_ORDER[:-1]:
        expected = Execution.COMPLETE if done in judged_again else Execution.CACHED
        assert [s for _, s in states[done]] == [expected], (done, promoted_before_the_kill, states)
    _all_inputs_complete(store, first)
    # The resumed pusher adopted the version its killed attempt had registered: no duplicate.
    (version,) = registry.versions()
    assert registry.champion().version == version.version
    assert version.tags[SOURCE_MODEL_TAG].startswith(str(Path(cfg.pipeline_root)))
    report.append(("RegistryPusher", _seconds_to_restart(store, states["RegistryPusher"][0][0], launched_at)))
    evaluation_1, _ = summary.load_evaluation(cfg)

    # Rerun on the same data and code: judged against the new champion (the same model: adopted,
    # nothing registered), then once more: every stage but the resolution cached.
    # (Had the alias moved before the kill, the final attempt was judged against it already.)
    first_rerun = () if promoted_before_the_kill else ("DriftValidator", "DataGate", "BakeoffEvaluator",
                                                       "RegistryPusher")
    for rerun, judged in ((2, first_rerun), (3, ())):
        _run_to_end(config, log)
        store = summary.open_store(cfg)
        run = summary.run_context(store)
        states = _states_by_node(store, run)
        assert [s for _, s in states["ChampionResolver"]] == [Execution.COMPLETE]
        for node in (*KILL_ORDER, "DriftValidator", "DataGate"):
            expected = Execution.COMPLETE if node in judged else Execution.CACHED
            assert [s for _, s in states[node]] == [expected], (rerun, node, states)
        assert [v.version for v in registry.versions()] == [version.version]
        assert registry.champion().version == version.version
    evaluation_2, _ = summary.load_evaluation(cfg)
    assert evaluation_2["candidates"]["champion"]["version"] == version.version

    # Changed data, and a minimum no model reaches: everything from ingest on runs again, the
    # decision is recorded, nothing is pushed.
    config.write_text(yaml.safe_dump({**values, "train_limit": 2400, "min_metric": 0.9999}))
    _run_to_end(config, log)
    store = summary.open_store(cfg)
    third = summary.run_context(store)
    states = _states_by_node(store, third)
    assert [s for _, s in states["MnistExampleGen"]] == [Execution.COMPLETE]
    assert [s for _, s in states["RegistryPusher"]] == [Execution.COMPLETE]
    evaluation_3, _ = summary.load_evaluation(cfg)
    assert evaluation_3 != evaluation_1
    decision = evaluation_3["decision"]
    assert evaluation_3["candidates"]["champion"]["version"] == version.version
    assert not decision["blessed"]
    pushed = summary.run_artifact(store, third, "PushedModel")
    assert pushed.custom_properties["pushed"].int_value == 0
    assert pushed.custom_properties["reason"].string_value == " | ".join(decision["reasons"])
    assert registry.champion().version == version.version
    # Four completed runs recorded (plus the killed attempts), none left running.
    assert len(store.get_contexts_by_type("pipeline_run")) == len(KILL_ORDER) + 4
    stuck = [e for e in store.get_executions() if e.last_known_state in recovery.RUNNING_STATES]
    assert not stuck, stuck
    assert len([e for e in store.get_executions() if e.last_known_state == Execution.FAILED]) == len(KILL_ORDER)
    # The trainers' cache key includes their code's fingerprint.
    (keras_exec,) = [store.get_executions_by_id([eid])[0] for eid, _ in states["keras_trainer"]]
    trainer_config = json.loads(keras_exec.custom_properties["custom_config"].string_value)
    assert trainer_config["code_version"] == revision.code_fingerprint()
    assert trainer_config["cpu_precision"] == machine.cpu_precision("auto")  # and what they compute in

    # No planted secret in the runs' logs or anything they wrote (the scan does find the
    # model's name, so it reads the real files).
    # The terminal's lines are in `log`; each run's own log file (INFO and all) under root/logs.
    run_logs = sorted((root / "logs").glob("run-*.log"))
    assert len(run_logs) == len(KILL_ORDER) + 4, run_logs  # one per run (named by time and pid)
    text = log.read_text(errors="replace") + "".join(p.read_text(errors="replace") for p in run_logs)
    assert "winner:" in text and "INFO" in text
    assert files_holding(root, [b"mnist-crash"])
    for name, value in PLANTED.items():
        assert value not in text, f"{name}'s value is in the runs' log"
    leaks = files_holding(root, [v.encode() for v in PLANTED.values()])
    assert not leaks, f"planted secrets found in {leaks}"

    with capsys.disabled():
        print("\nkilled stage -> seconds from the restart until it ran again")
        for node, seconds in report:
            print(f"  {node:<18} {seconds:6.1f}")
        print(f"  final attempt, start to end: {total:.1f} s")


def test_code_fingerprint_follows_the_trainers_source(tmp_path):
    for name in ("a.py", "b.py"):
        (tmp_path / name).write_text(f"# {name}\n")
    before = revision.code_fingerprint(str(tmp_path))
    assert revision.code_fingerprint(str(tmp_path)) == before
    (tmp_path / "b.py").write_text("# b.py, changed\n")
    assert revision.code_fingerprint(str(tmp_path)) != before


def test_a_second_local_run_on_the_same_output_root_is_refused(tmp_path):
    with recovery.exclusive_run(str(tmp_path)):
        holder = subprocess.run(
            [sys.executable, "-c", "import sys; from pipelines import recovery\n"
             "with recovery.exclusive_run(sys.argv[1]): pass", str(tmp_path)],
            cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True)
        assert holder.returncode != 0
        assert f"pid {os.getpid()}" in holder.stderr and str(tmp_path) in holder.stderr
    with recovery.exclusive_run(str(tmp_path)):  # released on exit
        pass
