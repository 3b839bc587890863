"""Data-parallel training on this machine: N worker processes of a trainer's run_fn, each given the
environment its engine would give it, and the 1-vs-N measurement.

    PYTHONPATH=. python -m bench.workers --framework pytorch --workers 2 --examples EXAMPLES_DIR --out DIR
    PYTHONPATH=. python -m bench.workers --framework keras pytorch --workers 1 2 --train-limit 6000 --out DIR

- pytorch: MASTER_ADDR=127.0.0.1, MASTER_PORT (a free port), WORLD_SIZE, RANK, LOCAL_RANK,
  LOCAL_WORLD_SIZE, as torchrun sets them (a PyTorchJob or Kubeflow Trainer pod gets the first four).
- keras: TF_CONFIG={"cluster": {"worker": ["127.0.0.1:PORT", ...]}, "task": {"type": "worker",
  "index": RANK}}, as a TFJob or Vertex AI worker pools set it.
Every worker gets the same FnArgs (the same files and output folders, as the Trainer component's
workers do), built as the tests' `train` builds them. One worker failing stops the others; the
error names it and ends with its log. --examples takes an Examples artifact's folder (Split-train,
Split-eval, Split-test); without it, one is made from the MNIST IDX files in --mnist by the
pipeline's MnistExampleGen executor, --train-limit training images.

The measurement prints, per framework and worker count: the wall time from launch to the last
exit, and where the chief's time went: startup (launch -> training starts: interpreter, imports,
the rendezvous, reading the data), training (epochs, with DDP's own split of a step into compute and
gradient communication for PyTorch), the rest (export, exit); then accuracy on the test split.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FRAMEWORKS = {"keras": "trainers.keras_trainer", "pytorch": "trainers.torch_trainer"}
# Every engine variable a worker may inherit: each worker gets only its own framework's.
ENGINE_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                    "TF_CONFIG")
# The tests' training settings (conftest.FAST_TRAINING, seed 1, CPU): the defaults of a launch.
FAST_TRAINING = {"model": "seed_cnn", "batch_size": 32, "learning_rate": 1e-3, "lr_schedule": "constant",
                 "seed": 1, "accelerator": "cpu"}


class WorkerFailed(RuntimeError):
    """A worker exited with an error (or the launch timed out); the others were stopped."""


@dataclasses.dataclass(frozen=True)
class Launch:
    framework: str
    workers: int
    seconds: float  # launch -> the last worker's exit
    launched_at: float  # time.time() at launch, to compare with the chief's started_at
    logs: list[Path]


def fn_args(examples_uri: str, out_dir: Path, epochs: int = 1, **config) -> dict:
    """The FnArgs fields every worker gets, as conftest.train builds them (JSON-able)."""
    return {
        "train_files": [os.path.join(examples_uri, "Split-train", "*")],
        "eval_files": [os.path.join(examples_uri, "Split-eval", "*")],
        "serving_model_dir": str(out_dir / "Format-Serving"),
        "model_run_dir": str(out_dir / "run"),
        "custom_config": {**FAST_TRAINING, "epochs": epochs, **config},
    }


def free_ports(count: int) -> list[int]:
    """`count` distinct ports nothing listens on now (held open together so they differ)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def worker_env(framework: str, rank: int, workers: int, ports: list[int], base: dict[str, str]) -> dict[str, str]:
    """The environment of worker `rank`, as the framework's engines set it."""
    env = {k: v for k, v in base.items() if k not in ENGINE_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), base.get("PYTHONPATH")]))
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if framework == "pytorch":
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(ports[0]), WORLD_SIZE=str(workers), RANK=str(rank),
                   LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(workers))
    else:
        env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                                       "task": {"type": "worker", "index": rank}})
    return env


def _stop(process: subprocess.Popen) -> None:
    """Ends a worker we started (its own process group, so nothing else) and waits for it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def launch(framework: str, workers: int, args: dict, log_dir: Path, timeout_s: float = 600) -> Launch:
    """Runs `workers` processes of the framework's run_fn with `args` (see fn_args) and waits for
    all of them. Raises WorkerFailed, after stopping the rest, when one fails or time runs out.
    Each worker's output goes to log_dir/worker-RANK.log."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework {framework!r} is not one of {sorted(FRAMEWORKS)}")
    log_dir.mkdir(parents=True, exist_ok=True)
    ports = free_ports(1 if framework == "pytorch" else workers)
    logs = [log_dir / f"worker-{rank}.log" for rank in range(workers)]
    launched_at, started = time.time(), time.monotonic()
    processes: list[subprocess.Popen] = []
    try:
        for rank, log in enumerate(logs):
            with open(log, "wb") as out:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.workers", "--run-worker", framework, str(rank), json.dumps(args)],
                    cwd=REPO, env=worker_env(framework, rank, workers, ports, dict(os.environ)),
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True))
        while any(p.poll() is None for p in processes):
            failed = [rank for rank, p in enumerate(processes) if p.returncode not in (None, 0)]
            if failed:
                rank = failed[0]
                raise WorkerFailed(f"{framework} worker {rank} of {workers} exited with code "
                                   f"{processes[rank].returncode}; its log ({logs[rank]}) ends:\n{_tail(logs[rank])}")
            if time.monotonic() - started > timeout_s:
                raise WorkerFailed(f"{framework}: {workers} workers still running after {timeout_s:.0f} s; "
                                   f"worker 0's log ends:\n{_tail(logs[0])}")
            time.sleep(0.2)
        failed = [rank for rank, p in enumerate(processes) if p.returncode != 0]
        if failed:
            raise WorkerFailed(f"{framework} worker {failed[0]} of {workers} exited with code "
                               f"{processes[failed[0]].returncode}; its log ends:\n{_tail(logs[failed[0]])}")
    finally:
        for process in processes:
            _stop(process)
    return Launch(framework, workers, round(time.monotonic() - started, 2), launched_at, logs)


def run_worker(framework: str, rank: str, args_json: str) -> None:
    """One worker: the framework's run_fn with these FnArgs, in this process (its engine variables
    are already in the environment). Its epoch lines go to its log."""
    import importlib

    from tfx.components.trainer.fn_args_utils import FnArgs

    progress = logging.getLogger("trainers.progress")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(f"%(asctime)s worker {rank}: %(message)s"))
    progress.addHandler(handler)
    progress.setLevel(logging.INFO)
    progress.propagate = False  # TensorFlow's absl handler on the root logger would print each line again
    importlib.import_module(FRAMEWORKS[framework]).run_fn(FnArgs(**json.loads(args_json)))


# --- the measurement ---------------------------------------------------------------------------
def make_examples(mnist_dir: str, out_dir: Path, train_limit: int, test_limit: int = 2000) -> str:
    """A real MNIST subset as an Examples artifact, written by the pipeline's own ingest executor."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.mnist_example_gen import executor

    examples = standard_artifacts.Examples()
    examples.uri = str(out_dir / "examples")
    props = {executor.SOURCE: mnist_dir, executor.CACHE_DIR: str(out_dir / "cache"), "train_limit": train_limit,
             "test_limit": test_limit, "eval_ratio": 0.1}
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=[
        "--direct_running_mode=in_memory", "--sdk_container_image=unused-by-the-direct-runner"])
    executor.Executor(context).Do({}, {"examples": [examples]}, props)
    return examples.uri


def accuracy_on_test_split(model_dir: str, examples_uri: str) -> float:
    """The exported model's accuracy on the Examples' test split."""
    from trainers import common, loader

    predict, _meta = loader.load_predictor(model_dir)
    hits = seen = 0
    for images, labels in common.make_dataset([os.path.join(examples_uri, "Split-test", "*")], 1000,
                                              shuffle=False, seed=0, cache=False).as_numpy_iterator():
        hits += int((predict(images).argmax(axis=1) == labels).sum())
        seen += len(labels)
    return hits / seen


def measure(framework: str, workers: int, examples_uri: str, out_dir: Path, epochs: int, config: dict) -> dict:
    """One launch and where its time went, from the chief's model metadata."""
    run_dir = out_dir / f"{framework}-{workers}"
    done = launch(framework, workers, fn_args(examples_uri, run_dir, epochs, **config), run_dir / "logs")
    serving_dir = str(run_dir / "Format-Serving")
    meta = json.loads(Path(serving_dir, "model_meta.json").read_text())
    startup = meta["started_at"] - done.launched_at
    return {"framework": framework, "workers": meta["world_size"], "wall_s": done.seconds,
            "startup_s": round(startup, 1), "train_s": meta["train_seconds"], "epoch_s": meta["epoch_seconds"],
            "rest_s": round(done.seconds - startup - meta["train_seconds"], 1),
            "ddp_step_ms": meta.get("ddp_step_ms", {}),
            "test_accuracy": round(accuracy_on_test_split(serving_dir, examples_uri), 4)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-worker", nargs=3, metavar=("FRAMEWORK", "RANK", "FN_ARGS_JSON"), help=argparse.SUPPRESS)
    parser.add_argument("--framework", nargs="+", choices=sorted(FRAMEWORKS), default=sorted(FRAMEWORKS))
    parser.add_argument("--workers", nargs="+", type=int, default=[2], help="worker counts to run, in turn")
    parser.add_argument("--examples", help="an Examples artifact's folder (default: made from --mnist)")
    parser.add_argument("--mnist", default=str(REPO.parent / "shared" / "data" / "mnist"), help="MNIST IDX files")
    parser.add_argument("--train-limit", type=int, default=6000, help="training images of the subset made")
    parser.add_argument("--out", help="folder for the examples, models and worker logs (required)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON",
                        help='training settings, e.g. model=\'"bn_cnn"\'')
    args = parser.parse_args(argv)
    if args.run_worker:
        run_worker(*args.run_worker)
        return
    if not args.out:
        parser.error("--out is required")
    out = Path(args.out).resolve()
    examples = args.examples or make_examples(args.mnist, out, args.train_limit)
    config = {field: json.loads(value) for field, value in (item.split("=", 1) for item in args.set)}
    for framework in args.framework:
        for workers in args.workers:
            print(json.dumps(measure(framework, workers, examples, out, args.epochs, config)), flush=True)


if __name__ == "__main__":
    main()
