"""Ingest + statistics + validation on full MNIST with the Beam DirectRunner, per running mode.

    PYTHONPATH=. python -m bench.ingest [--source DIR] [--modes in_memory multi_processing]
        [--workers 2] [--baseline-out schema/baseline_statistics.pbtxt]

Runs the pipeline's own executors (MnistExampleGen, StatisticsGen with the curated schema,
ExampleValidator, DriftValidator against the pinned baseline) on the 70,000 records, times each
step, and prints a Markdown table (bench/README.md, section "Ingest"). `--baseline-out` also
writes the statistics of the first mode's run as the pinned drift baseline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from tfx.components.example_validator import executor as validator_executor
from tfx.components.statistics_gen import executor as stats_executor
from tfx.dsl.components.base import base_beam_executor
from tfx.types import standard_artifacts, standard_component_specs

from components.drift_validator import executor as drift_executor
from components.mnist_example_gen import executor as example_gen_executor
from pipelines.config import PipelineConfig, load_config
from pipelines.local_runner import local_beam_args
from pipelines.schema_tool import write_baseline

STEPS = ("ingest", "statistics", "schema validation", "drift/skew validation")


def _artifact(cls, uri: Path, split_names: str | None = None):
    artifact = cls()
    artifact.uri = str(uri)
    uri.mkdir(parents=True, exist_ok=True)
    if split_names:
        artifact.split_names = split_names
    return artifact


def run_once(cfg: PipelineConfig, mode: str, workers: int, work: Path) -> tuple[dict[str, float], Path]:
    # The pipeline's own Beam arguments (with this mode and worker count): without its
    # --sdk_container_image, TFX would build an sdist of the project at every Beam step.
    beam_args = local_beam_args(dataclasses.replace(cfg, beam_direct_running_mode=mode, beam_direct_workers=workers))
    context = base_beam_executor.BaseBeamExecutor.Context(beam_pipeline_args=beam_args, tmp_dir=str(work / "tmp"))
    schema = _artifact(standard_artifacts.Schema, work / "schema")
    (work / "schema" / "schema.pbtxt").write_text(Path(cfg.schema_path).read_text())
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    examples = _artifact(standard_artifacts.Examples, work / "examples")
    example_gen_executor.Executor(context).Do({}, {"examples": [examples]}, {
        example_gen_executor.SOURCE: cfg.source, example_gen_executor.CACHE_DIR: cfg.cache_dir,
        example_gen_executor.EVAL_RATIO: cfg.eval_ratio})
    seconds["ingest"] = time.perf_counter() - start

    start = time.perf_counter()
    stats = _artifact(standard_artifacts.ExampleStatistics, work / "statistics")
    stats_executor.Executor(context).Do(
        {standard_component_specs.EXAMPLES_KEY: [examples], standard_component_specs.SCHEMA_KEY: [schema]},
        {standard_component_specs.STATISTICS_KEY: [stats]}, {"exclude_splits": "[]"})
    seconds["statistics"] = time.perf_counter() - start

    start = time.perf_counter()
    anomalies = _artifact(standard_artifacts.ExampleAnomalies, work / "anomalies")
    validator_executor.Executor().Do(
        {standard_component_specs.STATISTICS_KEY: [stats], standard_component_specs.SCHEMA_KEY: [schema]},
        {standard_component_specs.ANOMALIES_KEY: [anomalies]}, {"exclude_splits": "[]"})
    seconds["schema validation"] = time.perf_counter() - start

    start = time.perf_counter()
    drift = _artifact(standard_artifacts.ExampleAnomalies, work / "drift")
    drift_executor.Executor().Do(
        {drift_executor.STATISTICS: [stats], drift_executor.SCHEMA: [schema], drift_executor.ANOMALIES: [anomalies]},
        {drift_executor.DRIFT_ANOMALIES: [drift]},
        {drift_executor.BASELINE: cfg.resolved_baseline_statistics()
         if os.path.exists(cfg.resolved_baseline_statistics()) else "",
         drift_executor.LABEL_LINF: cfg.drift_label_linf, drift_executor.PIXEL_JS: cfg.drift_pixel_js})
    seconds["drift/skew validation"] = time.perf_counter() - start
    return seconds, work / "statistics"


def markdown(results: dict[str, dict[str, float]], workers: int) -> str:
    modes = list(results)
    lines = ["| step | " + " | ".join(f"{m} (s)" for m in modes) + " |",
             "|---|" + "---:|" * len(modes)]
    for step in STEPS:
        lines.append(f"| {step} | " + " | ".join(f"{results[m][step]:.1f}" for m in modes) + " |")
    lines.append("| **total** | " + " | ".join(f"**{sum(results[m].values()):.1f}**" for m in modes) + " |")
    lines.append(f"\n{os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
                 f"multi_processing with {workers} workers; 60,000 + 10,000 records.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=os.environ.get("MNIST_SOURCE", ""))
    parser.add_argument("--modes", nargs="+", default=["in_memory", "multi_processing"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--baseline-out", default="")
    parser.add_argument("--json", default="", help="also write the timings here")
    args = parser.parse_args()
    cfg = load_config(source=args.source)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        for mode in args.modes:
            seconds, stats_dir = run_once(cfg, mode, args.workers, Path(tmp) / mode)
            results[mode] = seconds
            print(mode, json.dumps({k: round(v, 1) for k, v in seconds.items()}), flush=True)
            if args.baseline_out and mode == args.modes[0]:
                print("baseline:", write_baseline(str(stats_dir), args.baseline_out))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(markdown(results, args.workers))


if __name__ == "__main__":
    main()
