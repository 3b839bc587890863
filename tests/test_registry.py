"""The registry for real: embedded SQLite and a real `mlflow server` on 127.0.0.1 (SQLite, and
PostgreSQL with an S3 bucket), rollback, the commands, the serving check for both frameworks, and
bad input. (Concurrent pushers and the alias lock: tests/test_champion_lifecycle.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from components import examples as example_data
from components.registry import MlflowRegistry, RegistryError, embedded_uri
from components.registry_pusher.executor_test import MODEL_NAME as NAME
from components.registry_pusher.executor_test import run_pusher
from conftest import bakeoff_runs, load_champion_pyfunc, lock_settings, mnist_file, run_evaluator, running_mlflow_server
from pipelines import cli, registry_commands
from pipelines.config import REPO_ROOT
from serving.server import free_ports

# The alias lock of each server (registry_lock_uri): none for the SQLite-backed one (one writer
# here), the PostgreSQL database's advisory lock for the deployed form.
LOCKS: dict[str, str] = {}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def mlflow_server(request, tmp_path_factory):
    """A real MLflow tracking server: SQLite backend and a proxied local artifact store, or (as
    infra/mlflow deploys it) PostgreSQL and an S3 bucket (conftest.deployed_services)."""
    if request.param == "postgresql":
        _, uri, database = request.getfixturevalue("deployed_services")
        LOCKS[uri], password = lock_settings(database)
        saved = os.environ.get("PGPASSWORD")
        os.environ.update(password)
        yield uri
        os.environ.pop("PGPASSWORD") if saved is None else os.environ.update(PGPASSWORD=saved)
        return
    with running_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (uri, _):
        LOCKS[uri] = "none"
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
    pushed = run_pusher(tmp_path, eval_tmp / "evaluation", blessing, models, mlflow_server,
                        lock_uri=LOCKS[mlflow_server])
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
    run_pusher(tmp_path, tmp_path / "evaluation", blessing, small_models, mlflow_server, model_name=name,
               lock_uri=LOCKS[mlflow_server])
    champion = MlflowRegistry(mlflow_server, name).champion()
    assert champion.tags["evaluation_run_id"] == runs["bakeoff"].info.run_id
    assert champion.tags["training_run_id"] == runs[evaluation["decision"]["winner"]].info.run_id


def test_rollback_and_commands(evaluations, small_examples, tmp_path, mnist_dir, capsys):
    registry, uri = _two_versions(evaluations, tmp_path)
    assert [v.version for v in registry.versions()] == ["1", "2"]
    argv = ["registry", "--registry-uri", uri, "--registered-model-name", NAME]

    assert registry.champion().version == "2"
    assert cli.main(argv + ["rollback", "1", "--reason", "test"]) == 0
    champion = registry.champion()
    assert champion.version == "1" and champion.tags["rollback_reason"] == "test"
    assert champion.tags["rolled_back_from"] == "2" and registry.version("2").rejected

    assert cli.main(argv + ["list"]) == 0
    listing = capsys.readouterr().out
    assert "champion" in listing and "keras" in listing and "pytorch" in listing
    assert "rejected (rolled back to version 1: test)" in listing

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


def test_champion_downloads_in_a_fresh_process(evaluations, tmp_path):
    """No process-wide MLflow URI set (as in a new pipeline run's evaluator): the registry's own."""
    registry, uri = _two_versions(evaluations, tmp_path)
    code = ("import json, sys; from components.registry import MlflowRegistry; "
            "found = MlflowRegistry(sys.argv[1], sys.argv[2]).download_champion(sys.argv[3]); "
            "print(json.dumps([found.version.version, found.model_dir]))")
    done = subprocess.run([sys.executable, "-c", code, uri, NAME, str(tmp_path / "dl")], capture_output=True,
                          text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    version, model_dir = json.loads(done.stdout.strip().splitlines()[-1])
    assert version == registry.champion().version
    assert os.path.isfile(os.path.join(model_dir, "model_meta.json"))
