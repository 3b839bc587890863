"""The champion's lifecycle against real registries: "no champion" only when the registry says so,
every other registry failure stops the run (a real MLflow server behind a proxy that answers 403
and 503), one writer of the alias at a time (two pusher processes forced to overlap, against the
server on PostgreSQL, with its advisory lock; and the same overlap without the lock, to show the
race is real), and a rollback that sticks until a version is reinstated."""

from __future__ import annotations

import contextlib
import http.server
import json
import multiprocessing
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tfx.types import standard_artifacts

from components import champion as champion_artifact
from components.registry import NOT_PROMOTED_TAG, REVISION_TAG, MlflowRegistry, RegistryError, embedded_uri
from components.registry_pusher.executor_test import run_pusher
from conftest import FAST_TRAINING, lock_settings, resolve_champion, run_evaluator, running_mlflow_server
from pipelines.config import REPO_ROOT

NAME = "mnist-lifecycle"
# MLflow's client retries a 503 seven times with a growing back-off by default: once, at once, here.
FAST_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0",
                "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}
ALIAS_READ = r"/api/2\.0/mlflow/registered-models/get"
DOWNLOAD = r"/api/2\.0/mlflow-artifacts/artifacts"


class FailingProxy:
    """A real HTTP proxy in front of the MLflow server: requests whose path matches a rule get the
    rule's answer (403, 503, a bare 404), everything else is forwarded as it came."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: dict[str, tuple[int, bytes]] = {}
        self.refused: list[str] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _answer(self) -> None:
                for pattern, (status, body) in proxy.rules.items():
                    if re.match(pattern, self.path):
                        proxy.refused.append(self.path)
                        self.send_response(status)
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                        return
                length = int(self.headers.get("Content-Length") or 0)
                request = urllib.request.Request(proxy.upstream + self.path, method=self.command,
                                                 data=self.rfile.read(length) if length else None,
                                                 headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                try:
                    with urllib.request.urlopen(request, timeout=60) as response:
                        status, headers, body = response.status, response.headers, response.read()
                except urllib.error.HTTPError as e:
                    status, headers, body = e.code, e.headers, e.read()
                self.send_response(status)
                for key, value in headers.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _answer

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.uri = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FailingProxy:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def evaluated(small_examples, small_models, tmp_path_factory):
    """One real evaluation that blesses its winner whatever the champion (min_metric 0, a policy
    that is never significantly worse at this alpha): (its folder, blessing, models)."""
    tmp = tmp_path_factory.mktemp("lifecycle-evaluation")
    _, blessing = run_evaluator(small_examples, small_models, tmp, min_accuracy=0.0)
    return tmp / "evaluation", blessing, small_models


@pytest.fixture(scope="module")
def served_registry(tmp_path_factory, evaluated):
    """A real MLflow server (SQLite backend: one writer here, so no alias lock) holding a champion
    (version 1), behind a FailingProxy; (server, proxy)."""
    evaluation_dir, blessing, models = evaluated
    with running_mlflow_server(tmp_path_factory.mktemp("lifecycle-server")) as (uri, _), FailingProxy(uri) as proxy:
        run_pusher(tmp_path_factory.mktemp("first-push"), evaluation_dir, blessing, models, uri, NAME,
                   lock_uri="none")
        assert MlflowRegistry(uri, NAME).champion().version == "1"
        yield uri, proxy


@pytest.fixture
def failing(served_registry, monkeypatch):
    uri, proxy = served_registry
    for key, value in FAST_RETRIES.items():
        monkeypatch.setenv(key, value)
    yield proxy
    proxy.rules.clear()


# --- "no champion" is only the registry's own answer ---------------------------------------------
def test_no_champion_only_when_the_registry_says_so(served_registry, tmp_path, failing):
    uri, proxy = served_registry
    assert champion_artifact.is_present(resolve_champion(proxy.uri, NAME, tmp_path / "through-proxy")[0])
    missing, _ = resolve_champion(proxy.uri, "mnist-never-registered", tmp_path / "missing")
    assert not champion_artifact.is_present(missing)
    assert "has no version with the alias champion" in missing.get_string_custom_property("reason")
    # A 404 that is not the registry's answer (a proxy's, a wrong path) is no "no champion".
    proxy.rules[ALIAS_READ] = (404, b"<html>Not Found</html>")
    with pytest.raises(RegistryError, match=rf"registry {re.escape(proxy.uri)}: reading the registered model "
                                            rf"{NAME} failed"):
        resolve_champion(proxy.uri, NAME, tmp_path / "bare-404")


@pytest.mark.parametrize("status", [403, 503])
@pytest.mark.parametrize("where", ["alias", "download"])
def test_a_failing_registry_stops_the_resolution(served_registry, tmp_path, failing, status, where):
    """Unprotected, a 403/503 read as "no champion" and the run went on judged against the minimum
    only; now it is a RegistryError naming the registry and what failed."""
    uri, proxy = served_registry
    proxy.rules[ALIAS_READ if where == "alias" else DOWNLOAD] = (status, b'{"error_code": "DENIED", "message": "no"}')
    doing = "reading the registered model" if where == "alias" else "downloading mnist-lifecycle version 1's signed"
    with pytest.raises(RegistryError, match=rf"^registry {re.escape(proxy.uri)}: {doing}.* failed: "):
        resolve_champion(proxy.uri, NAME, tmp_path / "resolved")
    assert proxy.refused  # the failure was the proxy's answer, not a test artefact


@pytest.mark.parametrize("status", [403, 503])
def test_a_failing_registry_at_push_time_pushes_nothing(served_registry, evaluated, tmp_path, failing, status):
    uri, proxy = served_registry
    evaluation_dir, blessing, models = evaluated
    resolved, _ = resolve_champion(uri, NAME, tmp_path / "resolved")  # resolution worked; then the registry fails
    before = [v.version for v in MlflowRegistry(uri, NAME).versions()]
    proxy.rules[ALIAS_READ] = (status, b'{"error_code": "DENIED", "message": "no"}')
    with pytest.raises(RegistryError, match=rf"^registry {re.escape(proxy.uri)}: reading the registered model"):
        run_pusher(tmp_path, evaluation_dir, blessing, models, proxy.uri, NAME, champion=resolved, lock_uri="none")
    assert [v.version for v in MlflowRegistry(uri, NAME).versions()] == before


def test_a_run_against_a_failing_registry_stops_with_one_line(served_registry, mnist_dir, tmp_path, failing):
    """`python -m pipelines run` as a user runs it: the first stage resolves the champion; a 403
    stops the run there, exit status 1, one block naming the registry and the problem."""
    uri, proxy = served_registry
    proxy.rules[ALIAS_READ] = (403, b'{"error_code": "PERMISSION_DENIED", "message": "token expired"}')
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--output-root", str(tmp_path / "out"), "--source", str(mnist_dir),
         "--registry-uri", proxy.uri, "--registered-model-name", NAME, "--train-limit", "1000",
         "--test-limit", "200", "--epochs", "1", "--model", FAST_TRAINING["model"]],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, **FAST_RETRIES, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "the run FAILED in stage ChampionResolver" in done.stderr
    problem = next(line for line in done.stderr.splitlines() if "problem:" in line)
    assert f"RegistryError: registry {proxy.uri}: reading the registered model {NAME} failed" in problem
    assert "PERMISSION_DENIED" in problem and "Traceback" not in done.stderr
    assert [v.version for v in MlflowRegistry(uri, NAME).versions()] == ["1"]


# --- one writer of the alias at a time -------------------------------------------------------------
def _overlapping_push(barrier, locked: bool, evaluation_dir: str, blessing_uri: str, model: str, resolved_uri: str,
                      registry_uri: str, lock_uri: str, out: str, result: dict) -> None:
    """One pipeline run's pusher, in its own process. Both processes resolved the same champion.
    With the lock, they meet at the barrier right before taking it; without it (the control), right
    after reading the alias inside the unprotected read-compare-set."""
    import pathlib

    from components import registry as registry_lib
    from components.registry_pusher import executor

    real_lock, real_state = registry_lib.MlflowRegistry.alias_lock, registry_lib.MlflowRegistry.champion_state
    inside = {"compare": False}

    @contextlib.contextmanager
    def lock(self):
        if locked:
            barrier.wait(timeout=120)
            with real_lock(self):
                yield
        else:
            inside["compare"] = True
            yield

    def state(self):
        found = real_state(self)
        if inside["compare"]:
            inside["compare"] = False
            barrier.wait(timeout=120)
            # Both have read "no champion"; their writes a moment apart, so the control shows the
            # lost update every time (at the same instant, MLflow's first INSERT of the alias may
            # instead fail one of them on the table's unique key: a race all the same).
            time.sleep(result["stagger_s"])
        return found

    registry_lib.MlflowRegistry.alias_lock, registry_lib.MlflowRegistry.champion_state = lock, state
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = blessing_uri
    blessing.set_int_custom_property("blessed", 1)
    evaluation, resolved, candidate = (standard_artifacts.ModelEvaluation(), standard_artifacts.Model(),
                                       standard_artifacts.Model())
    evaluation.uri, resolved.uri, candidate.uri = evaluation_dir, resolved_uri, model
    champion_artifact.set_properties(resolved, {champion_artifact.PRESENT: 0,
                                                champion_artifact.IDENTITY: result["identity"]})
    pushed = standard_artifacts.PushedModel()
    pushed.uri = out
    pathlib.Path(out).mkdir(parents=True)
    executor.Executor().Do({"evaluation": [evaluation], "blessing": [blessing], "champion": [resolved],
                            result["winner"]: [candidate]}, {"pushed_model": [pushed]},
                           {"registry_uri": registry_uri, "registered_model_name": result["name"],
                            "registry_lock_uri": lock_uri})


def _winner_copy(evaluated, folder: Path) -> tuple[str, Path]:
    """(the evaluation's winner, a copy of its trained model in `folder`): another training of it,
    registered as a version of its own."""
    evaluation_dir, _, models = evaluated
    winner = json.loads((evaluation_dir / "evaluation.json").read_text())["decision"]["winner"]
    shutil.copytree(models[winner], folder)
    return winner, folder


def _two_overlapping_pushes(deployed_services, evaluated, tmp_path, monkeypatch, name: str, locked: bool):
    _, uri, database = deployed_services
    lock_uri, password = lock_settings(database)
    evaluation_dir, blessing, _ = evaluated
    resolved, _ = resolve_champion(uri, name, tmp_path / "resolved")  # "no champion": the same for both runs
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    for key, value in password.items():  # the children's environment: the lock's database password
        monkeypatch.setenv(key, value)
    children = []
    for k in range(2):
        winner, model = _winner_copy(evaluated, tmp_path / f"model-{k}")
        children.append(ctx.Process(target=_overlapping_push, args=(
            barrier, locked, str(evaluation_dir), blessing.uri, str(model), resolved.uri, uri, lock_uri,
            str(tmp_path / f"pushed-{k}"), {"identity": champion_artifact.identity(resolved), "name": name,
                                             "winner": winner, "stagger_s": 1.0 * k})))
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=600)
    assert [c.exitcode for c in children] == [0, 0]
    registry = MlflowRegistry(uri, name)
    versions = registry.versions()
    assert len(versions) == 2
    return registry, versions


def test_overlapping_pushers_with_the_lock_promote_exactly_one(deployed_services, evaluated, tmp_path, monkeypatch):
    registry, versions = _two_overlapping_pushes(deployed_services, evaluated, tmp_path, monkeypatch,
                                                 "mnist-locked", True)
    champion = registry.champion()
    promoted = [v for v in versions if "champion" in v.aliases]
    left = [v for v in versions if v.version != champion.version]
    assert len(promoted) == 1 and len(left) == 1
    assert left[0].tags[NOT_PROMOTED_TAG].startswith(
        f"the champion changed since this run resolved it (now version {champion.version}, revision 1)")
    assert registry.champion_state().revision == "1"  # one promotion, one revision


def test_without_the_lock_both_pushers_promote_the_race_is_real(deployed_services, evaluated, tmp_path, monkeypatch):
    """The control: the same two pushers, forced to overlap inside an unprotected read-compare-set,
    both see "no champion", both set the alias: two promotions, the revision counted once, and the
    run whose version lost the alias believes it holds it."""
    registry, versions = _two_overlapping_pushes(deployed_services, evaluated, tmp_path, monkeypatch,
                                                 "mnist-unlocked", False)
    assert not any(NOT_PROMOTED_TAG in v.tags for v in versions)  # neither was told it lost
    assert all("promoted_at" in v.tags for v in versions)  # both moved the alias
    client = registry.client
    assert client.get_registered_model("mnist-unlocked").tags[REVISION_TAG] == "1"  # a lost update


# --- a rollback sticks -----------------------------------------------------------------------------
def test_a_rolled_back_version_is_never_promoted_until_reinstated(evaluated, tmp_path, capsys):
    from pipelines import cli

    evaluation_dir, blessing, _ = evaluated
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, NAME)
    winner, first_model = _winner_copy(evaluated, tmp_path / "model-1")
    _, second_model = _winner_copy(evaluated, tmp_path / "model-2")

    def push(folder: str, model: Path):
        return run_pusher(tmp_path / folder, evaluation_dir, blessing, {winner: model}, uri, NAME)

    v1, v2 = (push(folder, model).get_string_custom_property("registered_version")
              for folder, model in (("push-1", first_model), ("push-2", second_model)))
    assert registry.champion().version == v2
    argv = ["registry", "--registry-uri", uri, "--registered-model-name", NAME]
    assert cli.main(argv + ["rollback", v1, "--reason", "bad canary"]) == 0
    assert f"version {v2} is rejected" in capsys.readouterr().out
    assert registry.champion().version == v1 and registry.version(v2).rejected
    # A rerun that adopts the rejected version (the same trained model) does not promote it.
    again = push("push-3", second_model)
    assert again.get_string_custom_property("registered_version") == v2
    assert again.get_int_custom_property("champion") == 0
    assert f"version {v2} is rejected (rolled back to version {v1}: bad canary)" in again.get_string_custom_property(
        "reason")
    assert registry.champion().version == v1
    # A new version with the rejected one's files is rejected too.
    _, twin = _winner_copy(evaluated, tmp_path / "model-2-again")
    twin_push = push("push-twin", twin)
    assert twin_push.get_int_custom_property("champion") == 0
    assert f"its model files are those of rejected version {v2}" in twin_push.get_string_custom_property("reason")
    # A rollback to a rejected version is refused; reinstating lifts the rejection, the alias stays.
    assert cli.main(argv + ["rollback", v2]) == 2
    assert "is rejected" in capsys.readouterr().err
    assert cli.main(argv + ["reinstate", v2]) == 0
    assert registry.champion().version == v1 and not registry.version(v2).rejected
    promoted = push("push-4", second_model)
    assert promoted.get_int_custom_property("champion") == 1 and registry.champion().version == v2
    # promote, promote, rollback, reinstate, promote: five states of the champion.
    assert registry.client.get_registered_model(NAME).tags[REVISION_TAG] == "5"


def test_a_version_whose_files_lie_outside_the_registry_is_refused(evaluated, tmp_path):
    """Someone with write access to the registry's database points the champion's version at
    files of their choosing (here: a validly signed copy): it is not loaded from there."""
    evaluation_dir, blessing, _ = evaluated
    uri = embedded_uri(str(tmp_path / "registry"))
    winner, model = _winner_copy(evaluated, tmp_path / "model")
    run_pusher(tmp_path / "push", evaluation_dir, blessing, {winner: model}, uri, NAME)
    registry = MlflowRegistry(uri, NAME)
    good = registry.champion()
    elsewhere = tmp_path / "attacker"
    registry.download_verified(good, str(elsewhere))
    assert champion_artifact.is_present(resolve_champion(uri, NAME, tmp_path / "before")[0])
    with sqlite3.connect(tmp_path / "registry" / "mlflow.db") as db:
        db.execute("UPDATE model_versions SET source = ? WHERE name = ? AND version = ?",
                   (str(elsewhere / "signed" / "model"), NAME, int(good.version)))
    with pytest.raises(RegistryError, match=rf"version {good.version}: its source {re.escape(str(elsewhere))}.* is "
                                            "not its run's signed model"):
        resolve_champion(uri, NAME, tmp_path / "resolved")


def test_a_version_registered_before_signing_is_refused_and_can_be_rejected(evaluated, tmp_path, capsys):
    """A champion from before versions were signed (its pyfunc at the run's `model/`, no manifest)
    cannot be verified: the run stops saying so and how to go on; `registry reject` takes the alias
    off it, and the next resolution is "no champion"."""
    from pipelines import cli

    evaluation_dir, blessing, _ = evaluated
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, NAME)
    winner, model = _winner_copy(evaluated, tmp_path / "model")
    run_pusher(tmp_path / "push", evaluation_dir, blessing, {winner: model}, uri, NAME)
    old = registry.champion()
    with sqlite3.connect(tmp_path / "registry" / "mlflow.db") as db:  # as an older pusher registered it
        db.execute("UPDATE model_versions SET source = replace(source, '/signed/model', '/model') WHERE name = ?",
                   (NAME,))
    with pytest.raises(RegistryError, match=rf"version {old.version}: registered before versions were signed .* "
                                            rf"`python -m pipelines registry reject {old.version}`"):
        resolve_champion(uri, NAME, tmp_path / "resolved")
    argv = ["registry", "--registry-uri", uri, "--registered-model-name", NAME]
    assert cli.main(argv + ["reject", old.version, "--reason", "unsigned"]) == 0
    assert "it was the champion: the alias is off" in capsys.readouterr().out
    assert registry.champion() is None and registry.version(old.version).rejected
    assert not champion_artifact.is_present(resolve_champion(uri, NAME, tmp_path / "after")[0])
