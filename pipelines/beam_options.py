"""The Beam arguments every Beam step shares, wherever the pipeline runs: one rule for the local
run (pipelines/local_runner.py) and the compiled package (pipelines/kubeflow/compile.py)."""

from __future__ import annotations

from pipelines.config import PipelineConfig

# The engine DirectRunner picks for batch pipelines, named: given DirectRunner (or no runner),
# Beam >= 2.6x first tries its Prism runner, which downloads a binary from GitHub at every Beam
# step (an unverified executable; a failed download costs seconds before the fallback).
DIRECT_ENGINE = "FnApiRunner"


def worker_image_arg(cfg: PipelineConfig) -> str:
    # Remote Beam workers run the pipeline's own image, which has all the code; naming it also
    # stops TFX from building and attaching an sdist of itself at every Beam step (~4 s each).
    return f"--sdk_container_image={cfg.image}"


def direct_args(cfg: PipelineConfig, running_mode: str, workers: int) -> list[str]:
    """Beam in the step's own process (or its subprocesses): `workers` 0 is one per core."""
    return [f"--runner={DIRECT_ENGINE}", f"--direct_running_mode={running_mode}",
            f"--direct_num_workers={workers}", worker_image_arg(cfg)]
