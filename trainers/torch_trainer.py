"""The PyTorch challenger: a TFX Trainer run_fn that reads top to bottom.

data (the same tf.data batches as Keras, handed over as tensors) -> model (normalization
inside) -> placement -> train loop -> export TorchScript that takes raw uint8 images
[N, 28, 28] and returns probabilities [N, 10], plus the state_dict.
"""

from __future__ import annotations

import dataclasses
import io
import os
import time

import torch
from tfx.components.trainer.fn_args_utils import FnArgs
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from trainers import common, model_format
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


def use_container_cores() -> int:
    cores = common.container_cores()
    torch.set_num_threads(cores)
    return cores


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
    torch.manual_seed(cfg.seed)
    cores = use_container_cores()
    device, device_name = choose_device(cfg.accelerator)
    mixed = common.mixed_precision_applies(cfg, on_cpu=device.type == "cpu")

    # Streamed from the TFRecords every epoch (no in-memory copy of the split); each pass
    # reshuffles (seeded), as Keras' fit does.
    train_ds = common.make_dataset(fn_args.train_files, cfg.batch_size, shuffle=True, seed=cfg.seed, cache=False,
                                   shift=cfg.augment_shift)
    eval_ds = common.make_dataset(fn_args.eval_files, 256, shuffle=False, seed=cfg.seed, cache=False)
    model = build_model(cfg.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
    # The schedule needs the epoch's length; a streamed split has none until one pass counted it.
    steps_per_epoch = common.count_batches(fn_args.train_files, cfg.batch_size) if cfg.lr_schedule != "constant" else 0
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: common.learning_rate_at(
        step, steps_per_epoch * cfg.epochs, cfg.learning_rate, cfg.lr_schedule) / cfg.learning_rate)
    writer = SummaryWriter(log_dir=fn_args.model_run_dir)
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "val_loss": [], "val_accuracy": []}
    started = time.monotonic()
    for epoch in range(cfg.epochs):
        epoch_started = time.monotonic()
        loss, acc = train_epoch(model, batches(train_ds, device), optimizer, scheduler, mixed)
        val_loss, val_acc = evaluate(model, batches(eval_ds, device), mixed)
        for key, value in zip(history, (loss, acc, val_loss, val_acc), strict=True):
            history[key].append(value)
            writer.add_scalar(f"epoch_{key}", value, epoch)
        common.log_epoch(epoch + 1, cfg.epochs, {key: values[-1] for key, values in history.items()},
                         time.monotonic() - epoch_started)
    writer.close()
    train_seconds = time.monotonic() - started

    export(model, fn_args.serving_model_dir)
    common.write_json(os.path.join(fn_args.serving_model_dir, common.HISTORY_FILE), history)
    common.write_json(os.path.join(fn_args.serving_model_dir, common.MODEL_META_FILE), {
        "framework": "pytorch", "format": "torchscript", "file": TORCHSCRIPT_FILE,
        "state_dict": STATE_DICT_FILE, "model": cfg.model, "parameters": count_parameters(model),
        "device": device_name, "mixed_precision": mixed, "threads": cores,
        "train_seconds": round(train_seconds, 2), "config": dataclasses.asdict(cfg),
        "torch_version": torch.__version__,
    })
