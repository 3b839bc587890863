"""The PyTorch challenger: a TFX Trainer run_fn that reads top to bottom.

data (the same tf.data batches as Keras, handed over as tensors) -> model (normalization
inside) -> placement -> train loop -> export TorchScript that takes raw uint8 images
[N, 28, 28] and returns probabilities [N, 10], plus the state_dict.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import os
import time
from collections.abc import Iterator

import torch
from tfx.components.trainer.fn_args_utils import FnArgs
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from trainers import common, distributed, model_format
from trainers.torch_model import Probabilities, build_model, count_parameters, evaluate, train_epoch

TORCHSCRIPT_FILE = "model.pt"
STATE_DICT_FILE = "state_dict.pt"


# --- data ----------------------------------------------------------------------------------
def batches(dataset, device: torch.device):
    """Streams (uint8 images, int64 labels) tensor batches; whole batches, no per-pixel objects."""
    for images, labels in dataset.as_numpy_iterator():
        yield (torch.from_numpy(images).to(device, non_blocking=True),
               torch.from_numpy(labels).to(device, non_blocking=True))


# --- placement -----------------------------------------------------------------------------
def choose_device(accelerator: str) -> tuple[torch.device, str]:
    if accelerator in ("auto", "tpu"):
        try:
            import torch_xla.core.xla_model as xm  # present only in TPU images
            return xm.xla_device(), "tpu"
        except ImportError:
            if accelerator == "tpu":
                raise RuntimeError("accelerator=tpu but torch_xla is not installed") from None
    if accelerator in ("auto", "gpu") and torch.cuda.is_available():
        return torch.device("cuda"), f"gpu {torch.cuda.get_device_name(0)}"
    if accelerator == "gpu":
        raise RuntimeError("accelerator=gpu but torch.cuda.is_available() is False")
    return torch.device("cpu"), "cpu"


def use_container_cores(world: distributed.World | None = None) -> int:
    """Threads for this worker: the container's cores, shared with the other workers on the machine."""
    threads = distributed.threads_per_worker(common.container_cores(), world or distributed.World())
    torch.set_num_threads(threads)
    return threads


@contextlib.contextmanager
def joined(world: distributed.World, device: torch.device) -> Iterator[torch.device]:
    """This worker's device, inside the world of its data-parallel workers: torch.distributed's
    env:// rendezvous (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK), NCCL between GPUs, gloo between
    CPUs; the process group is destroyed when the block ends, failed or not. A world of one joins
    nothing."""
    if world.size == 1:
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)  # one GPU per worker on a multi-GPU machine
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise RuntimeError(f"data-parallel training runs on CPUs or CUDA GPUs, not on {device.type}")
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        torch.distributed.destroy_process_group()


def data_parallel(model: nn.Module, world: distributed.World, device: torch.device) -> nn.Module:
    """The model wrapped in DistributedDataParallel for several workers: it starts every worker
    from rank 0's weights and averages the gradients of every step over the workers."""
    if world.size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def ddp_step_ms(model: nn.Module) -> dict[str, float]:
    """DistributedDataParallel's own per-step timings (sampled every few iterations), in ms: where
    a step's time goes between compute and gradient communication. Empty when not available."""
    stats = model._get_ddp_logging_data() if isinstance(model, nn.parallel.DistributedDataParallel) else {}
    keys = {"forward_compute": "avg_forward_compute_time", "backward_compute": "avg_backward_compute_time",
            "backward_comm": "avg_backward_comm_time", "backward_overlap": "avg_backward_compute_comm_overlap_time"}
    return {name: round(stats[key] / 1e6, 3) for name, key in keys.items() if stats.get(key)}


# --- export --------------------------------------------------------------------------------
def serialized(save, obj) -> bytes:
    """What torch.jit.save or torch.save writes, as bytes (torch writes local files only; the
    serving folder may be on an object store)."""
    buffer = io.BytesIO()
    save(obj, buffer)
    return buffer.getvalue()


def export(model: nn.Module, serving_dir: str) -> None:
    served = Probabilities(model).to("cpu").eval()
    example = torch.zeros((2, *common.IMAGE_SHAPE), dtype=torch.uint8)
    model_format.write_bytes(os.path.join(serving_dir, TORCHSCRIPT_FILE),
                       serialized(torch.jit.save, torch.jit.trace(served, example)))
    model_format.write_bytes(os.path.join(serving_dir, STATE_DICT_FILE),
                       serialized(torch.save, model.to("cpu").state_dict()))


def run_fn(fn_args: FnArgs) -> None:
    cfg = common.TrainConfig.from_custom_config(fn_args.custom_config)
    world = distributed.torch_world()
    batch_size = distributed.per_worker_batch(cfg.batch_size, world)
    torch.manual_seed(cfg.seed)
    threads = use_container_cores(world)
    device, device_name = choose_device(cfg.accelerator)
    mixed = common.mixed_precision_applies(cfg, on_cpu=device.type == "cpu")

    # Streamed from the TFRecords every epoch (no in-memory copy of the split); each pass
    # reshuffles (seeded), as Keras' fit does. Each worker trains on its own shard of the split at
    # its part of the global batch; every worker evaluates the whole eval split (as one process does).
    train_ds = common.make_dataset(fn_args.train_files, batch_size, shuffle=True, seed=cfg.seed, cache=False,
                                   shift=cfg.augment_shift, shard=world.shard)
    eval_ds = common.make_dataset(fn_args.eval_files, 256, shuffle=False, seed=cfg.seed, cache=False)
    with joined(world, device) as device:
        model = data_parallel(build_model(cfg.model).to(device), world, device)
        if world.rank:
            torch.manual_seed(cfg.seed + world.rank)  # its own dropout masks; the weights are rank 0's
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        # The schedule needs the epoch's length; a streamed split has none until one pass counted it.
        # One step is one global batch, whatever the number of workers.
        steps_per_epoch = (common.count_batches(fn_args.train_files, batch_size, world.size)
                           if cfg.lr_schedule != "constant" else 0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: common.learning_rate_at(
            step, steps_per_epoch * cfg.epochs, cfg.learning_rate, cfg.lr_schedule) / cfg.learning_rate)
        writer = SummaryWriter(log_dir=fn_args.model_run_dir) if world.is_chief else None
        history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
        epoch_seconds: list[float] = []
        started_at, started = time.time(), time.monotonic()
        for epoch in range(cfg.epochs):
            epoch_started = time.monotonic()
            on_batch = functools.partial(common.log_batches, total=steps_per_epoch or None, epoch=epoch + 1,
                                         epochs=cfg.epochs)
            loss, acc = train_epoch(model, batches(train_ds, device), optimizer, scheduler, mixed, on_batch)
            # The unwrapped model: evaluating needs no communication between the workers.
            val_loss, val_acc = evaluate(getattr(model, "module", model), batches(eval_ds, device), mixed)
            for key, value in zip(history, (loss, acc, val_loss, val_acc), strict=True):
                history[key].append(value)
                if writer:
                    writer.add_scalar(f"epoch_{key}", value, epoch)
            epoch_seconds.append(round(time.monotonic() - epoch_started, 3))
            common.log_epoch(epoch + 1, cfg.epochs, {key: values[-1] for key, values in history.items()},
                             epoch_seconds[-1])
        train_seconds = time.monotonic() - started
        step_ms = ddp_step_ms(model)
        model = getattr(model, "module", model)
    if not world.is_chief:
        return  # the chief's model is the same: it alone exports and writes
    writer.close()

    export(model, fn_args.serving_model_dir)
    common.write_json(os.path.join(fn_args.serving_model_dir, common.HISTORY_FILE), history)
    common.write_json(os.path.join(fn_args.serving_model_dir, common.MODEL_META_FILE), {
        "framework": "pytorch", "format": "torchscript", "file": TORCHSCRIPT_FILE,
        "state_dict": STATE_DICT_FILE, "model": cfg.model, "parameters": count_parameters(model),
        "device": device_name, "mixed_precision": mixed, "threads": threads, "world_size": world.size,
        "train_seconds": round(train_seconds, 2), "started_at": started_at, "epoch_seconds": epoch_seconds,
        **({"ddp_step_ms": step_ms} if step_ms else {}),
        "config": dataclasses.asdict(cfg),
        "torch_version": torch.__version__,
    })
