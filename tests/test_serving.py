"""Serving the champion for real: a real MLServer process (the project's runtime, serving/bootstrap.sh's
environment) on 127.0.0.1 for the signed champion of a real registry holding the small real
models, real HTTP and gRPC requests, compared with the evaluator's recorded scores (scores.npz);
bad requests; a champion whose files do not match its signature, refused before and inside
MLServer; and the KServe InferenceService rendered from a real MLflow tracking server's registry
(proxied artifacts, as infra/mlflow runs it), before and after a rollback.

The serving environment is created by serving/bootstrap.sh on first use (once, then cached): a
broken bootstrap or server fails these tests, it never skips them.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

from components.kserve_deployer import inference_service as kserve
from components.registry import MlflowRegistry, embedded_uri
from conftest import run_evaluator, running_mlflow_server
from serving import client, commands
from serving import server as mlserver
from tests import serving_helpers as helpers
from trainers import common, manifest, model_format

NAME = helpers.NAME
FRAMEWORKS = helpers.FRAMEWORKS
# Probabilities go float32 -> JSON -> float32 unchanged; the server's TensorFlow (2.18, for
# protobuf 5) against the evaluator's (2.16) may differ in the last bits of a float32.
TOLERANCE = 1e-5
MAX_BODY_BYTES = 1024 * 1024  # small, so that the oversized request is cheap to send


@pytest.fixture(scope="module")
def serving_venv() -> str:
    return mlserver.serving_venv()


@pytest.fixture(scope="module")
def keys() -> tuple[bytes, bytes]:
    """The pusher's key pair (private, public PEM)."""
    return manifest.generate_key_pair()


@pytest.fixture(scope="module")
def scored(small_examples, small_models, tmp_path_factory):
    """The real evaluator on the small models: (evaluation.json, the scores it recorded)."""
    from components import artifacts
    from components.bakeoff_evaluator import scoring

    out = tmp_path_factory.mktemp("serving-evaluation")
    evaluation, _ = run_evaluator(small_examples, small_models, out, min_accuracy=0.5)
    return evaluation, scoring.load(str(out / "evaluation" / artifacts.SCORES_FILE))


@pytest.fixture(scope="module")
def test_split(small_examples) -> tuple[np.ndarray, np.ndarray]:
    """The test split the evaluator scored: uint8 images [N, 28, 28] and labels [N], in file order."""
    import tensorflow as tf

    files = sorted(str(p) for p in Path(small_examples.uri, "Split-test").iterdir())
    records = list(tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator())
    images, labels = common.parse_batch(tf.constant(records), common.image_and_label_spec())
    return images.numpy(), labels.numpy()


def _register_signed(registry: MlflowRegistry, small_models, framework: str, private_pem: bytes):
    """A real registered version with the pusher's signed layout, made the champion."""
    candidate = FRAMEWORKS[framework]
    return helpers.register_signed(registry, str(small_models[candidate] / "Format-Serving"), framework, private_pem,
                                   tags={"candidate": candidate})


def _register(registry: MlflowRegistry, small_models, framework: str, promote: bool = True):
    candidate = FRAMEWORKS[framework]
    version = registry.register(str(small_models[candidate] / "Format-Serving"), framework,
                                tags={"candidate": candidate, "pipeline_run_id": f"serving-test-{framework}"},
                                metrics={})
    if promote:
        registry.promote(version.version)
    return version


@pytest.fixture(scope="module")
def servers(small_models, serving_venv, keys, tmp_path_factory):
    """One real MLServer per framework, each serving that framework's model as the signed champion
    of its own embedded registry; started on first use, stopped at the end of the module."""
    started: dict[str, mlserver.Server] = {}
    private, public = keys

    def get(framework: str) -> mlserver.Server:
        if framework not in started:
            root = tmp_path_factory.mktemp(f"serve-{framework}")
            uri = embedded_uri(str(root / "registry"))
            version = _register_signed(MlflowRegistry(uri, NAME), small_models, framework, private)
            t0 = time.monotonic()
            started[framework] = mlserver.start(uri, NAME, http_port=0, grpc_port=0, metrics_port=0,
                                                max_body_bytes=MAX_BODY_BYTES, venv=serving_venv,
                                                public_key=public.decode(),
                                                log_path=str(root / "mlserver.log"), ready_timeout_s=240)
            print(f"MLServer for {framework} ready in {time.monotonic() - t0:.1f} s")
            assert started[framework].version.version == version.version
        return started[framework]

    yield get
    for server in started.values():
        assert server.stop() is not None


def _match(served: np.ndarray, labels: np.ndarray, recorded: np.ndarray, recorded_labels: np.ndarray) -> float:
    """Pairs every served row with a recorded row (the evaluator's order is Beam's, not the file's):
    each must have a recorded twin with the same label within TOLERANCE, a different one each.
    Returns the largest difference."""
    assert served.shape == recorded.shape, (served.shape, recorded.shape)
    distance = np.abs(served[:, None, :] - recorded[None, :, :]).max(axis=2)  # [served, recorded]
    twin = distance.argmin(axis=1)
    worst = float(distance[np.arange(len(served)), twin].max())
    assert worst <= TOLERANCE, f"a served row differs from every recorded row by {worst:g}"
    assert len(set(twin.tolist())) == len(twin), "served rows matched the same recorded row twice"
    np.testing.assert_array_equal(labels, recorded_labels[twin])
    return worst


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_served_champion_answers_as_the_evaluator_scored(framework, servers, scored, test_split, serving_venv,
                                                         tmp_path):
    evaluation, scores = scored
    candidate = FRAMEWORKS[framework]
    assert evaluation["candidates"][candidate]["framework"] == framework
    images, labels = test_split
    assert len(images) == len(scores.labels) == evaluation["data"]["examples"]
    server = servers(framework)

    # The model's metadata, as KServe's v2 clients read it.
    with urllib.request.urlopen(f"{server.http_url}/v2/models/{NAME}", timeout=10) as response:
        metadata = json.load(response)
    assert metadata["inputs"][0]["datatype"] == "UINT8" and metadata["inputs"][0]["shape"] == [-1, 28, 28]
    assert metadata["name"] == NAME and metadata["outputs"][0]["shape"] == [-1, 10]

    # Every test digit over HTTP, in batches of 100, against the probabilities scores.npz recorded.
    served = np.concatenate([client.infer_rest(server.infer_url, images[i:i + 100])
                             for i in range(0, len(images), 100)])
    assert served.dtype == np.float32 and served.shape == (len(images), 10)
    worst = _match(served, labels, scores.probs[candidate], scores.labels)
    print(f"{framework}: {len(images)} digits served, largest difference to scores.npz {worst:g}")
    # The versioned URL answers the same.
    versioned = f"{server.http_url}/v2/models/{NAME}/versions/{server.version.version}/infer"
    np.testing.assert_allclose(client.infer_rest(versioned, images[:5]), served[:5], atol=TOLERANCE, rtol=0)

    # gRPC (v2 ModelInfer), with MLServer's own stubs in the serving environment.
    np.save(tmp_path / "images.npy", images[:64])
    subprocess.run([os.path.join(serving_venv, "bin", "python"), "-m", "serving.client", "grpc",
                    server.grpc_address, NAME, str(tmp_path / "images.npy"), str(tmp_path / "probs.npy")],
                   check=True, cwd=Path(mlserver.SERVING_DIR).parent, timeout=120,
                   env={**os.environ, "PYTHONPATH": str(Path(mlserver.SERVING_DIR).parent)})
    np.testing.assert_allclose(np.load(tmp_path / "probs.npy"), served[:64], atol=TOLERANCE, rtol=0)


def _bad(server: mlserver.Server, body: dict | bytes, expected_status: int, *phrases: str,
         content_type: str = "application/json", headers: dict[str, str] | None = None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, answer = client.post(server.infer_url, raw, content_type=content_type, headers=headers)
    text = json.dumps(answer) if isinstance(answer, dict) else answer
    assert status == expected_status, f"expected HTTP {expected_status}, got {status}: {text[:500]}"
    for phrase in phrases:
        assert phrase in text, f"{phrase!r} not in the error: {text[:500]}"


def test_bad_requests_get_a_4xx_that_says_what_is_wrong_and_the_server_goes_on(servers, test_split):
    server = servers("keras")
    images, _ = test_split
    good = client.v2_request(images[:3])
    expected = client.infer_rest(server.infer_url, images[:3])

    def tensor(**changes):
        return {"inputs": [{**good["inputs"][0], **changes}]}

    flat = good["inputs"][0]["data"]
    cases = [
        ("wrong shape", tensor(shape=[3, 784]), 400, ("shape [3, 784]", "[N, 28, 28]")),
        ("wrong image size", tensor(shape=[1, 28, 27], data=flat[:28 * 27]), 400, ("shape [1, 28, 27]",)),
        ("shape and data disagree", tensor(shape=[4, 28, 28]), 400, ("2352 values", "needs 3136")),
        ("wrong dtype", tensor(datatype="FP32", data=[v / 255 for v in flat]), 400, ("datatype FP32", "UINT8")),
        ("floats labelled UINT8", tensor(data=[v + 0.5 for v in flat]), 400, ("non-integer",)),
        ("out of range high", tensor(data=[256] + flat[1:]), 400, ("out of range", "max 256", "0-255")),
        ("out of range low", tensor(data=[-1] + flat[1:]), 400, ("out of range", "min -1")),
        ("strings", tensor(data=["a"] * len(flat)), 400, ("strings",)),
        ("empty batch", tensor(shape=[0, 28, 28], data=[]), 400, ("empty batch",)),
        ("two inputs", {"inputs": good["inputs"] * 2}, 400, ("2 input tensors",)),
        ("no inputs", {"inputs": []}, 400, ("0 input tensors",)),
        ("not a v2 request", {"instances": [flat]}, 422, ("inputs",)),
        ("non-JSON", b"\x89PNG not json {", 422, ("JSON decode error",)),
        ("oversized payload", client.v2_request(np.zeros((600, 28, 28), np.uint8)), 413,
         ("too large", f"limit of {MAX_BODY_BYTES} bytes")),
        ("oversized once inflated", gzip.compress(json.dumps(client.v2_request(np.zeros((600, 28, 28), np.uint8)))
                                                  .encode()), 413, ("inflates",)),
    ]
    for what, body, status, phrases in cases:
        headers = {"Content-Encoding": "gzip"} if what == "oversized once inflated" else None
        try:
            _bad(server, body, status, *phrases, headers=headers)
        except AssertionError as e:
            raise AssertionError(f"{what}: {e}") from None
        # ...and the server still answers good requests, with the same answer.
        np.testing.assert_allclose(client.infer_rest(server.infer_url, images[:3]), expected, atol=0, rtol=0)
    with urllib.request.urlopen(f"{server.http_url}/v2/health/ready", timeout=10) as response:
        assert response.status == 200
    assert server.process.poll() is None


def test_the_model_repository_api_is_off_by_default(servers, serving_venv, test_split):
    """`serve` starts no repository token: REST /v2/repository/* gets 403 and both gRPC repository
    services PERMISSION_DENIED, with one line; the model goes on answering."""
    server = servers("keras")
    images, _ = test_split
    expected = client.infer_rest(server.infer_url, images[:3])
    for path in ("/v2/repository/index", f"/v2/repository/models/{NAME}/unload", f"/v2/repository/models/{NAME}/load"):
        status, answer = client.post(server.http_url + path, b"{}", headers={"Authorization": "Bearer anything"})
        assert status == 403 and answer == {"error": "the model repository API (index, load, unload) is off on this "
                                                     "server"}, (path, status, answer)
    repo = str(Path(mlserver.SERVING_DIR).parent)
    for service in ("inference", "model_repository"):
        result = subprocess.run([os.path.join(serving_venv, "bin", "python"), "-m", "serving.client", "grpc-unload",
                                 server.grpc_address, NAME, service], cwd=repo, env={**os.environ, "PYTHONPATH": repo},
                                capture_output=True, text=True, timeout=120, check=True)
        answer = json.loads(result.stdout.strip().splitlines()[-1])
        assert answer == {"code": "PERMISSION_DENIED",
                          "details": "the model repository API (index, load, unload) is off on this server"}, answer
    np.testing.assert_allclose(client.infer_rest(server.infer_url, images[:3]), expected, atol=0, rtol=0)


def _serve_command(uri: str, tmp_path: Path, serving_venv: str) -> tuple[list[str], int]:
    http_port, grpc_port, metrics_port = mlserver.free_ports(3)
    return [sys.executable, "-m", "pipelines", "serve", "--output-root", str(tmp_path), "--registry-uri", uri,
            "--registered-model-name", NAME, "--http-port", str(http_port), "--grpc-port", str(grpc_port),
            "--metrics-port", str(metrics_port), "--serving-venv", serving_venv], http_port


def test_serve_command_prints_the_urls_and_stops_cleanly_on_ctrl_c(small_models, serving_venv, keys, tmp_path):
    """`python -m pipelines serve`'s function in a real child process, the public key from the
    environment; SIGINT as a terminal's Ctrl-C sends it."""
    private, public = keys
    uri = embedded_uri(str(tmp_path / "registry"))
    version = _register_signed(MlflowRegistry(uri, NAME), small_models, "pytorch", private)
    command, http_port = _serve_command(uri, tmp_path, serving_venv)
    grpc_port = int(command[command.index("--grpc-port") + 1])
    repo = str(Path(mlserver.SERVING_DIR).parent)
    env = {**os.environ, "PYTHONPATH": repo, mlserver.PUBLIC_KEY_VARIABLE: public.decode()}
    process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        printed = "".join(lines)
        assert f"serving {NAME} version {version.version}" in printed, printed
        assert f"http://127.0.0.1:{http_port}/v2/models/{NAME}/infer" in printed
        assert f"127.0.0.1:{grpc_port}" in printed
        images = np.zeros((2, 28, 28), np.uint8)
        assert client.infer_rest(f"http://127.0.0.1:{http_port}/v2/models/{NAME}/infer", images).shape == (2, 10)
        process.send_signal(2)  # SIGINT
        t0 = time.monotonic()
        try:
            rest, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired as e:  # say who still holds the output pipe open, and in what state
            pytest.fail(f"no end of output 60 s after Ctrl-C; `serve` exit status {process.poll()}; its processes:\n"
                        f"{_process_tree(process.pid)}\noutput so far:\n{printed}{e.output or ''}")
        print(f"stopped {time.monotonic() - t0:.1f} s after Ctrl-C")
    finally:
        if process.poll() is None:
            _kill_tree(process.pid)
    assert process.returncode == 0, printed + rest
    assert "stopped" in rest, rest
    with pytest.raises(OSError):  # nothing listens any more
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=5)


class _CtrlCDuringBanner(io.StringIO):
    """An output stream that gets Ctrl-C while `serve` prints its banner, once: the race a loaded
    machine opens between the banner and the wait for MLServer."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted = False

    def write(self, text: str) -> int:
        if "Ctrl-C stops it" in text and not self.interrupted:
            self.interrupted = True
            raise KeyboardInterrupt
        return super().write(text)


def test_ctrl_c_while_serve_prints_its_banner_still_stops_the_server(small_models, serving_venv, keys, tmp_path):
    """The server is up and the banner is being printed when Ctrl-C comes: `serve` stops MLServer
    (nothing listens afterwards, no child is left) and exits 0, as for a Ctrl-C later on."""
    private, public = keys
    uri = embedded_uri(str(tmp_path / "registry"))
    _register_signed(MlflowRegistry(uri, NAME), small_models, "pytorch", private)
    (tmp_path / "public.pem").write_bytes(public)
    http_port, grpc_port, metrics_port = mlserver.free_ports(3)
    out = _CtrlCDuringBanner()
    before = set(_children(os.getpid()))
    try:
        try:
            status = commands.serve(uri, NAME, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                                    venv=serving_venv, public_key_file=str(tmp_path / "public.pem"), out=out)
        except KeyboardInterrupt:  # caught: pytest would take it for the user's own Ctrl-C and stop the session
            status = "KeyboardInterrupt escaped serve()"
        left = set(_children(os.getpid())) - before
    finally:
        for pid in set(_children(os.getpid())) - before:
            _kill_tree(pid)
    assert out.interrupted, out.getvalue()
    assert status == 0 and "stopped (MLServer exit status" in out.getvalue(), (status, out.getvalue())
    assert not left, f"left running after serve returned: {left}"
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=5)


def test_a_ctrl_c_handed_to_another_thread_still_interrupts_the_wait_for_mlserver():
    """The kernel may give a process's SIGINT to any thread; Python then only flags it for the main
    thread. The wait must come back to Python to act on it, not sleep on until MLServer exits."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(15)"])
    release = threading.Event()
    other = threading.Thread(target=release.wait, daemon=True)
    other.start()
    timer = threading.Timer(1.0, signal.pthread_kill, (other.ident, signal.SIGINT))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as serve sets it
    start = time.monotonic()
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            commands.wait_interruptibly(child)
        waited = time.monotonic() - start
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
        release.set()
        child.kill()
        child.wait()
    assert waited < 5, f"the Ctrl-C was acted on only after {waited:.1f} s (the child's exit ends a blocking wait)"


def test_serve_unblocks_a_ctrl_c_its_parent_blocked(tmp_path):
    """Started as a shell's background job (SIGINT ignored) by a parent that blocked SIGINT (a mask
    survives exec), `serve` would never see a Ctrl-C; it sets both back."""
    script = ("import signal, sys\nfrom serving import commands\n"
              f"status = commands.serve({embedded_uri(str(tmp_path / 'registry'))!r}, {NAME!r}, venv=sys.executable)\n"
              "blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])\n"
              "handled = signal.getsignal(signal.SIGINT) is signal.default_int_handler\n"
              "print('status', status, 'SIGINT blocked', blocked, 'handled', handled)")
    repo = str(Path(mlserver.SERVING_DIR).parent)
    done = subprocess.run([sys.executable, "-c", script], cwd=repo, env={**os.environ, "PYTHONPATH": repo},
                          preexec_fn=_as_a_background_job_with_sigint_blocked,
                          capture_output=True, text=True, timeout=300)
    assert "status 1 SIGINT blocked False handled True" in done.stdout, (done.stdout, done.stderr[-2000:])


def _as_a_background_job_with_sigint_blocked() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def _children(pid: int) -> list[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return []
    found = []
    for task in tasks:
        try:
            found += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
        except FileNotFoundError:
            pass
    return found


def _descendants(pid: int) -> list[int]:
    found = []
    for child in _children(pid):
        found += [child, *_descendants(child)]
    return found


def _process_tree(pid: int) -> str:
    lines = []
    for p in [pid, *_descendants(pid)]:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
            command = Path(f"/proc/{p}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (FileNotFoundError, IndexError):
            continue
        status = {k: v.strip() for k, v in (line.split(":", 1) for line in
                                            Path(f"/proc/{p}/status").read_text().splitlines() if ":" in line)}
        signals = " ".join(f"{k}={status.get(k, '?')}" for k in ("Threads", "SigPnd", "ShdPnd", "SigBlk", "SigIgn"))
        wchan = Path(f"/proc/{p}/wchan").read_text() if os.path.exists(f"/proc/{p}/wchan") else "?"
        lines.append(f"  {p} {state} {signals} wchan={wchan} {command[:200]}")
    return "\n".join(lines) or "  (none left)"


def _kill_tree(pid: int) -> None:
    """Kills `pid` and what it started, by pid (a failed test leaves no server behind)."""
    for p in [*_descendants(pid), pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def test_serve_refuses_a_champion_whose_files_do_not_match_their_signature(small_models, serving_venv, keys,
                                                                          tmp_path):
    """A weight file of the registered champion changed in the artifact store after signing (the
    export still loads): `serve` says so in one line and exits 1; nothing is started."""
    private, public = keys
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, NAME)
    version = _register_signed(registry, small_models, "pytorch", private)
    export = helpers.run_artifacts(registry, version) / model_format.SIGNED_DIR / model_format.EXPORT_IN_SIGNED
    helpers.tamper_weights(str(export))
    command, http_port = _serve_command(uri, tmp_path, serving_venv)
    repo = str(Path(mlserver.SERVING_DIR).parent)
    env = {**os.environ, "PYTHONPATH": repo, mlserver.PUBLIC_KEY_VARIABLE: public.decode()}
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    line = helpers.refusal_line(str(export.parents[2]), public, f"{NAME} version {version.version}")
    assert line.startswith(f"{NAME} version {version.version}: ") and line.endswith("it is not loaded"), line
    assert [entry for entry in result.stderr.splitlines() if entry.startswith("error:")] == [f"error: {line}"], \
        result.stderr
    with pytest.raises(OSError):  # nothing was started
        urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=5)

    # Without the public key nothing is served either (and a user without keys of their own has none).
    env.pop(mlserver.PUBLIC_KEY_VARIABLE)
    for variable in (mlserver.PUBLIC_KEY_FILE_VARIABLE, manifest.SIGNING_KEY_VARIABLE,
                     manifest.SIGNING_KEY_FILE_VARIABLE):
        env.pop(variable, None)
    env["HOME"] = str(tmp_path / "home")
    result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "no public key to verify its signed files with" in result.stderr, result.stderr


def test_mlserver_itself_refuses_to_start_on_a_tampered_version(small_models, serving_venv, keys, tmp_path):
    """The runtime's own check, where the pipeline's is skipped: MLServer started on a version
    changed after signing logs the one line, loads nothing and exits."""
    private, public = keys
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, NAME)
    version = _register_signed(registry, small_models, "keras", private)
    signed = helpers.run_artifacts(registry, version) / model_format.SIGNED_DIR
    (signed / model_format.EXPORT_IN_SIGNED / "extra.py").write_text("print('added after signing')\n")
    what = f"{NAME} version {version.version}"
    folder, http_port, grpc_port, _ = helpers.server_folder(
        tmp_path / "server", {NAME: helpers.runtime_settings(str(signed), public, what)})
    process = mlserver.spawn_mlserver(serving_venv, str(folder), str(tmp_path / "run"), mlserver.GuardOptions(),
                                      str(tmp_path / "mlserver.log"))
    try:
        assert process.wait(240) == 1
    finally:
        mlserver._kill_group(process.pid)
    log = (tmp_path / "mlserver.log").read_text()
    line = helpers.refusal_line(str(signed), public, what)
    assert line.startswith(f"{what}: ") and "extra.py" in line, line
    assert any(entry.endswith(line) for entry in log.splitlines()), log[-3000:]
    assert f"Loaded model '{NAME}' successfully" not in log


# --- KServe ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracking_server(tmp_path_factory):
    """A real MLflow tracking server proxying artifacts, as infra/mlflow runs it (there: to s3://mlflow/artifacts)."""
    with running_mlflow_server(tmp_path_factory.mktemp("kserve-mlflow"), workers=1) as server:
        yield server


def test_inference_service_follows_the_champion_and_rollback(tracking_server, small_models, tmp_path):
    uri, artifacts_dir = tracking_server
    registry = MlflowRegistry(uri, NAME, lock_uri="none")  # a SQLite-backed server: one writer here
    first = _register(registry, small_models, "keras")
    second = _register(registry, small_models, "pytorch")
    def rendered(**options) -> dict:
        out = tmp_path / "isvc.yaml"
        assert commands.render_inference_service(uri, NAME, output=str(out), **options) == 0
        isvc = yaml.safe_load(out.read_text())
        kserve.validate(isvc)  # what kubectl would send, read back from the file
        return isvc

    def stored_path(storage: str) -> Path:
        assert storage.startswith("s3://mlflow/artifacts/"), storage
        return artifacts_dir / storage[len("s3://mlflow/artifacts/"):]

    isvc = rendered(canary_traffic_percent=10, service_account="models-reader", namespace="models")
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    assert isvc["metadata"] == {**isvc["metadata"], "name": NAME, "namespace": "models"}
    assert model["modelFormat"] == {"name": "mlflow"} and model["protocolVersion"] == "v2"
    assert model["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}
    assert predictor["serviceAccountName"] == "models-reader" and predictor["canaryTrafficPercent"] == 10
    assert isvc["metadata"]["annotations"]["mnist-bakeoff/model-version"] == second.version
    # storageUri: the champion's signed files in the bucket (here the local folder the proxy writes
    # to), for the project's verifying runtime: signed/ and manifest.sig.
    assert model["runtime"] == "mnist-mlserver-verified" and not model["storageUri"].startswith("models:/")
    assert (stored_path(model["storageUri"]) / "manifest.sig").is_file()
    assert (stored_path(model["storageUri"]) / "signed" / "model" / "MLmodel").is_file()
    second_storage = model["storageUri"]

    registry.rollback(first.version, reason="serving test")
    isvc = rendered()
    assert isvc["metadata"]["annotations"]["mnist-bakeoff/model-version"] == first.version
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]
    first_storage = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert first_storage != second_storage and (stored_path(first_storage) / "manifest.sig").is_file()
    meta = json.loads((stored_path(first_storage) / "signed" / model_format.EXPORT_IN_SIGNED /
                       "model_meta.json").read_text())
    assert meta["framework"] == "keras"


def test_inference_service_schema_refuses_what_kserve_would(tmp_path):
    from components.registry import ModelVersion

    version = ModelVersion(NAME, "3", {}, ("champion",))
    good = kserve.inference_service(NAME, version, "s3://mlflow/artifacts/1/abc/artifacts/model",
                                    canary_traffic_percent=20)
    kserve.validate(good)

    def broken(change) -> dict:
        isvc = json.loads(json.dumps(good))
        change(isvc)
        return isvc

    predictor = lambda isvc: isvc["spec"]["predictor"]  # noqa: E731
    cases = {
        "storageUri": lambda i: predictor(i)["model"].update(storageUri=["s3://x"]),
        "storageURI": lambda i: predictor(i)["model"].update(storageURI="s3://x"),  # misspelt: unknown field
        "modelFormat": lambda i: predictor(i)["model"].pop("modelFormat"),  # required
        "canaryTrafficPercent": lambda i: predictor(i).update(canaryTrafficPercent=150),
        "minReplicas": lambda i: predictor(i).update(minReplicas="one"),
        "limits": lambda i: predictor(i)["model"]["resources"].update(limits=["2"]),
        "metadata.name": lambda i: i["metadata"].update(name="Mnist_Digits"),
        "apiVersion": lambda i: i.update(apiVersion="serving.kserve.io/v1alpha1"),
        "models:/": lambda i: predictor(i)["model"].update(storageUri=f"models:/{NAME}@champion"),
    }
    for what, change in cases.items():
        with pytest.raises(kserve.RenderError, match="not a valid KServe InferenceService") as error:
            kserve.validate(broken(change))
        assert what.split(".")[-1].rstrip(":/") in str(error.value) or what == "modelFormat", (what, error.value)

    assert kserve.storage_uri("mlflow-artifacts:/1/abc/artifacts/model", "s3://mlflow/artifacts/") == \
        "s3://mlflow/artifacts/1/abc/artifacts/model"
    assert kserve.storage_uri("mlflow-artifacts://mlflow:5000/1/abc/artifacts/model", "gs://b/mlflow") == \
        "gs://b/mlflow/1/abc/artifacts/model"
    assert kserve.storage_uri("gs://bucket/models/1") == "gs://bucket/models/1"
    for local in ("file:///tmp/registry/artifacts/1/abc/artifacts/model", "/tmp/model", f"models:/{NAME}/3"):
        with pytest.raises(kserve.RenderError):
            kserve.storage_uri(local)


def test_embedded_registry_cannot_be_rendered_for_a_cluster(small_models, tmp_path, capsys):
    uri = embedded_uri(str(tmp_path / "registry"))
    _register(MlflowRegistry(uri, NAME), small_models, "keras")
    assert commands.render_inference_service(uri, NAME) == 1
    assert "not in an object store a cluster can read" in capsys.readouterr().err
