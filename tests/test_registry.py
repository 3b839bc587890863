"""The registry for real: embedded SQLite and a real `mlflow server` on 127.0.0.1 (SQLite, and
PostgreSQL with an S3 bucket), concurrent
pushers in separate processes, rollback, the commands, the serving check for both frameworks,
and bad input."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import numpy as np
import pytest

from components import examples as example_data
from components.registry import MlflowRegistry, RegistryError, embedded_uri
from components.registry_pusher.executor_test import MODEL_NAME as NAME
from components.registry_pusher.executor_test import run_pusher
from conftest import bakeoff_runs, load_champion_pyfunc, mnist_file, run_evaluator, running_mlflow_server
from pipelines import cli, registry_commands
from pipelines.config import REPO_ROOT
from serving.server import free_ports


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def mlflow_server(request, tmp_path_factory):
    """A real MLflow tracking server: SQLite backend and a proxied local artifact store, or (as
    infra/mlflow deploys it) PostgreSQL and an S3 bucket (conftest.deployed_services)."""
    if request.param == "postgresql":
        yield request.getfixturevalue("deployed_services")[1]
        return
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (uri, _):
        yield uri


@pytest.fixture(scope="module")
def evaluations(small_examples, small_models, tmp_path_factory):
    """Two real evaluations, one won by the Keras model and one by the PyTorch model."""
    out = {}
    for framework, candidate in (("keras", "keras_model"), ("pytorch", "pytorch_model")):
        tmp = tmp_path_factory.mktemp(f"evaluation-{framework}")
        # The same export under two names: the bake-off's winner is this framework's model.
        models = {candidate: small_models[candidate], f"{framework}_twin": small_models[candidate]}
        evaluation, blessing = run_evaluator(small_examples, models, tmp, min_accuracy=0.0)
        out[framework] = (tmp, evaluation, blessing, models)
    return out


def _accuracy_through_alias(registry: MlflowRegistry, small_examples) -> float:
    model = load_champion_pyfunc(registry)
    images, labels = example_data.load_split(small_examples, "test")
    return float((np.asarray(model.predict(images)).argmax(1) == labels).mean())


@pytest.mark.parametrize("framework", ["keras", "pytorch"])
def test_serving_check_for_each_framework(evaluations, small_examples, tmp_path, framework):
    eval_tmp, evaluation, blessing, models = evaluations[framework]
    uri = embedded_uri(str(tmp_path))
    run_pusher(tmp_path, eval_tmp / "evaluation", blessing, models, uri)
    registry = MlflowRegistry(uri, NAME)
    champion = registry.champion()
    assert champion.tags["framework"] == framework
    winner = evaluation["decision"]["winner"]
    assert _accuracy_through_alias(registry, small_examples) == evaluation["candidates"][winner]["metrics"]["accuracy"]
    # The decision record: every candidate's metrics, the p-values, the rule.
    assert json.loads(champion.tags[f"metrics.{winner}"])["accuracy"] == champion.primary_value
    assert any(k.startswith("mcnemar.") for k in champion.tags)
    assert json.loads(champion.tags["decision_rule"])["primary_metric"] == "accuracy"


def test_pusher_against_a_real_server(evaluations, small_examples, tmp_path, mlflow_server):
    eval_tmp, evaluation, blessing, models = evaluations["pytorch"]
    pushed = run_pusher(tmp_path, eval_tmp / "evaluation", blessing, models, mlflow_server)
    assert pushed.get_int_custom_property("pushed") == 1
    registry = MlflowRegistry(mlflow_server, NAME)
    champion = registry.champion()
    assert champion.version == pushed.get_string_custom_property("registered_version")
    winner = evaluation["decision"]["winner"]
    assert _accuracy_through_alias(registry, small_examples) == evaluation["candidates"][winner]["metrics"]["accuracy"]


def test_bakeoff_runs_on_a_real_server(small_examples, small_models, tmp_path, mlflow_server):
    """Training and evaluation runs, their TensorBoard logs and report through the server's
    artifact store (a proxied folder, or S3), and the registered version's links to them."""
    name = "mnist-tracked"
    evaluation, blessing = run_evaluator(small_examples, small_models, tmp_path, min_accuracy=0.0,
                                         registry_uri=mlflow_server, model_name=name, pipeline_run_id="server-run")
    runs = bakeoff_runs(mlflow_server, name)
    assert sorted(runs) == ["bakeoff", "keras_model", "pytorch_model"]
    client = MlflowRegistry(mlflow_server, name).client
    for candidate in small_models:
        assert client.get_metric_history(runs[candidate].info.run_id, "val_accuracy")
        assert client.list_artifacts(runs[candidate].info.run_id, "tensorboard")
        assert runs[candidate].data.tags["pipeline_run_id"] == "server-run"
    assert "report.html" in {f.path for f in client.list_artifacts(runs["bakeoff"].info.run_id)}
    run_pusher(tmp_path, tmp_path / "evaluation", blessing, small_models, mlflow_server, model_name=name)
    champion = MlflowRegistry(mlflow_server, name).champion()
    assert champion.tags["evaluation_run_id"] == runs["bakeoff"].info.run_id
    assert champion.tags["training_run_id"] == runs[evaluation["decision"]["winner"]].info.run_id


def _push_in_child(eval_dir: str, blessing_uri: str, models: dict, uri: str, out: str, name: str) -> None:
    """Runs in a separate process: one pipeline run's pusher."""
    import pathlib

    from tfx.types import standard_artifacts

    from components.registry_pusher import executor

    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = blessing_uri
    blessing.set_int_custom_property("blessed", 1)
    inputs = {"evaluation": [standard_artifacts.ModelEvaluation()], "blessing": [blessing]}
    inputs["evaluation"][0].uri = eval_dir
    for candidate, model_uri in models.items():
        inputs[candidate] = [standard_artifacts.Model()]
        inputs[candidate][0].uri = str(model_uri)
    pushed = standard_artifacts.PushedModel()
    pushed.uri = out
    pathlib.Path(out).mkdir(parents=True)
    executor.Executor().Do(inputs, {"pushed_model": [pushed]}, {"registry_uri": uri, "registered_model_name": name})


def test_concurrent_pushes_both_register_and_the_better_one_is_champion(evaluations, tmp_path, mlflow_server):
    name = "mnist-concurrent"
    ctx = multiprocessing.get_context("spawn")
    children = []
    for framework in ("keras", "pytorch"):
        eval_tmp, _, blessing, models = evaluations[framework]
        children.append(ctx.Process(target=_push_in_child, args=(
            str(eval_tmp / "evaluation"), blessing.uri, {k: str(v) for k, v in models.items()},
            mlflow_server, str(tmp_path / framework), name)))
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=600)
    assert [c.exitcode for c in children] == [0, 0]
    registry = MlflowRegistry(mlflow_server, name)
    versions = registry.versions()
    assert len(versions) == 2
    best = max(versions, key=lambda v: (v.primary_value, -int(v.version)))
    if versions[0].primary_value == versions[1].primary_value:
        assert registry.champion() is not None  # a tie: either version is what the rule prefers
    else:
        assert registry.champion().version == best.version


def test_rollback_and_commands(evaluations, small_examples, tmp_path, mnist_dir, capsys):
    registry, uri = _two_versions(evaluations, tmp_path)
    assert [v.version for v in registry.versions()] == ["1", "2"]
    argv = ["registry", "--registry-uri", uri, "--registered-model-name", NAME]

    assert cli.main(argv + ["rollback", "1", "--reason", "test"]) == 0
    champion = registry.champion()
    assert champion.version == "1" and champion.tags["rollback_reason"] == "test"
    assert champion.tags["rolled_back_from"] in ("1", "2")

    assert cli.main(argv + ["list"]) == 0
    listing = capsys.readouterr().out
    assert "champion" in listing and "keras" in listing and "pytorch" in listing

    from PIL import Image

    champion_model = load_champion_pyfunc(registry)
    images, _ = example_data.load_split(small_examples, "test", limit=1)
    Image.fromarray(images[0]).save(tmp_path / "digit.png")
    assert cli.main(argv + ["predict", str(tmp_path / "digit.png")]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["version"] == "1" and sum(answer["probabilities"]) == pytest.approx(1.0, abs=1e-4)
    assert answer["digit"] == int(np.asarray(champion_model.predict(images)).argmax())
    assert cli.main(argv + ["predict", "--idx", str(mnist_file(mnist_dir, "t10k-images-idx3-ubyte")),
                                     "--index", "0"]) == 0
    first_test_digit = registry_commands.load_idx_record(str(mnist_file(mnist_dir, "t10k-images-idx3-ubyte")), 0)
    assert json.loads(capsys.readouterr().out)["digit"] == int(
        np.asarray(champion_model.predict(first_test_digit)).argmax())

    assert cli.main(argv + ["rollback", "9"]) == 2
    assert "has no version '9'" in capsys.readouterr().err and registry.champion().version == "1"


def test_bad_registry_input_is_a_clear_error(tmp_path):
    with pytest.raises(RegistryError, match="unreachable"):
        MlflowRegistry(f"http://127.0.0.1:{free_ports(1)[0]}", NAME)
    with pytest.raises(RegistryError, match="invalid registered model name 'bad/name'"):
        MlflowRegistry(embedded_uri(str(tmp_path)), "bad/name")


def test_failed_upload_leaves_no_version(tmp_path):
    registry = MlflowRegistry(embedded_uri(str(tmp_path)), NAME)
    with pytest.raises(Exception):  # noqa: B017  (MLflow's own error for a missing artifact folder)
        registry.register(str(tmp_path / "no-such-model"), "keras", tags={}, metrics={})
    assert registry.versions() == [] and registry.champion() is None


def _two_versions(evaluations, tmp_path) -> tuple[MlflowRegistry, str]:
    uri = embedded_uri(str(tmp_path / "reg"))
    for framework in ("keras", "pytorch"):
        eval_tmp, _, blessing, models = evaluations[framework]
        (tmp_path / framework).mkdir()
        run_pusher(tmp_path / framework, eval_tmp / "evaluation", blessing, models, uri)
    return MlflowRegistry(uri, NAME), uri


def test_promotion_follows_the_evaluation_unless_a_concurrent_run_moved_the_alias(evaluations, tmp_path):
    registry, _ = _two_versions(evaluations, tmp_path)
    v1, v2 = registry.versions()
    worse, better = sorted((v1, v2), key=lambda v: v.primary_value)
    if worse.primary_value == better.primary_value:
        pytest.skip("both small models scored the same; no order to test")
    # Blessed against the current champion (e.g. 'not significantly worse'): it becomes champion.
    registry.promote(better.version)
    assert registry.promote_if_better(worse, baseline_version=better.version, settle_s=0.5)
    assert registry.champion().version == worse.version
    # The alias moved to a better version since the evaluation: the better one stays.
    registry.promote(better.version)
    assert not registry.promote_if_better(worse, baseline_version="an-older-version", settle_s=0.5)
    assert registry.champion().version == better.version


def test_champion_downloads_in_a_fresh_process(evaluations, tmp_path):
    """No process-wide MLflow URI set (as in a new pipeline run's evaluator): the registry's own."""
    registry, uri = _two_versions(evaluations, tmp_path)
    code = ("import json, sys; from components.registry import MlflowRegistry; "
            "v, d = MlflowRegistry(sys.argv[1], sys.argv[2]).download_champion(sys.argv[3]); "
            "print(json.dumps([v.version, d]))")
    done = subprocess.run([sys.executable, "-c", code, uri, NAME, str(tmp_path / "dl")], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    version, model_dir = json.loads(done.stdout.strip().splitlines()[-1])
    assert version == registry.champion().version
    assert os.path.isfile(os.path.join(model_dir, "model_meta.json"))
