"""What each replica of a multi-worker trainer runs: TFX's Trainer executor (the same run_fn with the
same artifacts and properties as a single-container trainer), in a world the engine described.

- `ReplicaExecutor`: TFX 1.16's GenericExecutor checks after run_fn that the model was exported and
  fails otherwise; only the chief exports (trainers/distributed.py), so a worker whose run_fn ended
  first would fail the job. Here a worker waits for the chief's export instead.
- `torch_environment`: torch.distributed's MASTER_ADDR, MASTER_PORT, WORLD_SIZE and RANK when the
  engine set other variables: Kubeflow Trainer v2's torch runtime sets torchrun's (PET_NNODES,
  PET_NODE_RANK, PET_MASTER_ADDR, PET_MASTER_PORT) for a torchrun the replica does not run; Vertex
  AI documents CLUSTER_SPEC and TF_CONFIG for every replica of a custom container, from which the
  chief's address and the replica's rank in the strategy's order are derived. Either way the
  PyTorch trainer joins the same world the Keras one does.
A Kubeflow training job's replicas start it with `python -m pipelines replica ARGS`, ARGS those of
`tfx.scripts.run_executor` (pipelines/kubeflow/entrypoint.py run_replica).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from typing import Any

from tfx import types
from tfx.components.trainer import executor as trainer_executor
from tfx.components.util import udf_utils
from tfx.dsl.io import fileio

from trainers import distributed

# How long a worker waits for the chief's export after its own run_fn ended (the chief exports
# right after the last collective step; a SavedModel to Cloud Storage takes seconds).
EXPORT_WAIT_SECONDS = 1800.0


def trainer_v2_environment(env: Mapping[str, str]) -> dict[str, str]:
    """torch.distributed's variables from the PET_* ones a Kubeflow Trainer v2 TrainJob sets, one
    process per node (the TrainJob's numProcPerNode 1, components/training_job/job.py)."""
    if env.get("PET_NPROC_PER_NODE", "1") != "1":
        raise ValueError(f"PET_NPROC_PER_NODE={env['PET_NPROC_PER_NODE']}: a replica is one trainer process "
                         "per node (the TrainJob's numProcPerNode must be 1)")
    if int(env["PET_NNODES"]) == 1:
        return {}
    return {"MASTER_ADDR": env["PET_MASTER_ADDR"], "MASTER_PORT": env["PET_MASTER_PORT"],
            "WORLD_SIZE": env["PET_NNODES"], "RANK": env["PET_NODE_RANK"]}


def torch_environment(env: Mapping[str, str]) -> dict[str, str]:
    """torch.distributed's variables from PET_* (a Trainer v2 TrainJob) or TF_CONFIG (Vertex AI), when
    the engine set only those; nothing when they are set already (torchrun) or there is no cluster."""
    if "WORLD_SIZE" in env:
        return {}
    if env.get("PET_NNODES"):
        return trainer_v2_environment(env)
    if not env.get("TF_CONFIG"):
        return {}
    world = distributed.tf_world(env)
    if world.size == 1:
        return {}
    cluster = json.loads(env["TF_CONFIG"])["cluster"]
    chief = [address for kind in distributed.TRAINING_TASKS for address in cluster.get(kind, [])][0]
    host, _, port = chief.rpartition(":")
    return {"MASTER_ADDR": host, "MASTER_PORT": port, "WORLD_SIZE": str(world.size), "RANK": str(world.rank)}


def is_chief(env: Mapping[str, str]) -> bool:
    return distributed.torch_world(env).is_chief and distributed.tf_world(env).is_chief


def wait_for_export(serving_model_dir: str, timeout: float = EXPORT_WAIT_SECONDS, poll: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not fileio.exists(serving_model_dir):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the chief did not export {serving_model_dir} within {timeout:.0f} s "
                               "of this worker's end of training")
        time.sleep(poll)


class ReplicaExecutor(trainer_executor.GenericExecutor):
    """TFX's GenericExecutor.Do, except that a worker waits for the chief's export."""

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        os.environ.update(torch_environment(os.environ))
        if is_chief(os.environ):
            return super().Do(input_dict, output_dict, exec_properties)
        self._log_startup(input_dict, output_dict, exec_properties)
        fn_args = self._GetFnArgs(input_dict, output_dict, exec_properties)
        udf_utils.get_fn(exec_properties, "run_fn")(fn_args)
        wait_for_export(fn_args.serving_model_dir)
        logging.info("worker done; the chief exported %s", fn_args.serving_model_dir)
