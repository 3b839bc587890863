"""Signed registered versions and MLServer processes for the serving tests.

A signed version is laid out as the signing pusher lays it out in the version's run artifacts
(trainers/model_format.py): `signed/model/` (the version's MLflow pyfunc, the export in
`signed/model/artifacts/model_dir/`), `signed/identity.json`, and `manifest.sig` beside
`signed/`, signed with trainers/manifest.py.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np

from components.registry import MlflowRegistry, ModelVersion
from serving import server as mlserver
from trainers import manifest, model_format

NAME = "mnist-digits"
REPO = str(Path(__file__).resolve().parent.parent)
FRAMEWORKS = {"keras": "keras_model", "pytorch": "pytorch_model"}


class Payload:
    """Unpickled, it runs `touch MARKER` (os.system), as a malicious python_model.pkl would."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def marker_code(marker: Path) -> str:
    """Python that creates `marker` when it is imported or run."""
    return f"\nopen({str(marker)!r}, 'w').close()  # injected: runs wherever this file is imported\n"


def export_in(pyfunc_dir: str) -> str:
    metas = sorted(glob.glob(os.path.join(pyfunc_dir, "artifacts", "*", "model_meta.json")))
    assert metas, f"no export in {pyfunc_dir}"
    return os.path.dirname(metas[0])


def build_signed(pyfunc_dir: str, root: str, identity: dict, private_pem: bytes) -> str:
    """`root`/signed (the pyfunc as signed/model, the export in artifacts/model_dir) and
    `root`/manifest.sig, signed with `private_pem`. Returns `root`/signed."""
    signed = os.path.join(root, model_format.SIGNED_DIR)
    shutil.copytree(pyfunc_dir, os.path.join(signed, "model"))
    export = export_in(os.path.join(signed, "model"))
    wanted = os.path.join(signed, model_format.EXPORT_IN_SIGNED)
    if export != wanted:  # MLflow names the folder after the export's; the pusher's layout says model_dir
        os.rename(export, wanted)
        mlmodel = Path(signed, "model", "MLmodel")
        old = f"artifacts/{os.path.basename(export)}"
        mlmodel.write_text(mlmodel.read_text().replace(f"path: {old}\n", "path: artifacts/model_dir\n"))
    Path(signed, "identity.json").write_text(json.dumps(identity, indent=2))
    sign(signed, private_pem)
    return signed


def sign(folder: str, private_pem: bytes) -> None:
    manifest.sign(folder, private_pem)


def refusal_line(folder: str, public_pem: bytes | str, what: str) -> str:
    """The one line trainers/manifest.py:verify refuses `folder` with ("" if it verifies): what a
    refusal by the server must say."""
    try:
        manifest.verify(folder, public_pem, what)
    except manifest.ManifestError as e:
        return str(e)
    return ""


def pyfunc_of(registry: MlflowRegistry, version: ModelVersion, dst: str) -> str:
    """The version's registered pyfunc folder (what the stock MLflow runtime would load), in `dst`."""
    import mlflow.artifacts

    source = registry.client.get_model_version_download_uri(registry.model_name, version.version)
    return mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=dst, tracking_uri=registry.uri)


def register_signed(registry: MlflowRegistry, export_dir: str, framework: str, private_pem: bytes,
                    promote: bool = True, tags: dict[str, str] | None = None) -> ModelVersion:
    """A real registered version, signed and laid out by the registry client as the pusher does it."""
    version = registry.register(export_dir, framework, tags={"pipeline_run_id": f"serving-test-{framework}",
                                                            **(tags or {})}, metrics={}, signing_key=private_pem)
    if promote:
        registry.promote(version.version)
    return version


def run_artifacts(registry: MlflowRegistry, version: ModelVersion) -> Path:
    """Where the version's run artifacts are stored (an embedded registry: a local folder)."""
    uri = registry.client.get_run(registry.client.get_model_version(registry.model_name, version.version).run_id
                                  ).info.artifact_uri
    assert uri.startswith("file://") or uri.startswith("/"), uri
    return Path(uri.removeprefix("file://"))


def tamper_weights(export_dir: str, shift: float = 3.0) -> None:
    """A consistent tamper: the export with one weight changed (the last bias shifted), saved in its
    own valid format; every other file stays as it was."""
    meta = json.loads(Path(export_dir, "model_meta.json").read_text())
    if meta["framework"] == "pytorch":
        import torch

        path = Path(export_dir, meta["file"])
        state = torch.load(io.BytesIO(path.read_bytes()), map_location="cpu", weights_only=True)
        bias = [key for key in state if key.endswith("bias")][-1]
        state[bias][0] += shift  # class 0 now wins far more often
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path.write_bytes(buffer.getvalue())
        return
    import tensorflow as tf

    loaded = tf.saved_model.load(export_dir)
    variable = [v for v in loaded.variables if "bias" in v.name][-1]
    variable.assign_add(tf.one_hot(0, variable.shape[0]) * shift)
    tf.saved_model.save(loaded, export_dir, signatures={"serving_default": loaded.signatures["serving_default"]})


# --- MLServer processes on a prepared folder --------------------------------------------------------
class Process:
    """MLServer started by the tests on a settings folder (guarded, or stock `mlserver start`)."""

    def __init__(self, popen: subprocess.Popen, http_port: int, grpc_port: int, log_path: str) -> None:
        self.popen, self.http_port, self.grpc_port, self.log_path = popen, http_port, grpc_port, log_path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace") if os.path.exists(self.log_path) else ""

    def stop(self) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # workers left behind, if any
        except ProcessLookupError:
            pass
        return self.popen.returncode


def server_folder(root: Path, models: dict[str, dict], *, load_at_startup: bool = True,
                  parallel_workers: int = 1) -> tuple[Path, int, int, int]:
    """An MLServer settings folder in `root`/mlserver: settings.json on free ports and one
    <name>/model-settings.json per entry of `models` ({name: model settings without the name})."""
    http_port, grpc_port, metrics_port = mlserver.free_ports(3)
    folder = root / "mlserver"
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({
        "debug": False, "host": "127.0.0.1", "http_port": http_port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "parallel_workers": parallel_workers, "load_models_at_startup": load_at_startup,
        "parallel_workers_timeout": 3}))
    for name, settings in models.items():
        (folder / name).mkdir()
        (folder / name / "model-settings.json").write_text(json.dumps({"name": name, **settings}))
    return folder, http_port, grpc_port, metrics_port


def runtime_settings(uri: str, public_pem: bytes | str, what: str, max_batch: int = 1024) -> dict:
    """model-settings (without the name) for serving/runtime.py:MnistRuntime."""
    pem = public_pem.decode() if isinstance(public_pem, bytes) else public_pem
    return {"implementation": "serving.runtime.MnistRuntime",
            "parameters": {"uri": uri, "extra": {"public_key": pem, "what": what, "max_batch": max_batch}}}


def spawn(venv: str, folder: Path, http_port: int, grpc_port: int, guard: mlserver.GuardOptions | None,
          wait_for: str = "", timeout_s: float = 240.0) -> Process:
    """Starts MLServer on `folder` (guarded, or stock with guard=None); waits until `wait_for`
    (a path) answers 200, or only until the server is live."""
    work = folder.parent
    log_path = str(work / f"mlserver-{'guarded' if guard else 'stock'}-{http_port}.log")
    popen = mlserver.spawn_mlserver(venv, str(folder), str(work / f"run-{http_port}"), guard, log_path)
    process = Process(popen, http_port, grpc_port, log_path)
    deadline = time.monotonic() + timeout_s
    path = wait_for or "/v2/health/live"
    while True:
        try:
            with urllib.request.urlopen(process.url + path, timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            pass
        if popen.poll() is not None or time.monotonic() > deadline:
            log = process.log()
            process.stop()
            raise AssertionError(f"MLServer on {folder} did not answer {path} (exit {popen.returncode}):\n"
                                 f"{log[-3000:]}")
        time.sleep(0.5)


def images_of(examples, count: int = 64) -> np.ndarray:
    from components.examples import load_split

    images, _ = load_split(examples, "test", limit=count)
    return images
