"""The PyTorch challenger: a TFX Trainer run_fn that reads top to bottom.

data (the same records as Keras', parsed once by the same tf.data code, then shuffled, batched
and shifted in torch) -> model (normalization inside) -> placement -> train loop -> export the
state dict (tensors only) and the metadata naming
its architecture: trainers/loader.py builds that architecture from trainers/torch_model.py and
loads the weights into it (uint8 images [N, 28, 28] -> probabilities [N, classes]). No TorchScript:
its archive carries code, and torch 2.14 deprecates it.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import time
from typing import Any

import torch
from tfx.components.trainer.fn_args_utils import FnArgs
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from trainers import common, distributed, machine, model_format
from trainers.torch_model import (
    TensorBatches,
    build_model,
    count_parameters,
    data_parallel,
    ddp_step_ms,
    evaluate,
    joined,
    placed,
    train_epoch,
)
from trainers.trial import OnEpoch, TrialData, TrialResult

STATE_DICT_FILE = "state_dict.pt"
EXPORT_FORMAT = "state_dict"


# --- data ----------------------------------------------------------------------------------
def split_batches(file_patterns: list[str], batch_size: int, shuffle: bool, seed: int, shift: int = 0,
                  shard: tuple[int, int] | None = None, schema_path: str | None = None, limit: int = 0,
                  steps: int | None = None) -> TensorBatches:
    """The split's records parsed once (common.decode_split: the Keras input's parsing) and held as
    two tensors (~45 MB for MNIST's training split), batched in torch each pass. Iterating tf.data
    from Python every epoch, its threads beside torch's on the same cores, cost the seed model's
    training 25-35 % of its throughput on the 2-core CPU (bench/README.md)."""
    images, labels = common.decode_split(file_patterns, shard, schema_path, limit)
    return TensorBatches(torch.from_numpy(images), torch.from_numpy(labels), batch_size, shuffle, seed, shift, steps)


def batches(data: TensorBatches, device: torch.device):
    """The batches of `data` on `device`."""
    for images, labels in data:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


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


# --- export --------------------------------------------------------------------------------
def export(model: nn.Module, serving_dir: str) -> None:
    """The state dict, as torch.save writes it (into memory first: torch writes local files only,
    and the serving folder may be on an object store)."""
    buffer = io.BytesIO()
    torch.save({key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}, buffer)
    model_format.write_bytes(os.path.join(serving_dir, STATE_DICT_FILE), buffer.getvalue())


def architecture_meta(model_name: str, class_names: list[str], width: float = 1.0) -> dict[str, Any]:
    """What the loader needs to rebuild the exported model: the metadata's framework, format, file
    and architecture (the model, its width and its classes)."""
    return {"framework": "pytorch", "format": EXPORT_FORMAT, "file": STATE_DICT_FILE, "model": model_name,
            "width": width, "class_names": list(class_names), "num_classes": len(class_names)}


# --- train loop ----------------------------------------------------------------------------
def optimizer_and_schedule(model: nn.Module, cfg: common.TrainConfig,
                           total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Adam and the shared learning-rate schedule over `total_steps` steps. Adam's fused kernel on
    a CPU or CUDA device (one pass over all parameters, not a dozen small ops each): a seed-model
    step's optimizer time 2.8 -> 1.0 ms on the 2-core CPU (bench/README.md)."""
    fused = next(model.parameters()).device.type in ("cpu", "cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, fused=fused)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: common.learning_rate_at(
        step, total_steps, cfg.learning_rate, cfg.lr_schedule) / cfg.learning_rate)
    return optimizer, scheduler


def train_epochs(model: nn.Module, train_ds, eval_ds, device: torch.device, cfg: common.TrainConfig, epochs: int,
                 mixed: bool, writer: SummaryWriter | None = None,
                 on_epoch: OnEpoch | None = None) -> tuple[dict[str, list[float]], list[float]]:
    """Up to `epochs` epochs of training, each followed by an evaluation of the unwrapped model (no
    communication between the workers); each epoch's metrics to `writer` (TensorBoard) and
    `on_epoch` (a tuning trial's report: False stops the training). Returns the per-epoch history
    and each epoch's seconds."""
    # One step is one global batch, whatever the number of workers: every worker's shard has
    # the same number of batches (run_fn passes common.count_batches as the steps).
    steps_per_epoch = len(train_ds)
    optimizer, scheduler = optimizer_and_schedule(model, cfg, steps_per_epoch * epochs)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    epoch_seconds: list[float] = []
    for epoch in range(epochs):
        epoch_started = time.monotonic()
        on_batch = functools.partial(common.log_batches, total=steps_per_epoch or None, epoch=epoch + 1,
                                     epochs=epochs)
        loss, acc = train_epoch(model, batches(train_ds, device), optimizer, scheduler, mixed, on_batch)
        # In float32, as the export (float32 weights, no autocast) computes: the recorded val_accuracy
        # is the served model's, whatever the training's precision.
        val_loss, val_acc = evaluate(getattr(model, "module", model), batches(eval_ds, device))
        for key, value in zip(history, (loss, acc, val_loss, val_acc), strict=True):
            history[key].append(value)
            if writer:
                writer.add_scalar(f"epoch_{key}", value, epoch)
        epoch_seconds.append(round(time.monotonic() - epoch_started, 3))
        latest = {key: values[-1] for key, values in history.items()}
        common.log_epoch(epoch + 1, epochs, latest, epoch_seconds[-1])
        if on_epoch is not None and not on_epoch(epoch + 1, latest):
            break
    return history, epoch_seconds


# --- train and export ----------------------------------------------------------------------
def run_fn(fn_args: FnArgs) -> None:
    cfg = common.TrainConfig.from_custom_config(fn_args.custom_config, fn_args.hyperparameters)
    class_names = common.class_names_from_custom_config(fn_args.custom_config)
    world = distributed.torch_world()
    batch_size = distributed.per_worker_batch(cfg.batch_size, world)
    torch.manual_seed(cfg.seed)
    threads = use_container_cores(world)
    machine.keep_freed_memory()
    device, device_name = choose_device(cfg.accelerator)
    mixed = common.mixed_precision_applies(cfg, on_cpu=device.type == "cpu")

    # Each pass reshuffles (seeded), as Keras' fit does. Each worker trains on its own shard of the
    # split at its part of the global batch, all of them the same number of batches; every worker
    # evaluates the whole eval split.
    steps = common.count_batches(fn_args.train_files, batch_size, world.size) if world.shard else None
    train_ds = split_batches(fn_args.train_files, batch_size, shuffle=True, seed=cfg.seed, shift=cfg.augment_shift,
                             shard=world.shard, schema_path=fn_args.schema_path, steps=steps)
    eval_ds = split_batches(fn_args.eval_files, 256, shuffle=False, seed=cfg.seed, schema_path=fn_args.schema_path)
    with joined(world, device) as device:
        model = data_parallel(placed(build_model(cfg.model, len(class_names), cfg.width), device), world, device)
        if world.rank:
            torch.manual_seed(cfg.seed + world.rank)  # its own dropout masks; the weights are rank 0's
        writer = SummaryWriter(log_dir=fn_args.model_run_dir) if world.is_chief else None
        started_at, started = time.time(), time.monotonic()
        history, epoch_seconds = train_epochs(model, train_ds, eval_ds, device, cfg, cfg.epochs, mixed, writer)
        train_seconds = time.monotonic() - started
        step_ms = ddp_step_ms(model)
        model = getattr(model, "module", model)
    if not world.is_chief:
        return  # the chief's model is the same: it alone exports and writes
    writer.close()

    export(model, fn_args.serving_model_dir)
    common.write_json(os.path.join(fn_args.serving_model_dir, common.HISTORY_FILE), history)
    common.write_json(os.path.join(fn_args.serving_model_dir, common.MODEL_META_FILE), {
        **architecture_meta(cfg.model, class_names, cfg.width), "parameters": count_parameters(model),
        "device": device_name, "mixed_precision": mixed, "threads": threads, "world_size": world.size,
        "cpu": machine.cpu_description(),
        "train_seconds": round(train_seconds, 2), "started_at": started_at, "epoch_seconds": epoch_seconds,
        **({"ddp_step_ms": step_ms} if step_ms else {}),
        "config": dataclasses.asdict(cfg),
        "torch_version": torch.__version__,
    })


# --- a tuning trial ------------------------------------------------------------------------
def tune_trial(cfg: common.TrainConfig, data: TrialData, on_epoch: OnEpoch) -> TrialResult:
    """One tuning trial (components/tuner): run_fn's data, model and training loop, on the first
    `data.examples` training records for up to `data.epochs` epochs, each epoch's eval-split
    metrics reported to `on_epoch` (which may stop it). Nothing is exported."""
    torch.manual_seed(cfg.seed)
    if data.threads:
        torch.set_num_threads(data.threads)
    else:
        use_container_cores()
    machine.keep_freed_memory()
    device, device_name = choose_device(cfg.accelerator)
    mixed = common.mixed_precision_applies(cfg, on_cpu=device.type == "cpu")
    train_ds = split_batches(data.train_files, cfg.batch_size, shuffle=True, seed=cfg.seed, shift=cfg.augment_shift,
                             schema_path=data.schema_path, limit=data.examples)
    eval_ds = split_batches(data.eval_files, 256, shuffle=False, seed=cfg.seed, schema_path=data.schema_path)
    model = placed(build_model(cfg.model, len(data.class_names) or model_format.NUM_CLASSES, cfg.width), device)
    started = time.monotonic()
    history, _ = train_epochs(model, train_ds, eval_ds, device, cfg, data.epochs, mixed, on_epoch=on_epoch)
    return TrialResult(history=history, epochs_run=len(history["loss"]),
                       examples=data.examples or common.count_records(data.train_files),
                       seconds=round(time.monotonic() - started, 3), device=device_name, mixed_precision=mixed,
                       parameters=count_parameters(model))
