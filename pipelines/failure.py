"""What a failed local run prints: one block that says which stage failed, the problem in words,
the user's own inputs that stage read, and where the full log and the data review are. The
traceback goes to the run's log file (and to the screen with --verbose)."""

from __future__ import annotations

import os

from ml_metadata.proto import metadata_store_pb2

from components import artifacts
from pipelines import summary
from pipelines.config import PipelineConfig

# The settings each kind of stage reads from the user: what the block names.
DATA_STAGES = ("MnistExampleGen", "StatisticsGen", "ExampleValidator", "ImageValidator", "DriftValidator", "DataGate")
REGISTRY_STAGES = ("ChampionResolver", "BakeoffEvaluator", "RegistryPusher")
MAX_PROBLEM_LINES = 8
OUR_PACKAGES = ("components", "pipelines", "trainers")


def users_error(error: BaseException) -> BaseException:
    """The error that says what is wrong in the user's terms: the innermost of this project's own
    errors in the chain (Beam re-raises a stage's error inside its own; a RegistryError wraps the
    socket's), else the error itself."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        chain.append(error)
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    ours = [e for e in chain if type(e).__module__.split(".")[0] in OUR_PACKAGES]
    return ours[-1] if ours else chain[0]


def failed_stage(cfg: PipelineConfig) -> str | None:
    """The node id of the newest failed execution in the run's metadata store (None: none failed,
    e.g. the run stopped before any stage)."""
    if not os.path.exists(cfg.metadata_path):
        return None
    store = summary.open_store(cfg)
    failed = [e for e in store.get_executions() if e.last_known_state == metadata_store_pb2.Execution.FAILED]
    if not failed:
        return None
    newest = max(failed, key=lambda e: e.id)
    nodes = [c.name for c in store.get_contexts_by_execution(newest.id) if c.type == "node"]
    return nodes[0].split(".")[-1] if nodes else None


def data_review(cfg: PipelineConfig) -> str | None:
    """The data review of the latest run, if its DriftValidator got that far."""
    if not os.path.exists(cfg.metadata_path):
        return None
    store = summary.open_store(cfg)
    try:
        run = summary.run_context(store)
    except ValueError:
        return None
    drift = summary.run_artifact(store, run, "ExampleAnomalies")  # DriftValidator's is the newest
    review = drift.custom_properties.get(artifacts.REVIEW_HTML) if drift else None
    return review.string_value if review and review.string_value else None


def user_inputs(cfg: PipelineConfig, stage: str | None, error: BaseException) -> list[str]:
    """The settings the failed stage read from the user, as `name value` (their own paths and URIs)."""
    inputs = []
    if stage in DATA_STAGES or stage is None:
        inputs.append(f"source {cfg.source or '(MNIST: the cache ' + cfg.cache_dir + ', then the mirrors)'}")
    if stage in DATA_STAGES[1:]:
        inputs.append(f"schema {cfg.schema_path}")
    if stage in REGISTRY_STAGES or type(error).__name__ == "RegistryError":
        inputs.append(f"registry {cfg.resolved_registry_uri()}")
    return inputs


def error_block(command: str, cfg: PipelineConfig, error: BaseException, log_path: str) -> str:
    """The block a failed run prints instead of a traceback."""
    stage = failed_stage(cfg)
    cause = users_error(error)
    problem = [line.rstrip() for line in (str(cause) or type(cause).__name__).splitlines() if line.strip()]
    if len(problem) > MAX_PROBLEM_LINES:
        problem = problem[:MAX_PROBLEM_LINES] + [f"… ({len(problem) - MAX_PROBLEM_LINES} more lines in the log)"]
    lines = [f"{command}: the run FAILED" + (f" in stage {stage}" if stage else ""),
             f"  problem:     {type(cause).__name__}: {problem[0]}"]
    lines += [f"               {line}" for line in problem[1:]]
    lines += [f"  your input:  {item}" for item in user_inputs(cfg, stage, cause)]
    review = data_review(cfg)
    if review:
        lines.append(f"  data review: {review}")
    lines.append(f"  full log:    {log_path} (the traceback is there; --verbose prints it here)")
    return "\n".join(lines)
