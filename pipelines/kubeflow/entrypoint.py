"""What every task's container runs (the package's executor command, `python -m pipelines
executor ARGS`): TFX's KFP v2 executor entry point with the same arguments, after making an
object-store pipeline root work in the container.

TFX's own command would fail on S3: `tf.io.gfile` knows s3:// only once tensorflow-io is
imported, and the KFP backend of an on-prem Kubeflow hands out `minio://` artifact URIs, which no
client knows (components/object_store.py). Here the invocation's `minio://` URIs become `s3://`
for the executor, and the executor's output file says `minio://` again, as KFP wrote them.
"""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import MutableMapping
from pathlib import Path

from components import object_store

TFX_ENTRYPOINT = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
# What a multi-worker trainer's replicas run (components/training_job/): TFX's plain executor runner.
REPLICA_ENTRYPOINT = "tfx.scripts.run_executor"
COMMAND = ["python", "-m", "pipelines", "executor"]
INVOCATION_FLAG = "--json_serialized_invocation_args"


def back_to_minio(output_file: str) -> None:
    """The executor's output file with its artifact URIs as KFP wrote them (`minio://`)."""
    path = Path(output_file)
    if not path.exists():
        return
    output = json.loads(path.read_text(encoding="utf-8"))
    for entry in output.get("artifacts", {}).values():
        for artifact in entry.get("artifacts", []):
            if artifact.get("uri", "").startswith(object_store.S3):
                artifact["uri"] = object_store.KFP_MINIO + artifact["uri"][len(object_store.S3):]
    path.write_text(json.dumps(output), encoding="utf-8")


def run_module_as_main(module: str, args: list[str]) -> int:
    """`python -m module args`, in this process; its exit status."""
    sys.argv = [module, *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as done:  # absl's app.run ends with sys.exit
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    return 0


def run_replica(argv: list[str], environ: MutableMapping[str, str]) -> int:
    """A replica of a multi-worker trainer's Kubeflow job: tfx.scripts.run_executor with the step's
    artifacts and properties (components/training_job/executor.py), s3:// enabled where they use it."""
    if any(object_store.S3 in arg for arg in argv):
        object_store.enable_s3(environ)
    return run_module_as_main(REPLICA_ENTRYPOINT, argv)


def run_executor(argv: list[str], environ: MutableMapping[str, str]) -> int:
    args = list(argv)
    if INVOCATION_FLAG not in args[:-1]:
        print(f"error: executor needs {INVOCATION_FLAG} JSON (the KFP executor input)", file=sys.stderr)
        return 2
    at = args.index(INVOCATION_FLAG) + 1
    serialized = args[at]
    from_minio = object_store.KFP_MINIO in serialized
    if from_minio or object_store.S3 in serialized:
        object_store.enable_s3(environ)
    if from_minio:
        args[at] = object_store.executor_input_to_s3(serialized)
    code = run_module_as_main(TFX_ENTRYPOINT, args)
    if from_minio and code == 0:
        back_to_minio(json.loads(args[at])["outputs"]["outputFile"])
    return code
