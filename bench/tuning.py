"""Both frameworks tuned with the same budget on full MNIST, then trained with their best values,
against the same trainers with the pipeline's default settings.

PYTHONPATH=. $(infra/bootstrap.sh)/bin/python -m bench.tuning [--trials 12] [--epochs 1] [--examples 20000]
    [--final-epochs 4] [--json out.json]

Each step runs in its own process, one after the other: per framework, its study (the pipeline's
OptunaTuner executor: TPE, median pruner, the untuned settings as trial 0, a budget of trials x
epochs x examples training examples, scored on the eval split), then the final training twice
(the Trainer's run_fn with the pipeline's defaults, and with the study's HyperParameters artifact
as fn_args.hyperparameters), each scored on the 10,000 test images. Prints each study's wall time
and trials, the test accuracy default against tuned, and whether tuning changed which framework
wins. The studies are new each invocation (the storage is a fresh SQLite file in --work).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMEWORKS = ("keras", "pytorch")
PROPERTIES_FILE = "properties.json"  # the Examples artifact's custom properties, beside its splits


def ingest(mnist: str, work: str) -> str:
    """Full MNIST as the pipeline's TFRecords, once (not timed): its own MnistExampleGen executor."""
    from tfx.dsl.components.base import base_beam_executor
    from tfx.types import standard_artifacts

    from components.mnist_example_gen import executor

    examples_dir = os.path.join(work, "examples")
    if not os.path.exists(os.path.join(examples_dir, PROPERTIES_FILE)):
        examples = standard_artifacts.Examples()
        examples.uri = examples_dir
        context = base_beam_executor.BaseBeamExecutor.Context(
            beam_pipeline_args=["--direct_running_mode=in_memory", "--sdk_container_image=unused"])
        executor.Executor(context).Do({}, {"examples": [examples]}, {
            executor.SOURCE: mnist, executor.CACHE_DIR: os.path.join(work, "cache"), executor.EVAL_RATIO: 0.1,
            executor.TRAIN_LIMIT: 0, executor.TEST_LIMIT: 0})
        with open(os.path.join(examples_dir, PROPERTIES_FILE), "w") as f:
            json.dump({k: examples.get_string_custom_property(k)
                       for k in ("split_counts", "source_sha256", "class_names")}, f)
    return examples_dir


def examples_artifact(examples_dir: str):
    from tfx.types import standard_artifacts

    examples = standard_artifacts.Examples()
    examples.uri = examples_dir
    examples.split_names = '["train", "eval", "test"]'
    with open(os.path.join(examples_dir, PROPERTIES_FILE)) as f:
        for key, value in json.load(f).items():
            examples.set_string_custom_property(key, value)
    return examples


def tune(framework: str, examples_dir: str, work: str, args: argparse.Namespace) -> dict:
    """One framework's study, by the pipeline's tuner executor with the pipeline's space and defaults."""
    from tfx.types import standard_artifacts

    from components.tuner import executor, results, space
    from pipelines.config import PipelineConfig
    from pipelines.pipeline import TRIALS

    cfg = PipelineConfig()
    out = os.path.join(work, f"tuner-{framework}")
    best, found = standard_artifacts.HyperParameters(), standard_artifacts.TunerResults()
    best.uri, found.uri = os.path.join(out, "best"), os.path.join(out, "results")
    os.makedirs(best.uri, exist_ok=True)
    os.makedirs(found.uri, exist_ok=True)
    executor.Executor().Do({"examples": [examples_artifact(examples_dir)]},
                           {"best_hyperparameters": [best], "tuner_results": [found]}, {
        executor.FRAMEWORK: framework, executor.TRIAL_FN: TRIALS[framework],
        executor.CUSTOM_CONFIG: json.dumps(cfg.trainer_config()), executor.SPACE: space.to_json(
            space.search_space(cfg.train)), executor.TRIALS: args.trials, executor.EPOCHS: args.epochs,
        executor.TRIAL_EXAMPLES: args.examples, executor.PRUNER: args.pruner,
        executor.STORAGE_URI: f"sqlite:///{os.path.abspath(os.path.join(work, 'optuna.db'))}",
        executor.STUDY_PREFIX: "bench"})
    with open(os.path.join(found.uri, results.TUNING_FILE)) as f:
        record = json.load(f)
    return {"study_seconds": record["execution_seconds"], "trial_seconds": record["trial_seconds"],
            "counts": record["counts"], "spent": record["spent"], "budget": record["budget"],
            "best": record["best"], "baseline": record["baseline"],
            "hyperparameters": os.path.join(best.uri, results.BEST_HYPERPARAMETERS_FILE)}


def final(framework: str, examples_dir: str, hyperparameters_file: str | None, epochs: int) -> dict:
    """The Trainer's run_fn with the pipeline's defaults (and the study's values, when given), then
    its export scored on the test split."""
    from bench.trainers import train_and_score
    from pipelines.config import PipelineConfig

    hyperparameters = None
    if hyperparameters_file:
        with open(hyperparameters_file) as f:
            hyperparameters = json.load(f)
    meta, accuracy = train_and_score(framework, examples_artifact(examples_dir), ("train",),
                                     {**PipelineConfig().trainer_config(), "epochs": epochs}, hyperparameters)
    return {"seconds": meta["train_seconds"], "test_accuracy": accuracy, "config": meta["config"],
            "parameters": meta["parameters"]}


def _spawn(step: str, args: argparse.Namespace, *extra: str) -> dict:
    from trainers.machine import with_runtime_defaults

    command = [sys.executable, "-m", "bench.tuning", "--one", step, "--mnist", args.mnist, "--work", args.work,
               "--trials", str(args.trials), "--epochs", str(args.epochs), "--examples", str(args.examples),
               "--final-epochs", str(args.final_epochs), "--pruner", args.pruner, *extra]
    environment = {**with_runtime_defaults(os.environ), "PYTHONPATH": REPO}
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=environment)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        sys.exit(f"{step} failed:\n{done.stderr[-3000:]}")
    result = json.loads(lines[-1][len("RESULT "):])
    print(f"{step}: {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    return result


def _values(params: dict) -> str:
    return ", ".join(f"{k} {v:.2g}" if isinstance(v, float) and k == "learning_rate" else f"{k} {v}"
                     for k, v in params.items())


def report(results: dict, args: argparse.Namespace) -> None:
    print(f"\nbudget per framework: {args.trials} trials x {args.epochs} epoch(s) x {args.examples:,} examples = "
          f"{args.trials * args.epochs * args.examples:,} training examples; final training {args.final_epochs} "
          "epochs on the 54,000 training images, scored on the 10,000 test images\n")
    print("| framework | study wall time (s) | trials finished / pruned / failed | spent / budget | untuned eval acc "
          "(trial 0) | best eval acc (trial) | best values | test acc, defaults | test acc, tuned | final training "
          "(s) default / tuned |")
    print("|---|---:|---|---|---:|---:|---|---:|---:|---|")
    for f in FRAMEWORKS:
        t, d, u = results[f"tune_{f}"], results[f"default_{f}"], results[f"tuned_{f}"]
        c = t["counts"]
        print(f"| {f} | {t['study_seconds']:.0f} | {c['COMPLETE']} / {c['PRUNED']} / {c['FAIL']} | {t['spent']:,} / "
              f"{t['budget']['total']:,} | {t['baseline']['value']:.4f} | {t['best']['value']:.4f} "
              f"({t['best']['number']}) | {_values(t['best']['params'])} | {d['test_accuracy']:.4f} | "
              f"{u['test_accuracy']:.4f} | {d['seconds']:.0f} / {u['seconds']:.0f} |")
    studies = sum(results[f"tune_{f}"]["study_seconds"] for f in FRAMEWORKS)
    lead = {kind: max(FRAMEWORKS, key=lambda f: results[f"{kind}_{f}"]["test_accuracy"]) for kind in
            ("default", "tuned")}
    print(f"\nboth studies: {studies:.0f} s ({studies / 60:.1f} min; goal under 10 min); test-split leader with the "
          f"defaults: {lead['default']}, tuned: {lead['tuned']} -> tuning "
          f"{'CHANGED' if lead['default'] != lead['tuned'] else 'did not change'} the verdict")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default=os.path.join(REPO, "..", "shared", "data", "mnist"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "mnist-bench-tuning"))
    parser.add_argument("--trials", type=int, default=12, help="the budget: trials' worth of training examples")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of a trial")
    parser.add_argument("--examples", type=int, default=20000, help="training examples of a trial")
    parser.add_argument("--pruner", default="median", choices=("median", "hyperband", "none"))
    parser.add_argument("--final-epochs", type=int, default=4, help="epochs of the final trainings (the default's)")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--hyperparameters", help=argparse.SUPPRESS)
    args = parser.parse_args()
    examples_dir = ingest(args.mnist, args.work)
    if args.one:
        kind, framework = args.one.split("_")
        result = (tune(framework, examples_dir, args.work, args) if kind == "tune"
                  else final(framework, examples_dir, args.hyperparameters if kind == "tuned" else None,
                             args.final_epochs))
        print("RESULT " + json.dumps(result))
        return
    for leftover in ("optuna.db", "optuna.db.lock"):  # new studies each invocation
        if os.path.exists(os.path.join(args.work, leftover)):
            os.remove(os.path.join(args.work, leftover))
    results: dict[str, dict] = {}
    for framework in FRAMEWORKS:
        results[f"tune_{framework}"] = _spawn(f"tune_{framework}", args)
    for framework in FRAMEWORKS:
        results[f"default_{framework}"] = _spawn(f"default_{framework}", args)
        results[f"tuned_{framework}"] = _spawn(f"tuned_{framework}", args, "--hyperparameters",
                                               results[f"tune_{framework}"]["hyperparameters"])
    report(results, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
