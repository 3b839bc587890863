"""The whole DAG under LocalDagRunner on a real MNIST subset, then runs that must stop early.

One pipeline root and metadata store serve all three runs, so the later runs take ExampleGen
and StatisticsGen from the cache, exactly as a user's reruns would.
"""

from __future__ import annotations

import json
import struct
from collections import Counter

import numpy as np
import pytest
import tensorflow_data_validation as tfdv
from ml_metadata.proto import metadata_store_pb2
from tfx.types import standard_artifacts

from components import examples as example_data
from components.data_gate.executor import DataAnomaliesError
from components.mnist_example_gen.idx import IdxFormatError
from components.registry import MlflowRegistry
from conftest import FAST_TRAINING, bakeoff_runs, load_champion_pyfunc, read_live_page
from pipelines import local_runner, recovery, ui
from pipelines.config import load_config
from pipelines.pipeline import TRAINER_IDS
from pipelines.summary import open_store

Execution = metadata_store_pb2.Execution
SUBSET = {"train_limit": 2500, "eval_ratio": 0.2, "test_limit": 1000, "epochs": 1, **FAST_TRAINING}


@pytest.fixture(scope="module")
def e2e(mnist_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    cfg = load_config(output_root=str(root / "out"), source=str(mnist_dir),
                         cache_dir=str(root / "cache"), min_metric=0.5,
                         registered_model_name="mnist-e2e", beam_direct_running_mode="in_memory", **SUBSET)
    summary = local_runner.run_local(cfg)
    return cfg, summary, root


def _trainer_executions(cfg) -> int:
    store = open_store(cfg)
    return sum(1 for e in store.get_executions()
               for c in store.get_contexts_by_execution(e.id)
               if c.type == "node" and c.name.split(".")[-1] in TRAINER_IDS)


def test_run_registers_the_winner_as_champion(e2e):
    cfg, summary, _ = e2e
    registry = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name)
    versions = registry.versions()
    assert [v.version for v in versions] == ["1"] == [summary["registered_version"]]
    assert registry.champion().version == "1"
    with open(summary["evaluation"]) as f:
        evaluation = json.load(f)
    assert evaluation["data"]["examples"] == SUBSET["test_limit"]
    assert set(summary["accuracy"]) == {"keras_model", "pytorch_model"}
    assert summary["winner"] == evaluation["decision"]["winner"]
    assert set(summary["stage_seconds"]) >= {"MnistExampleGen", "StatisticsGen", *TRAINER_IDS,
                                             "BakeoffEvaluator", "RegistryPusher"}

    # Serving check: the champion, loaded by alias, scores what the evaluator recorded.
    model = load_champion_pyfunc(registry)
    images, labels = example_data.load_split(_run_examples(evaluation), "test")
    accuracy = float((np.asarray(model.predict(images)).argmax(1) == labels).mean())
    assert accuracy == summary["accuracy"][summary["winner"]]


def _run_examples(evaluation: dict) -> standard_artifacts.Examples:
    """The Examples artifact the run's evaluation read (evaluation.json's data.examples_uri)."""
    examples = standard_artifacts.Examples()
    examples.uri = evaluation["data"]["examples_uri"]
    examples.split_names = '["train", "eval", "test"]'
    return examples


def test_statistics_count_every_label_exactly(e2e):
    """StatisticsGen ran with TFDV's sketch-based top-k (one combiner with the other statistics, not
    a Beam graph of its own per split), and for the label's ten values the sketch is exact: each
    split's label counts and distinct labels are the split's own."""
    cfg, summary, _ = e2e
    store = open_store(cfg)
    first_run = min(store.get_contexts_by_type("pipeline_run"), key=lambda c: c.id)
    [execution] = [e for e in store.get_executions_by_context(first_run.id)
                   if recovery.node_id(store, e.id) == "StatisticsGen"]
    assert json.loads(execution.custom_properties["stats_options_json"].string_value)[
        "_use_sketch_based_topk_uniques"] is True
    [statistics] = [a for a in store.get_artifacts_by_context(first_run.id)
                    if store.get_artifact_types_by_id([a.type_id])[0].name == "ExampleStatistics"
                    and "StatisticsGen" in a.uri]
    with open(summary["evaluation"]) as f:
        examples = _run_examples(json.load(f))
    for split in ("train", "eval", "test"):
        _, labels = example_data.load_split(examples, split)
        stats = tfdv.load_stats_binary(f"{statistics.uri}/Split-{split}/FeatureStats.pb").datasets[0]
        label = tfdv.get_feature_stats(stats, tfdv.FeaturePath(["label"])).string_stats
        assert {int(v.value): v.frequency for v in label.top_values} == dict(Counter(labels.tolist())), split
        assert label.unique == len(set(labels.tolist())), split


def test_the_bakeoff_is_tracked_in_mlflow_and_the_version_links_to_it(e2e):
    cfg, summary, _ = e2e
    runs = bakeoff_runs(cfg.resolved_registry_uri(), cfg.registered_model_name)
    assert sorted(runs) == ["bakeoff", "keras_model", "pytorch_model"]
    assert {r.data.tags["pipeline_run_id"] for r in runs.values()} == {summary["run_id"]}
    assert {runs[n].data.params["framework"] for n in ("keras_model", "pytorch_model")} == {"keras", "pytorch"}
    champion = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name).champion()
    assert champion.tags["training_run_id"] == runs[summary["winner"]].info.run_id
    assert champion.tags["evaluation_run_id"] == runs["bakeoff"].info.run_id


def test_the_mlflow_ui_and_tensorboard_show_the_bakeoff(e2e, tmp_path):
    """`make ui` on the run, read in headless Chromium as a person sees it: the experiment page
    lists both trainings and the evaluation, the version page names the winner's runs, and
    TensorBoard lists both trainers' logs."""
    cfg, summary, root = e2e
    shots = root / "screenshots"
    shots.mkdir(exist_ok=True)
    with ui.open_ui(cfg, summary["run_id"]) as pages:
        experiment = read_live_page(pages["runs (trainings, evaluation)"], tmp_path / "experiment",
                                    expect=["keras_model", "pytorch_model", "bakeoff"],
                                    screenshot=shots / "mlflow-experiment.png")
        curves = read_live_page(pages["training curves, side by side"], tmp_path / "curves",
                                expect=["Step", "examples_per_second"], screenshot=shots / "mlflow-curves.png")
        version = read_live_page(pages["registered version"], tmp_path / "version",
                                 expect=["won the bake-off", "training_run_id"],
                                 screenshot=shots / "mlflow-version.png")
        board = read_live_page(pages["TensorBoard (training curves)"], tmp_path / "board",
                               expect=["keras_trainer", "pytorch_trainer"], screenshot=shots / "tensorboard.png")
    assert all(name in experiment for name in ("keras_model", "pytorch_model", "bakeoff")), experiment[:2000]
    assert "Step" in curves and "keras_model (accuracy)" in curves and "examples_per_second" in curves, curves[:3000]
    assert f"{summary['winner']} won the bake-off" in version and "training_run_id" in version, version[:2000]
    assert "keras_trainer" in board and "pytorch_trainer" in board, board[:2000]


def test_anomalies_stop_the_run_before_training(e2e):
    cfg, _, root = e2e
    # A schema that allows digits 0-8 only: the real label 9 is an anomaly.
    schema = (root / "schema.pbtxt")
    schema.write_text(open(cfg.schema_path).read().replace("max: 9", "max: 8"))
    trainers_before = _trainer_executions(cfg)
    with pytest.raises(DataAnomaliesError, match=r"feature 'label'.*[Oo]ut-of-range"):
        local_runner.run_local(cfg.replace(schema_path=str(schema)))
    assert _trainer_executions(cfg) == trainers_before
    assert [v.version for v in MlflowRegistry(cfg.resolved_registry_uri(),
                                              cfg.registered_model_name).versions()] == ["1"]


def test_corrupted_idx_fails_ingest_and_pushes_nothing(e2e, corrupt_source):
    cfg, _, root = e2e
    name = "train-labels-idx1-ubyte"
    folder = corrupt_source(name, struct.pack(">II", 0x00000803, 60000) + bytes(60000))
    with pytest.raises(Exception, match=rf"{name}") as err:
        local_runner.run_local(cfg.replace(source=str(folder), cache_dir=str(root / "cache-corrupt")))
    assert "checksum mismatch" in str(err.value) or isinstance(err.value, IdxFormatError)
    assert [v.version for v in MlflowRegistry(cfg.resolved_registry_uri(),
                                              cfg.registered_model_name).versions()] == ["1"]


def _node_states(cfg, summary) -> dict[str, list[int]]:
    """node id -> the states of its executions in the run of `summary`."""
    from pipelines import recovery

    store = open_store(cfg)
    (run,) = [c for c in store.get_contexts_by_type("pipeline_run") if c.name == summary["run_id"]]
    found: dict[str, list[int]] = {}
    for e in store.get_executions_by_context(run.id):
        found.setdefault(recovery.node_id(store, e.id), []).append(e.last_known_state)
    return found


# Blessed whatever the champion: the rule asks only not to be significantly worse, at an alpha
# no difference on these examples reaches (the forced "blessed" outcome).
NEVER_WORSE = {"champion_policy": "not_significantly_worse", "champion_alpha": 1e-12}


def test_second_run_with_two_seeds_is_judged_against_the_champion(e2e):
    """Issue #15: `seeds` trains each framework per seed; one evaluation scores all four models and
    the champion; the frameworks are compared across seeds and the registry's candidate is the
    best single model of the leading framework; forced to be blessed, it becomes version 2."""
    cfg, first, _ = e2e
    registry = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name)
    before = registry.champion()
    # New training seeds: the trainers, the evaluator and the pusher run again; data steps are cached.
    summary = local_runner.run_local(cfg.replace(seeds=[7, 8], **NEVER_WORSE))
    with open(summary["evaluation"]) as f:
        evaluation = json.load(f)
    seeded = {f"{framework}_model_seed{seed}" for framework in ("keras", "pytorch") for seed in (7, 8)}
    assert set(evaluation["candidates"]) == seeded | {"champion"}
    assert {evaluation["candidates"][name]["seed"] for name in seeded} == {7, 8}
    assert set(summary["stage_seconds"]) >= {n.replace("_model", "_trainer") for n in seeded}
    d = evaluation["decision"]
    seeds = d["across_seeds"]
    lead = seeds["frameworks"][seeds["winner"]]
    accuracy = {n: c["metrics"]["accuracy"] for n, c in evaluation["candidates"].items()}
    assert lead["mean"] == pytest.approx(np.mean([accuracy[n] for n in lead["models"]]))
    assert d["winner"] == lead["best_model"] == max(lead["models"], key=lambda n: (accuracy[n], n == d["winner"]))
    assert "across seeds:" in summary["tie_statement"]
    with open(summary["report"]) as f:
        report = f.read()
    assert 'id="seed-points"' in report and "seed 7:" in report
    assert evaluation["candidates"]["champion"]["version"] == before.version
    assert evaluation["champion"]["description"] == f"version {before.version} of {cfg.registered_model_name}"
    # The champion is re-scored on the same examples and reproduces its recorded accuracy.
    assert accuracy["champion"] == first["accuracy"][first["winner"]]
    assert sum("champion" in (t["first"], t["second"]) for t in evaluation["comparisons"]) == 4
    assert d["blessed"] and summary["promoted"] and summary["registered_version"] == "2"
    champion_after = registry.champion()
    assert champion_after.version == "2" and champion_after.tags["replaced_version"] == before.version
    assert json.loads(champion_after.tags["across_seeds"])["winner_framework"] == seeds["winner"]


def test_a_rollback_sticks_through_an_unrelated_commit_and_a_rerun(e2e, monkeypatch, capsys):
    """Issue #26: run (version 1), a new champion (version 2), `registry rollback 1`, an unrelated
    commit, the second command again. Before, every stage was cached but the pusher (its code
    revision had changed), which adopted version 2 and promoted it again: the rollback silently
    undone. Now the rollback is a new champion state: the run re-evaluates against version 1, the
    pusher adopts version 2, refuses it as rejected, and the summary says why."""
    from pipelines import cli

    cfg, _, _ = e2e
    registry = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name)
    assert registry.champion().version == "2"
    argv = ["registry", "--output-root", cfg.output_root, "--registered-model-name", cfg.registered_model_name]
    assert cli.main(argv + ["rollback", "1", "--reason", "canary errors"]) == 0
    assert "version 2 is rejected" in capsys.readouterr().out
    monkeypatch.setenv("CODE_REVISION", "an-unrelated-commit")
    summary = local_runner.run_local(cfg.replace(seeds=[7, 8], **NEVER_WORSE))
    states = _node_states(cfg, summary)
    assert all(states[t] == [Execution.CACHED] for t in states if "_trainer" in t), states
    # A changed champion means a new evaluation, not the cached one against version 2's predecessor.
    assert states["ChampionResolver"] == [Execution.COMPLETE] and states["BakeoffEvaluator"] == [Execution.COMPLETE]
    with open(summary["evaluation"]) as f:
        assert json.load(f)["candidates"]["champion"]["version"] == "1"
    assert summary["blessed"] and summary["registered_version"] == "2" and not summary["promoted"]
    assert summary["push_reason"].startswith("version 2 is rejected (rolled back to version 1: canary errors)")
    assert registry.champion().version == "1" and [v.version for v in registry.versions()] == ["1", "2"]
    # The same command once more, nothing changed: everything but the resolution comes from the cache.
    again = _node_states(cfg, local_runner.run_local(cfg.replace(seeds=[7, 8], **NEVER_WORSE)))
    assert again["ChampionResolver"] == [Execution.COMPLETE]
    assert all(again[n] == [Execution.CACHED] for n in again if n not in ("ChampionResolver", "SameChampion")), again


def test_a_run_that_is_not_blessed_pushes_nothing(e2e):
    """The forced "not blessed" outcome: a minimum no model reaches; nothing registered, the
    champion stays, the summary says why."""
    cfg, _, _ = e2e
    registry = MlflowRegistry(cfg.resolved_registry_uri(), cfg.registered_model_name)
    summary = local_runner.run_local(cfg.replace(min_metric=0.9999))
    assert not summary["blessed"] and summary["registered_version"] is None and not summary["promoted"]
    assert any("is below the minimum 0.9999" in reason for reason in summary["reasons"])
    assert registry.champion().version == "1" and [v.version for v in registry.versions()] == ["1", "2"]
