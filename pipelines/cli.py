"""Command line: `run` the pipeline locally, `compile` pipeline.yaml, `summary` of the latest run.

python -m pipelines.cli run [--config FILE] [--source URI] [--epochs N] ...
python -m pipelines.cli compile [--output pipeline.yaml]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time

import yaml

from pipelines.config import REPO_ROOT, PipelineConfig, load_config

DEFAULT_KFP_REGISTRY_URI = "http://mlflow.mlflow.svc.cluster.local:5000"

# flag -> (config field, type, help)
OVERRIDES = {
    "--source": ("source", str, "MNIST source: folder or gs://, s3://, http(s) URI (env MNIST_SOURCE)"),
    "--output-root": ("output_root", str, "where runs, metadata and the default registry go"),
    "--cache-dir": ("cache_dir", str, "local cache of verified MNIST files"),
    "--epochs": ("epochs", int, "training epochs, both trainers"),
    "--batch-size": ("batch_size", int, "training batch size, both trainers"),
    "--learning-rate": ("learning_rate", float, "(peak) learning rate, both trainers"),
    "--lr-schedule": ("lr_schedule", str, "one_cycle (warm-up, cosine decay) | constant"),
    "--augment-shift": ("augment_shift", int, "random shift of training images, up to N pixels (0 = none)"),
    "--seed": ("seed", int, "training seed, both trainers"),
    "--model": ("model", str, "architecture, both trainers: bn_cnn (default) | seed_cnn"),
    "--train-limit": ("train_limit", int, "use only the first N training-file records (0 = all)"),
    "--test-limit": ("test_limit", int, "use only the first N test-file records (0 = all)"),
    "--min-metric": ("min_metric", float, "primary metric (test accuracy) the winner needs to be blessed"),
    "--registry-uri": ("registry_uri", str, "MLflow tracking URI (default: SQLite under output root)"),
    "--accelerator": ("accelerator", str, "auto | cpu | gpu | tpu"),
    "--image": ("image", str, "container image for the compiled pipeline"),
}


# compile only: flag -> (config field, type, help); the rest of the placement goes in --config YAML.
KFP_OVERRIDES = {
    "--kfp-target": ("kfp_target", str, "kubeflow (open-source KFP) | vertex (Vertex AI Pipelines)"),
    "--kfp-pipeline-root": ("kfp_pipeline_root", str, "pipeline root on the cluster (gs://)"),
    "--kfp-accelerator": ("kfp_accelerator", str, "each trainer's accelerator: none | gpu | tpu"),
    "--kfp-accelerator-count": ("kfp_accelerator_count", int, "accelerators per trainer"),
    "--kfp-accelerator-type": ("kfp_accelerator_type", str, "GKE node label: nvidia-l4, tpu-v5-lite-podslice, ..."),
    "--kfp-tpu-topology": ("kfp_tpu_topology", str, "TPU slice topology, e.g. 2x2"),
}


def _flag_values(args: argparse.Namespace, flags: dict) -> dict:
    return {field: getattr(args, flag.lstrip("-").replace("-", "_"), None)
            for flag, (field, _, _) in flags.items()}


def _config(args: argparse.Namespace) -> PipelineConfig:
    overrides = {field: getattr(args, flag.lstrip("-").replace("-", "_"))
                 for flag, (field, _, _) in OVERRIDES.items()}
    if overrides["source"] is None and os.environ.get("MNIST_SOURCE"):
        overrides["source"] = os.environ["MNIST_SOURCE"]
    return load_config(args.config, **overrides)


def _print_summary(summary: dict, seconds: float | None = None) -> None:
    print(f"\n=== MNIST bake-off (run {summary['run_id']}) ===")
    print(summary["table"])
    print(f"winner:     {summary['winner']} ({'blessed' if summary['blessed'] else 'NOT blessed'})")
    for name, acc in sorted(summary["accuracy"].items()):
        print(f"accuracy:   {name:<14} {acc:.4f} on the test split")
    for reason in summary["reasons"]:
        print(f"  - {reason}")
    version = summary["registered_version"]
    print(f"registry:   {summary['registry']}"
          + (f"  (version {version}, alias champion)" if version else "  (nothing pushed)"))
    print(f"report:     {summary['report']}")
    if summary.get("data_review"):
        print(f"data:       {summary['data_review']}")
    print(f"evaluation: {summary['evaluation']}")
    print(f"artifacts:  {summary['artifacts']}")
    print(f"metadata:   {summary['metadata']}")
    total = sum(summary["stage_seconds"].values())
    print("stages of this run (wall time of each execution; cached ones take ~0 s):")
    for node, s in summary["stage_seconds"].items():
        print(f"  {node:<22} {s:8.1f} s  {100 * s / total if total else 0:5.1f} %")
    if seconds is not None:
        print(f"wall time:  {seconds:.1f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipelines.cli", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {
        "run": "run the whole pipeline locally (LocalDagRunner, Beam DirectRunner)",
        "compile": "compile the pipeline to a KFP v2 package (pipeline.yaml)",
        "summary": "print the latest local run's decision and where its outputs are",
        "show": "print the bake-off's comparison table, paired tests and decision for a run",
    }
    for name, help_text in commands.items():
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", help="YAML file of PipelineConfig fields")
        for flag, (_, type_, help_) in OVERRIDES.items():
            p.add_argument(flag, type=type_, help=help_)
        if name == "compile":
            p.add_argument("--output", default=str(REPO_ROOT / "pipeline.yaml"))
            p.add_argument("--kfp-registry-uri", default=DEFAULT_KFP_REGISTRY_URI,
                           help="MLflow tracking URI the cluster's pusher uses")
            for flag, (_, type_, help_) in KFP_OVERRIDES.items():
                p.add_argument(flag, type=type_, help=help_)
        if name in ("run", "summary"):
            p.add_argument("--json", action="store_true", help="print the summary as JSON")
        if name in ("summary", "show"):
            p.add_argument("--run", help="pipeline run id (default: the latest run)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = _config(args)
    except (ValueError, TypeError, OSError, yaml.YAMLError) as e:
        # A bad setting is the user's input: one line naming it (and the file), not a traceback.
        problem = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        parser.error(f"invalid configuration ({f'{args.config} and ' if args.config else ''}flags): {problem}")

    if args.command == "compile":
        from pipelines.runners import compile_kubeflow

        placement = {k: v for k, v in _flag_values(args, KFP_OVERRIDES).items() if v is not None}
        print(compile_kubeflow(cfg.replace(**placement), args.output, args.kfp_registry_uri))
        return 0

    from pipelines import runners

    if args.command == "show":
        from components.bakeoff_evaluator import report

        evaluation, evaluation_dir = runners.load_evaluation(cfg, args.run)
        print(report.render_markdown(evaluation))
        print(f"report: {os.path.join(evaluation_dir, 'report.html')}")
        return 0
    started = time.monotonic()
    summary = runners.run_local(cfg) if args.command == "run" else runners.summarize(cfg, args.run)
    elapsed = time.monotonic() - started if args.command == "run" else None
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        _print_summary(summary, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
