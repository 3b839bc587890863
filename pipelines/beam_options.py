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


def direct_args(cfg: PipelineConfig, in_pods: bool = False) -> list[str]:
    """Beam in the step's own process (or its subprocesses), as beam_direct_running_mode and
    beam_direct_workers say, locally and in the package's pods alike. Workers 0 (one per core)
    is refused for pods' subprocesses: Beam counts the cores with multiprocessing.cpu_count(),
    which in a Kubernetes pod is the node's (a 2-CPU pod on a 96-core node would start 96 worker
    processes, each importing TensorFlow)."""
    mode, workers = cfg.beam_direct_running_mode, cfg.beam_direct_workers
    if in_pods and mode == "multi_processing" and workers == 0:
        raise ValueError("beam_direct_running_mode multi_processing with beam_direct_workers 0 (one per core): in a "
                         "pod Beam counts the node's cores, not the pod's; set beam_direct_workers to the worker "
                         "processes each Beam pod may start")
    return [f"--runner={DIRECT_ENGINE}", f"--direct_running_mode={mode}", f"--direct_num_workers={workers}",
            worker_image_arg(cfg)]


def statistics_args(cfg: PipelineConfig) -> list[str]:
    """StatisticsGen's own Beam arguments (TFX puts a step's own after the pipeline's: these win):
    with the direct runner, one worker where the config leaves the count to Beam (0, one per core).
    TFDV's graph is some twenty Beam stages per split, and each worker sets up every stage again
    (its DoFns unpickled and bz2-decompressed): on MNIST's 70,000 records that costs more than a
    second worker gains (bench/README.md, "The AVX2 EPYC, after oneDNN")."""
    return ["--direct_num_workers=1"] if cfg.beam_runner == "direct" and cfg.beam_direct_workers == 0 else []
