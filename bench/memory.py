"""Peak resident memory of each pipeline stage on full MNIST, each stage in its own process.

PYTHONPATH=. $(infra/bootstrap.sh)/bin/python bench/memory.py [--epochs 1] [--mnist ../shared/data/mnist]

A stage's process runs the DAG up to that stage (a TFX partial run: the stage and its ancestors)
against one shared output root: the ancestors come from the cache (they ran in the previous process), so the
process's peak RSS (`ru_maxrss` from wait4) is the stage's own peak plus what any process of
this pipeline costs (Python, TensorFlow, PyTorch, Beam imported: the "all cached" row). That is
the memory a Kubeflow pod of the stage needs. Then the streaming PyTorch trainer is run on 10 %,
50 % and 100 % of the training split to show its memory does not grow with the data.
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

STAGES = ("MnistExampleGen", "StatisticsGen", "DriftValidator", "keras_trainer", "pytorch_trainer",
          "BakeoffEvaluator", "RegistryPusher")
GOAL_MIB = 4096


def run_stage(config: dict, node_id: str) -> None:
    """In the child process: the DAG up to `node_id` (a TFX partial run), with LocalDagRunner."""
    from tfx import v1 as tfx
    from tfx.orchestration import pipeline as tfx_pipeline

    from pipelines import local_runner, recovery
    from pipelines.config import load_config

    cfg = load_config(**config)
    os.makedirs(os.path.join(cfg.output_root, "registry"), exist_ok=True)
    with recovery.exclusive_run(cfg.output_root):
        options = tfx_pipeline.RunOptions(to_nodes=[node_id]) if node_id else None
        tfx.orchestration.LocalDagRunner().run(local_runner.local_pipeline(cfg), run_options=options)


def measure(config: dict, node_id: str, log) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one stage's process."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--child", json.dumps(config), node_id],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": REPO})
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"stage {node_id or 'all cached'} failed (rc {proc.returncode}); see {log.name}")
    return time.monotonic() - started, usage.ru_maxrss / 1024  # Linux: KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1, help="training epochs (memory does not depend on them)")
    parser.add_argument("--mnist", default=os.path.join(REPO, "..", "shared", "data", "mnist"))
    parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "mnist-bench-memory"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_stage(json.loads(args.child[0]), args.child[1])
        return

    import shutil

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    base = {"source": os.path.abspath(args.mnist), "cache_dir": os.path.join(args.work, "cache"),
            "epochs": args.epochs, "registered_model_name": "mnist-memory-bench"}
    rows = []
    with open(os.path.join(args.work, "stages.log"), "w") as log:
        config = {**base, "output_root": os.path.join(args.work, "full")}
        for stage in STAGES:
            seconds, peak = measure(config, stage, log)
            rows.append((stage, seconds, peak))
            print(f"{stage}: {seconds:.1f} s, peak RSS {peak:.0f} MiB", flush=True)
        seconds, peak = measure(config, "", log)
        rows.append(("(whole DAG, all cached)", seconds, peak))
        print(f"all cached: {seconds:.1f} s, peak RSS {peak:.0f} MiB", flush=True)

        streaming = []
        for fraction in (0.1, 0.5):
            limit = int(60_000 * fraction)
            config = {**base, "train_limit": limit, "output_root": os.path.join(args.work, f"train-{fraction}")}
            measure(config, "DataGate", log)  # ingest and validation first, not counted
            seconds, peak = measure(config, "pytorch_trainer", log)
            streaming.append((fraction, limit, seconds, peak))
            print(f"pytorch_trainer on {fraction:.0%}: {seconds:.1f} s, peak RSS {peak:.0f} MiB", flush=True)
        streaming.append((1.0, 60_000, *next((s, p) for n, s, p in rows if n == "pytorch_trainer")))

    print("\n| stage (own process, ancestors cached) | seconds | peak RSS (MiB) |\n|---|---:|---:|")
    for stage, seconds, peak in rows:
        print(f"| {stage} | {seconds:.1f} | {peak:.0f} |")
    print("\n| PyTorch trainer, share of the training file | records read | seconds | peak RSS (MiB) |")
    print("|---|---:|---:|---:|")
    for fraction, records, seconds, peak in streaming:
        print(f"| {fraction:.0%} | {records} | {seconds:.1f} | {peak:.0f} |")
    worst = max(rows, key=lambda r: r[2])
    print(f"\nhighest: {worst[0]} {worst[2]:.0f} MiB (goal: every stage under {GOAL_MIB} MiB): "
          f"{'met' if worst[2] < GOAL_MIB else 'NOT met'}")


if __name__ == "__main__":
    main()
