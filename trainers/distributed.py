"""Who this training process is among its workers, read from the environment the engines set: the
one place the trainers look at process state for data-parallel training.

- PyTorch: torchrun, Kubeflow Trainer and PyTorchJob set MASTER_ADDR, MASTER_PORT, WORLD_SIZE and
  RANK (torchrun also LOCAL_RANK and LOCAL_WORLD_SIZE); torch.distributed's "env://" rendezvous
  reads the same variables.
- Keras: Vertex AI worker pools and TFJob set TF_CONFIG, {"cluster": {"chief": [...], "worker":
  [...]}, "task": {"type": ..., "index": ...}}; MultiWorkerMirroredStrategy reads it itself.

No variable set (a pipeline's ordinary trainer, a test): a world of one, and the trainers take
their single-process path unchanged.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class World:
    rank: int = 0  # 0 is the chief: the only worker that exports and writes history and metadata
    size: int = 1
    local_rank: int = 0  # among the workers on this machine (which GPU it takes)
    local_size: int = 1  # workers on this machine, sharing its cores

    @property
    def is_chief(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int] | None:
        """(index, count) of this worker's share of the training records; None: all of them."""
        return (self.rank, self.size) if self.size > 1 else None

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.size and 0 <= self.local_rank < self.local_size <= self.size):
            raise ValueError(f"inconsistent worker environment: {self}")


def torch_world(env: Mapping[str, str] | None = None) -> World:
    """The world torch.distributed's env:// rendezvous will join. A PyTorchJob pod runs one worker,
    so LOCAL_WORLD_SIZE (set by torchrun only) defaults to 1."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" not in env:
        return World()
    size = int(env["WORLD_SIZE"])
    if size > 1 and not env.get("MASTER_ADDR"):
        raise ValueError(f"WORLD_SIZE={size} but MASTER_ADDR is not set: no address to meet the other workers at")
    return World(rank=int(env.get("RANK", "0")), size=size, local_rank=int(env.get("LOCAL_RANK", "0")),
                 local_size=int(env.get("LOCAL_WORLD_SIZE", "1")))


# Task types of TF_CONFIG that train, in rank order (MultiWorkerMirroredStrategy's chief is the
# "chief" task when there is one, else worker 0). An "evaluator" takes no part in training.
TRAINING_TASKS = ("chief", "worker")


def tf_world(env: Mapping[str, str] | None = None) -> World:
    """This task's place among TF_CONFIG's training tasks; the workers whose host is this task's
    share its cores."""
    env = os.environ if env is None else env
    if not env.get("TF_CONFIG"):
        return World()
    config = json.loads(env["TF_CONFIG"])
    cluster, task = config.get("cluster", {}), config.get("task", {})
    if "ps" in cluster:
        raise ValueError("TF_CONFIG has parameter servers: the Keras trainer trains data-parallel "
                         "(MultiWorkerMirroredStrategy) only")
    addresses = [address for kind in TRAINING_TASKS for address in cluster.get(kind, [])]
    if not addresses:
        return World()
    if task.get("type") not in TRAINING_TASKS:
        raise ValueError(f"TF_CONFIG task {task} is not one of the training tasks {TRAINING_TASKS}")
    rank = len(cluster.get("chief", [])) * (task["type"] == "worker") + int(task.get("index", 0))
    host = addresses[rank].rsplit(":", 1)[0]
    same_host = [i for i, address in enumerate(addresses) if address.rsplit(":", 1)[0] == host]
    return World(rank=rank, size=len(addresses), local_rank=same_host.index(rank), local_size=len(same_host))


def per_worker_batch(batch_size: int, world: World) -> int:
    """The global batch (the config's batch_size, the same for any number of workers) split evenly:
    one optimizer step sees batch_size examples whatever the world size."""
    if batch_size % world.size:
        raise ValueError(f"batch_size {batch_size} does not split evenly over {world.size} workers: "
                         f"choose a multiple of {world.size}")
    return batch_size // world.size


def threads_per_worker(cores: int, world: World) -> int:
    """Workers sharing a machine share its cores: each takes its part, so they do not oversubscribe."""
    return max(1, cores // world.local_size)
