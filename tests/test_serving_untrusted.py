"""The server runs no code stored in the registry and serves only files the pusher signed.

Each payload is real and first proven live on the unprotected path: MLServer's stock MLflow
runtime (`mlflow.pyfunc.load_model`) unpickles a malicious `python_model.pkl` and imports a
stored `registry_pyfunc.py` / `code/trainers/` that were changed to create a marker file, and it
serves a version whose weight file was changed after signing without a word. The project's
runtime (serving/runtime.py) loads the same folders, signed with the pusher's key where the
stored code was changed before signing: the markers never appear and it answers as the real
export does; the changed weights, a missing signature and a signature by another key are refused
with one line naming the version and what is wrong, and the model is not ready.

Real MLServer processes (serving/bootstrap.sh's environment) on 127.0.0.1, models loaded one by
one through the model-repository API (the project's server: with its token).
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from components.registry import MlflowRegistry, embedded_uri
from serving import client
from serving import server as mlserver
from tests import serving_helpers as helpers
from trainers import loader, manifest, model_format

TOKEN = "test-repository-token"


@pytest.fixture(scope="module")
def serving_venv() -> str:
    return mlserver.serving_venv()


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    return manifest.generate_key_pair()


def _pyfunc_with_pickle(export_dir: Path, dst: Path, marker: Path) -> None:
    """A real cloudpickle-format MLflow pyfunc (python_model.pkl) carrying the real export as
    artifacts/model_dir, its pickle replaced by one whose unpickling creates `marker`."""
    import mlflow.pyfunc

    class Placeholder(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return model_input

    mlflow.pyfunc.save_model(str(dst), python_model=Placeholder(),
                             artifacts={"model_dir": str(export_dir)})
    pickles = list(dst.glob("python_model.pkl"))
    assert pickles, sorted(p.name for p in dst.iterdir())
    pickles[0].write_bytes(pickle.dumps(helpers.Payload(marker), protocol=4))


def _stored_code(pyfunc: Path) -> list[Path]:
    """The Python stored with a registered models-from-code pyfunc: registry_pyfunc.py and code/trainers/."""
    found = [p for p in pyfunc.rglob("*.py") if "MnistDigitModel" in p.read_text()]
    found += list((pyfunc / "code" / "trainers").glob("loader.py"))
    assert len(found) >= 2, sorted(str(p) for p in pyfunc.rglob("*.py"))
    return found


@pytest.fixture(scope="module")
def cases(small_models, keys, tmp_path_factory):
    """Version folders as the pusher lays them out (signed/ + manifest.sig), one per case, built
    from a real registered PyTorch version, and the marker each payload creates."""
    private, _ = keys
    root = tmp_path_factory.mktemp("untrusted-serving")
    registry = MlflowRegistry(embedded_uri(str(root / "registry")), helpers.NAME)
    export = small_models["pytorch_model"] / "Format-Serving"
    version = registry.register(str(export), "pytorch", tags={}, metrics={})
    pyfunc = Path(helpers.pyfunc_of(registry, version, str(root / "download")))
    identity = {"name": helpers.NAME, "version": version.version, "framework": "pytorch"}
    markers = {"pickle": root / "ran-pickle", "code": root / "ran-stored-code"}
    built = {}

    # A signed version whose pyfunc is cloudpickle's, with a malicious pickle.
    _pyfunc_with_pickle(export, root / "pickle-pyfunc", markers["pickle"])
    built["pickle"] = Path(helpers.build_signed(str(root / "pickle-pyfunc"), str(root / "pickle"), identity, private))

    # A signed version whose stored registry_pyfunc.py and code/trainers/loader.py create a marker.
    code_pyfunc = root / "code-pyfunc"
    shutil.copytree(pyfunc, code_pyfunc)
    for path in _stored_code(code_pyfunc):
        path.write_text(path.read_text() + helpers.marker_code(markers["code"]))
    built["code"] = Path(helpers.build_signed(str(code_pyfunc), str(root / "code"), identity, private))

    # Signed, then one weight changed: a consistent export (it loads and answers), not the signed one.
    built["tampered"] = Path(helpers.build_signed(str(pyfunc), str(root / "tampered"), identity, private))
    helpers.tamper_weights(str(built["tampered"] / model_format.EXPORT_IN_SIGNED))

    # No signature; and a signature by a key that is not the pusher's.
    built["unsigned"] = Path(helpers.build_signed(str(pyfunc), str(root / "unsigned"), identity, private))
    (root / "unsigned" / manifest.SIGNATURE_FILE).unlink()
    other, _ = manifest.generate_key_pair()
    built["other-key"] = Path(helpers.build_signed(str(pyfunc), str(root / "other-key"), identity, other))
    return root, built, markers, export


def _load(url: str, name: str, token: str = "") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, answer = client.post(f"{url}/v2/repository/models/{name}/load", b"", headers=headers, timeout_s=240)
    return status, answer if isinstance(answer, str) else json.dumps(answer)


def _ready(url: str, name: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{name}/ready", timeout=10) as response:
            return response.status == 200
    except OSError:
        return False


def test_the_project_runtime_runs_no_stored_code_and_refuses_what_was_not_signed(cases, keys, serving_venv,
                                                                                 small_examples):
    root, built, markers, export = cases
    _, public = keys
    what = {case: f"{helpers.NAME} case {case}" for case in built}
    # The runtime takes the folder holding signed/ (as KServe mounts it) or signed/ itself.
    models = {case: helpers.runtime_settings(str(folder.parent if case == "pickle" else folder), public, what[case])
              for case, folder in built.items()}
    folder, http_port, grpc_port, _ = helpers.server_folder(root / "project", models, load_at_startup=False)
    (root / "token").write_text(TOKEN)
    guard = mlserver.GuardOptions(max_body_bytes=8 * 2**20, repository_token_file=str(root / "token"))
    server = helpers.spawn(serving_venv, folder, http_port, grpc_port, guard)
    images = helpers.images_of(small_examples, 32)
    expected = loader.load_predictor(str(export))[0](images)
    try:
        for case in ("pickle", "code"):
            status, answer = _load(server.url, case, TOKEN)
            assert status == 200, f"{case}: {status} {answer}\n{server.log()[-3000:]}"
            served = client.infer_rest(f"{server.url}/v2/models/{case}/infer", images)
            np.testing.assert_allclose(served, expected, atol=1e-6, rtol=0)
        assert not markers["pickle"].exists() and not markers["code"].exists(), "stored code ran in the server"

        refusals = {"tampered": "", "unsigned": "no signed manifest", "other-key": ""}
        for case, words in refusals.items():
            line = helpers.refusal_line(str(built[case]), public, what[case])
            assert line.startswith(what[case] + ": ") and line.endswith("it is not loaded") and words in line, line
            status, answer = _load(server.url, case, TOKEN)
            assert status == 400, f"{case}: {status} {answer}"
            error = json.loads(answer)["error"]  # MLServer names the class the worker raised, then the line
            assert "\n" not in error and error.endswith(line), (error, line)
            assert line in server.log(), "the one line is not in the server's log"
            assert not _ready(server.url, case)
            status, _ = client.post(f"{server.url}/v2/models/{case}/infer", json.dumps(client.v2_request(images[:1]))
                                    .encode())
            assert status == 404, status
        # ...and the good ones still serve.
        np.testing.assert_allclose(client.infer_rest(f"{server.url}/v2/models/code/infer", images), expected,
                                   atol=1e-6, rtol=0)
        assert server.popen.poll() is None
    finally:
        assert server.stop() is not None
    assert not markers["pickle"].exists() and not markers["code"].exists()


def test_control_the_stock_mlflow_runtime_runs_the_payloads_and_serves_the_tampered_weights(
        cases, serving_venv, small_examples):
    """The same folders on MLServer's stock MLflow runtime (what `serve` used to run): each payload
    runs, and the changed weights are served silently."""
    root, built, markers, export = cases
    for marker in markers.values():
        marker.unlink(missing_ok=True)
    models = {case: {"implementation": "mlserver_mlflow.MLflowRuntime",
                     "parameters": {"uri": str(built[case] / "model")}} for case in ("pickle", "code", "tampered")}
    folder, http_port, grpc_port, _ = helpers.server_folder(root / "stock", models, load_at_startup=False)
    server = helpers.spawn(serving_venv, folder, http_port, grpc_port, guard=None)
    images = helpers.images_of(small_examples, 32)
    expected = loader.load_predictor(str(export))[0](images)
    try:
        _load(server.url, "pickle")  # fails once unpickled (the payload is no model): it ran all the same
        assert markers["pickle"].exists(), f"the pickle did not run:\n{server.log()[-2000:]}"
        status, answer = _load(server.url, "code")
        assert status == 200, answer
        assert markers["code"].exists(), "the stored code did not run"

        status, answer = _load(server.url, "tampered")
        assert status == 200, answer
        status, response = client.post(f"{server.url}/v2/models/tampered/infer",
                                       json.dumps(client.v2_request(images)).encode())
        assert status == 200, response
        served = client.probabilities(response)
        assert np.abs(served - expected).max() > 0.05, "the tampered weights answer as the signed ones"
    finally:
        server.stop()
    assert os.path.isdir(built["tampered"])
