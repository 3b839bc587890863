"""Starts MLServer (v2 protocol over REST and gRPC) for the registry's champion, verified.

Runs in the pipeline's environment: it resolves `models:/<name>@champion` through the registry
client (components/registry.py) to one version, downloads that version's run artifacts
(`fetch_champion`: `signed/` and the `manifest.sig` beside it), checks every signed file against
the pusher's public key here first (a mismatch: one line, nothing started), writes MLServer's
settings.json and model-settings.json in a temporary folder, and starts MLServer in the serving
environment (serving/bootstrap.sh) on 127.0.0.1 with serving/launch.py (MLServer's own CLI behind
the project's guard: body limit, gzip, JSON depth, deadline, repository API off).
The download and the first check are the registry client's (components/registry.py:
download_verified).

The runtime is serving/runtime.py:MnistRuntime, which verifies the files again where they are
loaded and loads the export with the checkout's own trainers/loader.py: the MLServer process gets
a PYTHONPATH holding only this checkout's `serving` and `trainers` packages and runs in the
temporary folder. Nothing stored with the version (the pyfunc's pickle, registry_pyfunc.py,
code/trainers/) is imported or unpickled.
"""

from __future__ import annotations

import dataclasses
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

from components.registry import CHAMPION_ALIAS, MlflowRegistry, ModelVersion, RegistryError
from serving.mlserver_config import write_settings

SERVING_DIR = Path(__file__).resolve().parent
TRAINERS_DIR = SERVING_DIR.parent / "trainers"
BOOTSTRAP = SERVING_DIR / "bootstrap.sh"
# KServe's ports for MLServer: REST 8080, gRPC 8081; MLServer's metrics 8082.
DEFAULT_HTTP_PORT, DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT = 8080, 8081, 8082
# 8 MiB: a batch of about 3,000 images as JSON; the runtime's own limit is MAX_BATCH images.
DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_JSON_DEPTH = 32
DEFAULT_DEADLINE_S = 30.0
# The pusher's public key (PEM), to verify a version's signed manifest with; or a file holding it.
PUBLIC_KEY_VARIABLE = "MNIST_MODEL_VERIFY_KEY"
PUBLIC_KEY_FILE_VARIABLE = "MNIST_MODEL_VERIFY_KEY_FILE"
# SIGTERM, then this long for MLServer to stop its workers, then SIGKILL to its process group.
STOP_GRACE_S = 10.0


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


def public_key_from_environment(environ: dict[str, str] | None = None) -> str:
    """The pusher's public key: $MNIST_MODEL_VERIFY_KEY or the file $MNIST_MODEL_VERIFY_KEY_FILE
    names (trainers/manifest.py); "" when neither is set."""
    from trainers import manifest

    found = manifest.verify_key_from_environment(environ)
    return found.decode() if found else ""


def describe(version: ModelVersion) -> str:
    """How messages name a version, e.g. "mnist-digits version 3" (the label it is verified under)."""
    return f"{version.name} version {version.version}"


def fetch_champion(registry: MlflowRegistry, dst_dir: str, public_pem: str) -> tuple[ModelVersion, str]:
    """The champion's version and its `signed/` folder (with manifest.sig beside it) in `dst_dir`,
    downloaded and verified by the registry client (its source inside the registry, every file
    as signed): a refusal is one line, and nothing is started."""
    from trainers.manifest import ManifestError

    if not public_pem:
        raise ServingError(f"{registry.model_name}'s champion: no public key to verify its signed files with (set "
                           f"${PUBLIC_KEY_FILE_VARIABLE} or ${PUBLIC_KEY_VARIABLE}); nothing served")
    champion = registry.champion()
    if champion is None:
        raise ServingError(f"{registry.model_name} has no version with the alias {CHAMPION_ALIAS} at "
                           f"{registry.uri}: nothing to serve (run the pipeline first, or `registry rollback`)")
    try:
        verified = registry.download_verified(champion, dst_dir, public_pem)
        verified.model_dir  # noqa: B018 (refuses a version without an export)
    except (RegistryError, ManifestError) as e:
        raise ServingError(str(e)) from None
    return champion, verified.signed_dir


def stop_on_signals() -> None:
    """Ctrl-C, and a TERM (a supervisor, `kill`), raise KeyboardInterrupt in the caller, so the
    servers it started (MLServer runs in its own session) are stopped too. Both are set here: a
    shell's background job starts with INT ignored, and a signal mask survives exec."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


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

    def stop(self, timeout_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM (MLServer stops its workers and exits), then SIGKILL to its process group if it
        has not exited within `timeout_s`; workers it left behind go with the group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(self.process.pid)
                self.process.wait(10)
        _kill_group(self.process.pid)  # its own session: nothing else is in it
        shutil.rmtree(self.work_dir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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


@dataclasses.dataclass(frozen=True)
class GuardOptions:
    """serving/launch.py's guard in front of MLServer (see there)."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    deadline_s: float = DEFAULT_DEADLINE_S
    repository_token_file: str = ""  # "": the model-repository API is off

    def arguments(self) -> list[str]:
        extra = ["--repository-token-file", self.repository_token_file] if self.repository_token_file else []
        return ["--max-body-bytes", str(self.max_body_bytes), "--max-json-depth", str(self.max_json_depth),
                "--deadline-s", str(self.deadline_s), *extra]


def serving_pythonpath(work_dir: str) -> str:
    """A folder holding only this checkout's `serving` and `trainers` packages (links), for the
    MLServer process: the code it runs is the checkout's, never the registry's copy."""
    python_path = os.path.join(work_dir, "pythonpath")
    os.makedirs(python_path, exist_ok=True)
    for package in (SERVING_DIR, TRAINERS_DIR):
        if not os.path.lexists(os.path.join(python_path, package.name)):
            os.symlink(package, os.path.join(python_path, package.name))
    return python_path


def spawn_mlserver(venv: str, server_dir: str, work_dir: str, guard: GuardOptions | None,
                   log_path: str | None) -> subprocess.Popen:
    """MLServer on `server_dir` in the serving environment `venv`: behind the guard
    (serving/launch.py), or with `guard=None` as stock `mlserver start` (for comparison only)."""
    python = os.path.join(venv, "bin", "python")
    command = ([python, "-m", "serving.launch", server_dir, *guard.arguments()] if guard is not None
               else [os.path.join(venv, "bin", "mlserver"), "start", server_dir])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=serving_pythonpath(work_dir), TF_CPP_MIN_LOG_LEVEL=env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
               PYTHONDONTWRITEBYTECODE="1")
    log = open(log_path, "ab") if log_path else None  # noqa: SIM115 (the child holds it)
    try:
        # In its own settings folder: MLServer puts its working directory and that folder first on
        # sys.path, and neither holds anything from the registry.
        return subprocess.Popen(command, cwd=server_dir, env=env, stdout=log,
                                stderr=subprocess.STDOUT if log else None,
                                start_new_session=True,  # Ctrl-C reaches it through stop(), once, not twice
                                preexec_fn=_die_with_parent)
    finally:
        if log:
            log.close()


def wait_until_ready(server: Server, ready_timeout_s: float) -> Server:
    """Returns `server` once its model answers ready; stops it and raises ServingError if it exits
    or is not ready in time."""
    ready_url = f"{server.http_url}/v2/models/{server.model_name}/versions/{server.version.version}/ready"
    what = describe(server.version)
    deadline = time.monotonic() + ready_timeout_s
    try:
        while not _ready(ready_url):
            if server.process.poll() is not None:
                raise ServingError(f"MLServer exited with status {server.process.returncode} before {what} was "
                                   f"ready\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise ServingError(f"MLServer did not get {what} ready in {ready_timeout_s:.0f} s\n{server.log_tail()}")
            time.sleep(0.5)
    except BaseException:
        server.stop()
        raise
    return server


def start(registry_uri: str, model_name: str, *, host: str = "127.0.0.1", http_port: int = DEFAULT_HTTP_PORT,
          grpc_port: int = DEFAULT_GRPC_PORT, metrics_port: int = DEFAULT_METRICS_PORT,
          max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, max_batch: int = DEFAULT_MAX_BATCH,
          parallel_workers: int = 1, venv: str = "", log_path: str | None = None,
          ready_timeout_s: float = 300.0, public_key: str = "", max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
          deadline_s: float = DEFAULT_DEADLINE_S, repository_token_file: str = "", adaptive_batch_size: int = 0,
          adaptive_batch_time_s: float = 0.0) -> Server:
    """Starts MLServer for the champion of `model_name` at `registry_uri`, once its signed files
    verify with `public_key` (PEM; default: public_key_from_environment()); returns once it is ready.

    Port 0 picks a free port. `log_path`: MLServer's output goes there (else to this terminal).
    """
    venv = serving_venv(venv)
    public_pem = public_key or public_key_from_environment()
    registry = MlflowRegistry(registry_uri, model_name)
    work_dir = tempfile.mkdtemp(prefix="mnist-serve-")
    try:
        version, signed_dir = fetch_champion(registry, os.path.join(work_dir, "download"), public_pem)
        spare = free_ports(3)
        http_port, grpc_port, metrics_port = (p or spare[i] for i, p in enumerate((http_port, grpc_port, metrics_port)))
        server_dir = os.path.join(work_dir, "mlserver")
        os.makedirs(server_dir)
        write_settings(server_dir, model_name, version.version, signed_dir, host=host, http_port=http_port,
                       grpc_port=grpc_port, metrics_port=metrics_port, max_body_bytes=max_body_bytes,
                       max_batch=max_batch, parallel_workers=parallel_workers, public_pem=public_pem,
                       what=describe(version), adaptive_batch_size=adaptive_batch_size,
                       adaptive_batch_time_s=adaptive_batch_time_s)
        guard = GuardOptions(max_body_bytes, max_json_depth, deadline_s, repository_token_file)
        process = spawn_mlserver(venv, server_dir, work_dir, guard, log_path)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    server = Server(model_name, version, registry_uri, host, http_port, grpc_port, metrics_port, process,
                    work_dir, log_path)
    return wait_until_ready(server, ready_timeout_s)
