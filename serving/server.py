"""Starts MLServer (the MLflow runtime, v2 protocol over REST and gRPC) for the registry's champion.

Runs in the pipeline's environment: it resolves `models:/<name>@champion` through the registry
client (components/registry.py) to one version, downloads that version's MLflow pyfunc (the
exported model, a few MB, with the trainers package it loads with), writes MLServer's
settings.json and model-settings.json in a temporary folder, and starts MLServer in the serving
environment (serving/bootstrap.sh) on 127.0.0.1 with serving/launch.py (MLServer's own CLI, plus a
request body limit). The runtime is serving/runtime.py:MnistRuntime: MLServer's MLflow runtime
with the requests checked first.

The MLServer process gets a PYTHONPATH holding only this `serving` package and runs in the
temporary folder: the model code it runs is the pyfunc's (the registered copy of trainers/), not
the checkout's.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from components.registry import CHAMPION_ALIAS, MlflowRegistry, ModelVersion

SERVING_DIR = Path(__file__).resolve().parent
BOOTSTRAP = SERVING_DIR / "bootstrap.sh"
RUNTIME = "serving.runtime.MnistRuntime"
# KServe's ports for MLServer: REST 8080, gRPC 8081; MLServer's metrics 8082.
DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT = 8080, 8081, 8082
# 8 MiB: a batch of about 3,000 images as JSON; the runtime's own limit is MAX_BATCH images.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH = 1024


class ServingError(RuntimeError):
    """The server could not be started; the message says why (and holds the end of its log)."""


def serving_venv(explicit: str = "") -> str:
    """The serving environment: `explicit`, else $MNIST_SERVING_VENV (e.g. one baked into an image),
    else serving/bootstrap.sh's (created on first use)."""
    explicit = explicit or os.environ.get("MNIST_SERVING_VENV", "")
    if explicit:
        return explicit
    result = subprocess.run([str(BOOTSTRAP)], check=False, stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise ServingError(f"{BOOTSTRAP} failed (exit status {result.returncode}); its errors are above")
    return result.stdout.strip().splitlines()[-1]


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports on 127.0.0.1 (held together while chosen)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def download_champion(registry: MlflowRegistry, dst_dir: str) -> tuple[ModelVersion, str]:
    """The champion's version and its MLflow pyfunc folder (the one holding MLmodel), in `dst_dir`."""
    found = registry.download_champion(dst_dir)
    if found is None:
        raise ServingError(f"{registry.model_name} has no version with the alias {CHAMPION_ALIAS} at "
                           f"{registry.uri}: nothing to serve (run the pipeline first, or `registry rollback`)")
    version, exported = found
    pyfunc_dir = os.path.dirname(os.path.dirname(exported))  # <pyfunc>/artifacts/<name>/model_meta.json
    if not os.path.isfile(os.path.join(pyfunc_dir, "MLmodel")):
        raise ServingError(f"version {version.version} of {registry.model_name}: no MLmodel file in {pyfunc_dir}")
    return version, pyfunc_dir


def write_settings(folder: str, model_name: str, version: str, pyfunc_dir: str, *, host: str, http_port: int,
                   grpc_port: int, metrics_port: int, max_body_bytes: int, max_batch: int,
                   parallel_workers: int) -> None:
    """MLServer's settings.json (the server) and <model>/model-settings.json (the model) in `folder`."""
    settings = {
        "debug": False, "host": host, "http_port": http_port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "parallel_workers": parallel_workers,
        "grpc_max_message_length": max_body_bytes, "load_models_at_startup": True,
    }
    model_settings = {
        "name": model_name, "implementation": RUNTIME,
        "parameters": {"uri": pyfunc_dir, "version": version, "extra": {"max_batch": max_batch}},
    }
    Path(folder, "settings.json").write_text(json.dumps(settings, indent=2))
    Path(folder, model_name).mkdir(exist_ok=True)
    Path(folder, model_name, "model-settings.json").write_text(json.dumps(model_settings, indent=2))


@dataclasses.dataclass
class Server:
    """A running MLServer serving one registered version; `stop()` ends it (and its workers)."""

    model_name: str
    version: ModelVersion
    registry_uri: str
    host: str
    http_port: int
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen
    work_dir: str
    log_path: str | None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def infer_url(self) -> str:
        return f"{self.http_url}/v2/models/{self.model_name}/infer"

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_path or not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, errors="replace") as f:
            return f.read()[-chars:]

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (MLServer stops its workers and exits), then SIGKILL to its process group if it hangs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # its own session: the server and its workers
                self.process.wait(10)
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the process that started it dies (Linux), so that a
    killed `serve` leaves no server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start(registry_uri: str, model_name: str, *, host: str = "127.0.0.1", http_port: int = DEFAULT_HTTP_PORT,
          grpc_port: int = DEFAULT_GRPC_PORT, metrics_port: int = DEFAULT_METRICS_PORT,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
          parallel_workers: int = 1, venv: str = "", log_path: str | None = None,
          ready_timeout_s: float = 300.0) -> Server:
    """Starts MLServer for the champion of `model_name` at `registry_uri`; returns once it is ready.

    Port 0 picks a free port. `log_path`: MLServer's output goes there (else to this terminal).
    """
    python = os.path.join(serving_venv(venv), "bin", "python")
    registry = MlflowRegistry(registry_uri, model_name)
    work_dir = tempfile.mkdtemp(prefix="mnist-serve-")
    try:
        version, pyfunc_dir = download_champion(registry, os.path.join(work_dir, "download"))
        spare = free_ports(3)
        http_port, grpc_port, metrics_port = (p or spare[i] for i, p in enumerate((http_port, grpc_port, metrics_port)))
        server_dir = os.path.join(work_dir, "mlserver")
        os.makedirs(server_dir)
        write_settings(server_dir, model_name, version.version, pyfunc_dir, host=host, http_port=http_port,
                       grpc_port=grpc_port, metrics_port=metrics_port, max_body_bytes=max_body_bytes,
                       max_batch=max_batch, parallel_workers=parallel_workers)
        python_path = os.path.join(work_dir, "pythonpath")
        os.makedirs(python_path)
        os.symlink(SERVING_DIR, os.path.join(python_path, "serving"))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PYTHONPATH=python_path, TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                   PYTHONDONTWRITEBYTECODE="1")
        log = open(log_path, "ab") if log_path else None  # noqa: SIM115 (the child holds it)
        try:
            process = subprocess.Popen(
                [python, "-m", "serving.launch", server_dir, "--max-body-bytes", str(max_body_bytes)],
                cwd=work_dir, env=env, stdout=log, stderr=subprocess.STDOUT if log else None,
                start_new_session=True,  # Ctrl-C reaches it through stop(), once, not twice
                preexec_fn=_die_with_parent)
        finally:
            if log:
                log.close()
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    server = Server(model_name, version, registry_uri, host, http_port, grpc_port, metrics_port, process,
                    work_dir, log_path)
    ready_url = f"{server.http_url}/v2/models/{model_name}/versions/{version.version}/ready"
    deadline = time.monotonic() + ready_timeout_s
    try:
        while not _ready(ready_url):
            if process.poll() is not None:
                raise ServingError(f"MLServer exited with status {process.returncode} before {model_name} version "
                                   f"{version.version} was ready\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise ServingError(f"MLServer did not get {model_name} version {version.version} ready in "
                                   f"{ready_timeout_s:.0f} s\n{server.log_tail()}")
            time.sleep(0.5)
    except BaseException:
        server.stop()
        raise
    return server
