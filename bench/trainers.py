"""Our two trainers against the seed's two bare scripts, then our default model over three seeds.

PYTHONPATH=. $(infra/bootstrap.sh)/bin/python -m bench.trainers [--part all|seed|default|busy] [--epochs 5]
    [--rounds 3] [--contenders seed_keras ours_keras ...]

Each contender runs in its own process, one after the other, on the same full MNIST.
- seed part: the seed article's Keras and PyTorch scripts (data read from local files instead of
  downloaded and, for PyTorch, the last layer's input fixed from 32*12*12 to 32*13*13: as written
  it crashes on 28x28 input; nothing else changed) against our trainers' run_fn with the seed's
  model and epochs: `ours` with our trainers' batch and schedule (128, one-cycle peaking at 3e-3),
  `asseed` with every setting of the seed's (batch 32, constant learning rate 1e-3, and its 60,000
  training images: our train and eval splits together; `ours` trains on the train split). Prints wall
  time of the training loop, examples/s and test accuracy, and the ours/seed throughput ratios:
  medians of --rounds alternating rounds, with the CPU model and flags.
- whole_run (a seed-part contender): the whole default pipeline (`python -m pipelines run`, a fresh
  output root) as a round's last contender: the command's wall time against the two seed scripts'
  training time together, its data phase's share and both models' test accuracy.
- default part: our trainers with the pipeline's defaults (bn_cnn, its epochs, batch and
  one-cycle schedule) once per seed: test accuracy per seed, its spread, and training time.
- busy part: our two trainers with the seed's settings, quiet and then with one competing CPU-bound
  process running (a Python busy loop, started before and stopped after each run): each
  trainer's busy/quiet time ratio (issue #17 item 5 asks for at most 2).
Timing covers the training loop only (the seed's `fit` / epoch loop; our run_fn minus export,
with its per-epoch validation and TensorBoard logging); test accuracy is measured afterwards on
the 10,000 test images.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from trainers import machine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _arrays(cache: str):
    from components.mnist_example_gen import idx

    def read(name, kind):
        h = idx.read_header(os.path.join(cache, name), kind)
        return idx.read_records(h, 0, h.count)

    return (read("train-images-idx3-ubyte", "images"), read("train-labels-idx1-ubyte", "labels"),
            read("t10k-images-idx3-ubyte", "images"), read("t10k-labels-idx1-ubyte", "labels"))


def seed_keras(cache: str, epochs: int) -> dict:
    import tensorflow as tf
    from tensorflow.keras import layers, models

    train_images, train_labels, test_images, test_labels = _arrays(cache)
    model = models.Sequential([layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
                               layers.MaxPooling2D((2, 2)), layers.Flatten(), layers.Dense(10, activation='softmax')])
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    train_images, test_images = train_images / 255.0, test_images / 255.0
    start = time.perf_counter()
    model.fit(train_images[..., tf.newaxis], train_labels, epochs=epochs, verbose=2)
    seconds = time.perf_counter() - start
    _, acc = model.evaluate(test_images[..., tf.newaxis], test_labels, verbose=0)
    return {"seconds": seconds, "examples": epochs * len(train_labels), "test_accuracy": float(acc)}


def seed_pytorch(cache: str, epochs: int) -> dict:
    import torch
    import torch.nn as nn
    import torch.optim as optim
    import torchvision
    import torchvision.transforms as transforms

    class SimpleCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 32, 3)
            self.pool = nn.MaxPool2d(2, 2)
            self.fc = nn.Linear(32 * 13 * 13, 10)  # the article's 32 * 12 * 12 crashes on 28x28

        def forward(self, x):
            x = self.pool(nn.functional.relu(self.conv1(x)))
            x = torch.flatten(x, 1)
            return self.fc(x)

    with tempfile.TemporaryDirectory() as root:  # torchvision's layout: root/MNIST/raw/<files>
        os.makedirs(os.path.join(root, "MNIST", "raw"))
        for name in os.listdir(cache):
            if "ubyte" in name and not name.startswith("."):
                os.symlink(os.path.join(cache, name), os.path.join(root, "MNIST", "raw", name))
        model = SimpleCNN()
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.Adam(model.parameters())
        transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])
        trainset = torchvision.datasets.MNIST(root=root, train=True, download=False, transform=transform)
        trainloader = torch.utils.data.DataLoader(trainset, batch_size=32, shuffle=True)
        start = time.perf_counter()
        for epoch in range(epochs):
            running_loss = 0.0
            for i, data in enumerate(trainloader, 0):
                inputs, labels = data
                optimizer.zero_grad()
                outputs = model(inputs)
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
                if i % 100 == 99:
                    print(f'[{epoch + 1}, {i + 1}] loss: {running_loss / 100}')
                    running_loss = 0.0
        seconds = time.perf_counter() - start
        testset = torchvision.datasets.MNIST(root=root, train=False, download=False, transform=transform)
        correct = 0
        with torch.no_grad():
            for inputs, labels in torch.utils.data.DataLoader(testset, batch_size=1000):
                correct += (model(inputs).argmax(1) == labels).sum().item()
    return {"seconds": seconds, "examples": epochs * len(trainset), "test_accuracy": correct / len(testset)}


def train_and_score(framework: str, examples, train_splits: tuple[str, ...], custom_config: dict,
                    hyperparameters: dict | None = None) -> tuple[dict, float]:
    """Our trainer's run_fn on `examples`' `train_splits` (validating on its eval split each epoch),
    in a temporary folder removed after; returns the export's metadata and its test accuracy."""
    from tfx.components.trainer.fn_args_utils import FnArgs

    from components.examples import load_split
    from trainers import loader
    from trainers.model_format import read_model_meta

    module = importlib.import_module(f"trainers.{'keras' if framework == 'keras' else 'torch'}_trainer")
    with tempfile.TemporaryDirectory(prefix="bench-model-") as out:
        fn_args = FnArgs(train_files=[os.path.join(examples.uri, f"Split-{split}", "*") for split in train_splits],
                         eval_files=[os.path.join(examples.uri, "Split-eval", "*")],
                         serving_model_dir=os.path.join(out, "serving"), model_run_dir=os.path.join(out, "run"),
                         custom_config=custom_config, hyperparameters=hyperparameters)
        module.run_fn(fn_args)
        predict, _ = loader.load_predictor(fn_args.serving_model_dir)
        images, labels = load_split(examples, "test")
        accuracy = float((loader.predict_in_batches(predict, images).argmax(1) == labels).mean())
        return read_model_meta(fn_args.serving_model_dir), accuracy


def ours(framework: str, examples_dir: str, config: dict, splits: tuple[str, ...] = ("train",)) -> dict:
    """Our trainer trained on `splits`, and its export's test accuracy."""
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = examples_dir
    examples.split_names = '["train", "eval", "test"]'
    meta, accuracy = train_and_score(framework, examples, splits, {"accelerator": "auto", **config})
    counts = json.loads(open(os.path.join(examples_dir, "split_counts.json")).read())
    n_train = sum(counts[split] for split in splits)
    return {"seconds": meta["train_seconds"], "examples": meta["config"]["epochs"] * n_train,
            "test_accuracy": accuracy, "device": meta["device"], "model": meta["model"],
            "epochs": meta["config"]["epochs"], "batch_size": meta["config"]["batch_size"],
            "augment_shift": meta["config"]["augment_shift"], "mixed_precision": meta["mixed_precision"]}


def whole_run(mnist: str, work: str) -> dict:
    """The whole default pipeline (`make run`: both trainers with the default model and epochs) into a
    fresh output root, as a fresh clone's first run: the command's wall time, and the lower of the
    two models' test accuracies (the evaluator's) with each one's."""
    root = tempfile.mkdtemp(prefix="whole-run-", dir=work)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pipelines", "run", "--json", "--output-root", root,
                           "--source", mnist], capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - started
    if done.returncode:
        sys.exit(f"whole_run failed:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout)
    stages = summary["stage_seconds"]
    data = sum(stages.get(name, 0.0) for name in DATA_STAGES)
    subprocess.run(["rm", "-rf", root], check=True)
    return {"seconds": seconds, "examples": 0, "test_accuracy": min(summary["accuracy"].values()),
            "accuracy": summary["accuracy"], "stage_seconds": stages, "data_seconds": round(data, 1),
            "data_share": data / seconds}


# Ingest, statistics and validation: the data phase of a run (issue #30: under 12 % of it).
DATA_STAGES = ("ImportSchemaGen", "MnistExampleGen", "StatisticsGen", "ExampleValidator", "ImageValidator",
               "DriftValidator", "DataGate")


def ingest(mnist: str, work: str) -> tuple[str, str]:
    """The four files into the cache and our TFRecords, once (not timed): the pipeline's own
    MnistExampleGen executor, in this process."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.mnist_example_gen import executor

    cache = os.path.join(work, "cache")
    examples_dir = os.path.join(work, "examples")
    if not os.path.exists(os.path.join(examples_dir, "split_counts.json")):
        examples = standard_artifacts.Examples()
        examples.uri = examples_dir
        context = base_beam_executor.BaseBeamExecutor.Context(
            beam_pipeline_args=["--direct_running_mode=in_memory", "--sdk_container_image=unused"])
        executor.Executor(context).Do({}, {"examples": [examples]}, {
            executor.SOURCE: mnist, executor.CACHE_DIR: cache, executor.EVAL_RATIO: 0.1,
            executor.TRAIN_LIMIT: 0, executor.TEST_LIMIT: 0})
        with open(os.path.join(examples_dir, "split_counts.json"), "w") as f:
            f.write(examples.get_string_custom_property("split_counts"))
    return cache, examples_dir


SEED_CONTENDERS = ("seed_keras", "ours_keras", "asseed_keras", "seed_pytorch", "ours_pytorch", "asseed_pytorch",
                   "whole_run")
DEFAULT_CONTENDERS = ("default_keras", "default_pytorch")


def seed_like(epochs: int) -> dict:
    """Our trainers with the seed's model and settings: the like-for-like throughput comparison."""
    return {"model": "seed_cnn", "epochs": epochs, "batch_size": 32, "learning_rate": 1e-3, "lr_schedule": "constant",
            "augment_shift": 0}


def seed_model(epochs: int) -> dict:
    """Our trainers with the seed's model and epochs, our batch and schedule (TrainConfig's)."""
    return {"model": "seed_cnn", "epochs": epochs, "augment_shift": 0}


def run_one(name: str, args: argparse.Namespace, cache: str, examples_dir: str, seed: int) -> dict:
    if name == "whole_run":
        return whole_run(args.mnist, args.work)
    kind, framework = name.split("_")
    if kind == "seed":
        return seed_keras(cache, args.epochs) if framework == "keras" else seed_pytorch(cache, args.epochs)
    # default: the pipeline's defaults; --set overrides apply to each of our contenders
    config = {"ours": seed_model(args.epochs), "asseed": seed_like(args.epochs)}.get(kind, {})
    # asseed: the seed's 60,000 training images as well (the train and eval splits together).
    splits = ("train", "eval") if kind == "asseed" else ("train",)
    return ours(framework, examples_dir, {**config, **dict(args.set), "seed": seed}, splits)


def contender_environment(name: str) -> dict[str, str]:
    """Our trainers get the environment `python -m pipelines` gives them; the seed scripts run in
    the environment as it is."""
    environment = dict(os.environ) if name.startswith("seed_") else machine.with_runtime_defaults(os.environ)
    return {**environment, "PYTHONPATH": REPO}


def _spawn(name: str, args: argparse.Namespace, seed: int) -> dict:
    overrides = [f"{key}={json.dumps(value)}" for key, value in args.set]
    # As a module: run as a file, bench/trainers.py would stand in for the trainers package.
    done = subprocess.run([sys.executable, "-m", "bench.trainers", "--one", name, "--seed", str(seed),
                           "--epochs", str(args.epochs), "--mnist", args.mnist, "--work", args.work,
                           *(["--set", *overrides] if overrides else [])],
                          capture_output=True, text=True, cwd=REPO, env=contender_environment(name))
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
    r = json.loads(lines[-1][7:])
    if name == "whole_run":
        print(f"whole_run: {r['seconds']:.1f} s, test accuracy {r['accuracy']}, data phase {r['data_seconds']} s "
              f"({r['data_share']:.1%}), stages {r['stage_seconds']}", flush=True)
        return r
    print(f"{name} (seed {seed}): {r['seconds']:.1f} s, {r['examples'] / r['seconds']:.0f} ex/s, "
          f"test accuracy {r['test_accuracy']:.4f}, {'bfloat16' if r.get('mixed_precision') else 'float32'}",
          flush=True)
    return r


@contextlib.contextmanager
def competing_process() -> Iterator[None]:
    """One CPU-bound process on the machine while the block runs (stopped by its pid)."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def busy_ratios(args: argparse.Namespace) -> None:
    runs = {}
    for name in ("asseed_keras", "asseed_pytorch"):
        quiet = _spawn(name, args, 42)
        with competing_process():
            busy = _spawn(name, args, 42)
        runs[name] = (quiet, busy)
    print("\n| trainer | model | epochs | batch | quiet (s) | one busy process (s) | busy / quiet |")
    print("|---|---|---|---|---|---|---|")
    for name, (quiet, busy) in runs.items():
        print(f"| {name} | seed_cnn | {args.epochs} | 32 | {quiet['seconds']:.1f} | {busy['seconds']:.1f} | "
              f"{busy['seconds'] / quiet['seconds']:.2f} |")


def seed_rounds(args: argparse.Namespace) -> dict[str, list[dict]]:
    """--rounds alternating rounds of the seed part's contenders (A, B, ..., A, B, ...): a single
    timing on these VMs drifts by a third, so the tables report each contender's median."""
    print(f"CPU: {machine.cpu_description()}", flush=True)
    results: dict[str, list[dict]] = {name: [] for name in args.contenders}
    for _ in range(args.rounds):
        for name in args.contenders:
            results[name].append(_spawn(name, args, 42))
    return results


def print_whole_run(results: dict[str, list[dict]]) -> None:
    """The whole default run against the two seed scripts' training time together (medians)."""
    runs = results.get("whole_run")
    if not runs:
        return
    run = _median_run(runs)
    rounds = " / ".join(f"{r['seconds']:.1f}" for r in runs)
    shares = " / ".join(f"{r['data_share']:.1%}" for r in runs)
    accuracies = " / ".join(f"{r['test_accuracy']:.4f}" for r in runs)
    print(f"\nwhole run: median {run['seconds']:.1f} s (rounds {rounds}), data phase median "
          f"{statistics.median(r['data_seconds'] for r in runs):.1f} s, share per round {shares}; "
          f"lower test accuracy per round {accuracies}")
    seeds = [_median_run(results.get(f"seed_{framework}", [])) for framework in ("keras", "pytorch")]
    if all(seeds):
        together = sum(s["seconds"] for s in seeds)
        print(f"whole run / seed scripts' training ({together:.1f} s) = {run['seconds'] / together:.2f} (medians)")


def _median_run(runs: list[dict]) -> dict:
    """The run of median wall time (the lower middle one of an even count); {} for none."""
    return sorted(runs, key=lambda r: r["seconds"])[(len(runs) - 1) // 2] if runs else {}


def _setting(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: expected FIELD=JSON")
    return key, json.loads(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of the seed comparison")
    parser.add_argument("--mnist", default=os.path.join(REPO, "..", "shared", "data", "mnist"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "mnist-bench"))
    parser.add_argument("--part", choices=("all", "seed", "default", "busy"), default="all",
                        help="seed: the seed scripts against our trainers with seed_cnn; "
                             "default: our default model (pipeline defaults) over --seeds; "
                             "busy: our trainers quiet and beside one CPU-bound process")
    parser.add_argument("--rounds", type=int, default=3, help="seed part: alternating rounds (medians reported)")
    parser.add_argument("--contenders", nargs="+", choices=SEED_CONTENDERS, default=list(SEED_CONTENDERS),
                        help="seed part: the contenders of each round, in this order")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2], help="seeds of the default model's runs")
    parser.add_argument("--set", nargs="+", default=[], type=_setting, metavar="FIELD=JSON",
                        help="override a TrainConfig field of our contenders, e.g. cpu_bfloat16=\"off\" epochs=5")
    parser.add_argument("--only", choices=DEFAULT_CONTENDERS, help="default part: run only this contender")
    parser.add_argument("--one", choices=SEED_CONTENDERS + DEFAULT_CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = parser.parse_args()
    cache, examples_dir = ingest(args.mnist, args.work)
    if args.one:
        print("RESULT " + json.dumps(run_one(args.one, args, cache, examples_dir, args.seed)))
        return

    if args.part == "busy":
        busy_ratios(args)
        return
    results = {}
    if args.part in ("all", "seed"):
        results = seed_rounds(args)
        print("\n| contender | model | epochs | batch | train wall time (s), median | rounds (s) | examples/s | "
              "test accuracy, median |")
        print("|---|---|---|---|---:|---|---:|---:|")
        for name, rs in results.items():
            if name == "whole_run":
                continue
            r, model = _median_run(rs), "seed_cnn" + (" (seed script)" if name.startswith("seed") else "")
            rounds = " / ".join(f"{x['seconds']:.1f}" for x in rs)
            accuracy = statistics.median(x["test_accuracy"] for x in rs)
            print(f"| {name} | {model} | {args.epochs} | {r.get('batch_size', 32)} | {r['seconds']:.1f} | {rounds} | "
                  f"{r['examples'] / r['seconds']:.0f} | {accuracy:.4f} |")
        print()
        for framework in ("keras", "pytorch"):
            seed = _median_run(results.get(f"seed_{framework}", []))
            for kind in ("ours", "asseed"):
                o = _median_run(results.get(f"{kind}_{framework}", []))
                if seed and o:
                    ratio = (o["examples"] / o["seconds"]) / (seed["examples"] / seed["seconds"])
                    print(f"{framework}: throughput ratio {kind}/seed = {ratio:.2f} (medians)")
        keras, pytorch = _median_run(results.get("ours_keras", [])), _median_run(results.get("ours_pytorch", []))
        if keras and pytorch:
            print(f"ours_pytorch / ours_keras throughput = {keras['seconds'] / pytorch['seconds']:.2f} (medians)")
        print_whole_run(results)
    if args.part in ("all", "default"):
        contenders = [args.only] if args.only else DEFAULT_CONTENDERS
        runs = {name: [_spawn(name, args, seed) for seed in args.seeds] for name in contenders}
        print("\n| contender | model | epochs | batch | shift | seed | train wall time (s) | test accuracy |")
        print("|---|---|---|---|---|---|---|---|")
        for name, rs in runs.items():
            for seed, r in zip(args.seeds, rs, strict=True):
                print(f"| {name} | {r['model']} | {r['epochs']} | {r['batch_size']} | {r['augment_shift']} | {seed} | "
                      f"{r['seconds']:.1f} | "
                      f"{r['test_accuracy']:.4f} |")
        for name, rs in runs.items():
            accuracy = [r["test_accuracy"] for r in rs]
            seconds = [r["seconds"] for r in rs]
            seed_script = results.get(f"seed_{name.split('_')[1]}")
            print(f"\n{name}: test accuracy mean {sum(accuracy) / len(accuracy):.4f}, min {min(accuracy):.4f}, "
                  f"max {max(accuracy):.4f} (spread {max(accuracy) - min(accuracy):.4f}) over seeds {args.seeds}; "
                  f"train time {min(seconds):.1f}-{max(seconds):.1f} s"
                  + (f" (the seed script: {seed_script['seconds']:.1f} s)" if seed_script else ""))


if __name__ == "__main__":
    main()
