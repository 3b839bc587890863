"""The PyTorch challenger's model, its batches and its training and evaluation steps, with no
TensorFlow: the Trainer's run_fn (torch_trainer.py) feeds them the split as the shared tf.data
parsing decodes it, and bench/gpu_check.py MNIST arrays read straight from the IDX files on a GPU
machine that has PyTorch only."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from trainers import distributed
from trainers.config import scaled
from trainers.model_format import NUM_CLASSES, PIXEL_MEAN, PIXEL_STD


class Normalize(nn.Module):
    """uint8 [N, 28, 28] -> normalized float [N, 1, 28, 28]: x * scale + offset, Keras' Rescaling layer
    in the Keras model. One multiply (uint8 times a float: float32) and one in-place add, two passes
    over the batch instead of four (convert, divide, subtract, divide): 6 % of the seed model's
    training steps per second on the 2-core CPU (bench/README.md)."""

    SCALE, OFFSET = 1.0 / (255.0 * PIXEL_STD), -PIXEL_MEAN / PIXEL_STD

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.mul(x.unsqueeze(1), self.SCALE).add_(self.OFFSET)


class MapLinear(nn.Linear):
    """nn.Flatten() then nn.Linear, over a feature map [B, C, H, W]: the weight's columns are the map's
    features in (C, H, W) order, whatever the map's memory layout. A channels-last map (the CPU's,
    see `placed`) is read in place as (H, W, C) rows against the weight's columns in that order;
    flattening it in (C, H, W) order copied it, and ReLU's backward then met two layouts: 10-15 %
    of a seed-model training step on the 2-core CPU (bench/README.md). The module sits where Linear
    was, after an Identity where Flatten was: an export's state dict keeps its keys and meaning."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return super().forward(x.flatten(1))
        count, channels, height, width = x.shape
        weight = self.weight.view(self.out_features, channels, height, width).permute(0, 2, 3, 1)
        return nn.functional.linear(x.permute(0, 2, 3, 1).reshape(count, -1),
                                    weight.reshape(self.out_features, -1), self.bias)


def build_model(name: str, num_classes: int = NUM_CLASSES, width: float = 1.0) -> nn.Module:
    """Logits model with `num_classes` outputs. Same layers and trainable parameter count as
    keras_trainer.build_model at the same `width` (channels and units scaled by config.scaled; 1:
    the architecture as described); its state_dict's keys and shapes are what an export must hold."""
    if name == "seed_cnn":
        conv = scaled(32, width)
        # The seed's SimpleCNN, with the article's shape bug fixed: 28 -> conv 26 -> pool 13. Pooling
        # before the ReLU is the same function (both are monotone: max then clamp = clamp then max)
        # with a quarter of the elements for the ReLU and its gradient: 1.8x the training steps per
        # second on the CPU with channels-last (bench/README.md). Same parameters and state_dict keys.
        return nn.Sequential(
            Normalize(),
            nn.Conv2d(1, conv, 3), nn.MaxPool2d(2), nn.ReLU(),
            nn.Identity(), MapLinear(conv * 13 * 13, num_classes),  # Flatten + Linear, see MapLinear
        )
    if name == "bn_cnn":
        first, second, dense = scaled(24, width), scaled(48, width), scaled(128, width)
        return nn.Sequential(
            Normalize(),
            # Conv -> MaxPool -> BatchNorm -> ReLU, as in Keras (see keras_trainer._conv_block).
            nn.Conv2d(1, first, 3, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(first), nn.ReLU(),
            nn.Conv2d(first, second, 3, bias=False), nn.MaxPool2d(2), nn.BatchNorm2d(second), nn.ReLU(),
            nn.Identity(), nn.Dropout(0.25), MapLinear(second * 5 * 5, dense), nn.ReLU(),
            nn.Dropout(0.25), nn.Linear(dense, num_classes),
        )
    raise ValueError(f"unknown model {name!r}")


class Probabilities(nn.Module):
    """The served form: softmax over the logits model."""

    def __init__(self, logits_model: nn.Module) -> None:
        super().__init__()
        self.model = logits_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.model(x), dim=1)


# --- data ----------------------------------------------------------------------------------
def shift_images(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Moves each image of the uint8 batch [B, 28, 28] by its own random whole-pixel offset in
    [-max_shift, max_shift] along each axis, filling with background (0): common.shift_images'
    augmentation (the Keras trainer's, in tf.data), drawn from `generator`."""
    count, height, width = images.shape
    padded = nn.functional.pad(images, (max_shift, max_shift, max_shift, max_shift))
    offsets = torch.randint(0, 2 * max_shift + 1, (2, count), generator=generator, device=images.device)
    rows = offsets[0][:, None] + torch.arange(height, device=images.device)[None, :]
    cols = offsets[1][:, None] + torch.arange(width, device=images.device)[None, :]
    return padded[torch.arange(count, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]]


class TensorBatches:
    """(uint8 images [B, 28, 28], int64 labels [B]) batches of a split held as two tensors (decoded
    once): each pass a new seeded order (shuffle) and new shifts (shift > 0). `steps` batches a
    pass (default: every image, the last batch partial); fewer leave the last images of the order
    out (data-parallel workers all take the same number, common.shard_batches)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, shift: int = 0, steps: int | None = None) -> None:
        if len(images) != len(labels) or not len(labels):
            raise ValueError(f"{len(images)} images and {len(labels)} labels: expected the same positive count")
        self.images, self.labels, self.batch_size = images, labels, batch_size
        self.shuffle, self.shift = shuffle, shift
        self.steps = -(-len(labels) // batch_size) if steps is None else steps
        self.generator = torch.Generator(device=images.device).manual_seed(seed)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = (torch.randperm(len(self.labels), generator=self.generator, device=self.images.device)
                 if self.shuffle else torch.arange(len(self.labels), device=self.images.device))
        for step in range(self.steps):
            index = order[step * self.batch_size:(step + 1) * self.batch_size]
            images = self.images[index]
            yield (shift_images(images, self.shift, self.generator) if self.shift else images), self.labels[index]


def placed(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on `device`; on a CPU in channels-last memory format, where oneDNN's convolutions
    run NHWC: measured 1.4x (bn_cnn, batch 128) and 1.2x (seed_cnn, batch 32) the training steps
    per second on the 2-core CPU (bench/README.md). On an H200 it lost 10-20 %, so GPUs keep NCHW."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cpu" else model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# --- data-parallel workers -----------------------------------------------------------------
@contextlib.contextmanager
def joined(world: distributed.World, device: torch.device, backend: str | None = None) -> Iterator[torch.device]:
    """This worker's device, inside the world of its data-parallel workers: torch.distributed's
    env:// rendezvous (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK), NCCL between GPUs, gloo between
    CPUs; the process group is destroyed when the block ends, failed or not. A world of one joins
    nothing. `backend="gloo"` on GPUs lets workers share a GPU (NCCL takes one GPU per worker)."""
    if world.size == 1:
        yield device
        return
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        gpus = torch.cuda.device_count()
        if backend == "nccl" and world.local_size > gpus:  # every worker fails, none waits for the others
            raise RuntimeError(f"{world.local_size} workers on this machine but {gpus} GPU(s): NCCL needs a GPU "
                               "per worker; start one worker per GPU")
        device = torch.device("cuda", world.local_rank % gpus)  # one GPU per worker on a multi-GPU machine
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise RuntimeError(f"data-parallel training runs on CPUs or CUDA GPUs, not on {device.type}")
    torch.distributed.init_process_group(backend=backend)
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


# --- train and evaluate --------------------------------------------------------------------
def autocast(device: torch.device, enabled: bool):
    """bfloat16 compute where the hardware has it (CUDA, XLA); float32 weights, no loss scaling."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def epoch_means(losses: list[torch.Tensor], hits: list[torch.Tensor], seen: int,
                across_workers: bool = False) -> tuple[float, float]:
    """Mean loss and accuracy from per-batch sums kept on the device: one host sync per epoch,
    not one per batch (a `.item()` per batch stalls a GPU). across_workers: the sums of every
    data-parallel worker (each saw its own shard), so every worker reports the global means."""
    if not across_workers:
        return torch.stack(losses).sum().item() / seen, torch.stack(hits).sum().item() / seen
    totals = torch.stack([torch.stack(losses).sum().double(), torch.stack(hits).sum().double(),
                          torch.tensor(float(seen), dtype=torch.float64, device=losses[0].device)])
    torch.distributed.all_reduce(totals)
    loss_sum, hit_sum, total_seen = totals.tolist()
    return loss_sum / total_seen, hit_sum / total_seen


# --- train loop ----------------------------------------------------------------------------
def train_epoch(model: nn.Module, data, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, mixed: bool,
                on_batch: Callable[[int], None] | None = None) -> tuple[float, float]:
    """One pass over `data`; `on_batch(batches done)` after each batch (progress, no host sync).
    Under DistributedDataParallel the returned means are over every worker's batches."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    losses, hits, seen = [], [], 0
    for batch, (images, labels) in enumerate(data, start=1):
        optimizer.zero_grad(set_to_none=True)
        with autocast(images.device, mixed):
            logits = model(images)
            loss = loss_fn(logits.float(), labels)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach() * len(labels))
        hits.append((logits.argmax(1) == labels).sum())
        seen += len(labels)
        if on_batch is not None:
            on_batch(batch)
    return epoch_means(losses, hits, seen, across_workers=isinstance(model, nn.parallel.DistributedDataParallel))


@torch.inference_mode()
def evaluate(model: nn.Module, data, mixed: bool = False) -> tuple[float, float]:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    losses, hits, seen = [], [], 0
    for images, labels in data:
        with autocast(images.device, mixed):
            logits = model(images).float()
        losses.append(loss_fn(logits, labels))
        hits.append((logits.argmax(1) == labels).sum())
        seen += len(labels)
    return epoch_means(losses, hits, seen)
