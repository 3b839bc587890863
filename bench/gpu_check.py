"""GPU check of the PyTorch trainer's model: one short script that needs PyTorch and numpy only
(the lent GPU machines have no TensorFlow), on MNIST arrays read straight from the IDX files.

PYTHONPATH=. python -m bench.gpu_check [--mnist DIR] [--model bn_cnn|seed_cnn] [--epochs 2]
    [--batch-size 128] [--mixed-precision] [--channels-last] [--compile] [--workers N [--backend nccl|gloo]]

The same model, training step, evaluation and one-cycle schedule as the pipeline's PyTorch
trainer (trainers/torch_model.py, trainers/config.py); only the input differs (in-memory arrays
on the GPU instead of the shared tf.data input). Asks for CUDA and fails loudly without it.
Prints one JSON line: device, driver, CUDA, images/s (over all epochs, and of the last epoch,
which leaves out cuDNN's autotuning and compilation), test accuracy.

--workers N: N data-parallel worker processes of the same training, started here with the
environment torchrun and PyTorchJob give (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, LOCAL_RANK),
joined as the trainer joins them (trainers/torch_model.joined, DistributedDataParallel): each
trains on its own shard of the training images at its part of the global batch; rank 0 prints.
NCCL takes one GPU per worker; `--backend gloo` lets several workers share one GPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import torch

from trainers import distributed
from trainers.config import TrainConfig, learning_rate_at
from trainers.torch_model import (
    TensorBatches,
    build_model,
    count_parameters,
    data_parallel,
    ddp_step_ms,
    evaluate,
    joined,
    train_epoch,
)

FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
         "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def read_idx(folder: str, name: str) -> np.ndarray:
    """An IDX file (`name` or `name.gz` in `folder`) as a uint8 array."""
    path = os.path.join(folder, name)
    opener = gzip.open if not os.path.exists(path) else open
    with opener(path if opener is open else path + ".gz", "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(f">{dims}I", data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def driver_version() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip()
    except OSError:
        return "unknown"


def tensorflow_sees_gpu() -> str:
    """The lent GPU machines have no TensorFlow; say so rather than leave the field out."""
    try:
        import tensorflow as tf
    except ImportError:
        return "not installed"
    return f"{tf.__version__}: {len(tf.config.list_physical_devices('GPU'))} GPU(s) visible"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def launch_workers(count: int) -> int:
    """This script again as `count` worker processes with a torchrun-like environment; the first
    failure's exit status, else 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    workers = [subprocess.Popen([sys.executable, "-m", "bench.gpu_check", *sys.argv[1:]], env={
        **os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(count),
        "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(count)}) for rank in range(count)]
    while any(worker.poll() is None for worker in workers):
        failed = next((worker.returncode for worker in workers if worker.returncode), 0)
        if failed:  # the others would wait in a collective for the one that is gone
            for worker in workers:
                if worker.poll() is None:
                    worker.terminate()
            for worker in workers:
                worker.wait()
            return failed
        time.sleep(0.5)
    return next((worker.returncode for worker in workers if worker.returncode), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", default=os.path.join("..", "shared", "data", "mnist"))
    parser.add_argument("--model", default="bn_cnn")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute (autocast)")
    parser.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--workers", type=int, default=1, help="data-parallel worker processes")
    parser.add_argument("--backend", choices=("nccl", "gloo"), default="nccl", help="between the workers")
    parser.add_argument("--cpu", action="store_true", help="a dry run of this script on a machine without a GPU")
    args = parser.parse_args()
    world = distributed.torch_world()
    if args.workers > 1 and world.size == 1:
        raise SystemExit(launch_workers(args.workers))
    if not (torch.cuda.is_available() or args.cpu):
        raise SystemExit("no CUDA device: this check measures the GPU, not the CPU")
    cfg = TrainConfig(model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                      mixed_precision=args.mixed_precision, accelerator="cpu" if args.cpu else "gpu")
    torch.manual_seed(cfg.seed)
    arrays = {key: torch.from_numpy(read_idx(args.mnist, name).copy()) for key, name in FILES.items()}
    with joined(world, torch.device("cpu" if args.cpu else "cuda"), args.backend) as device:
        shard = slice(world.rank, None, world.size)  # this worker's share of the training images
        train_x, train_y = arrays["train_images"][shard].to(device), arrays["train_labels"][shard].long().to(device)
        test_x, test_y = arrays["test_images"].to(device), arrays["test_labels"].long().to(device)
        batch_size = distributed.per_worker_batch(cfg.batch_size, world)

        model = build_model(cfg.model).to(device)
        if args.channels_last:
            model = model.to(memory_format=torch.channels_last)
        trained = data_parallel(torch.compile(model) if args.compile else model, world, device)
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate)
        total = -(-len(train_y) // batch_size) * cfg.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_at(
            step, total, cfg.learning_rate, cfg.lr_schedule) / cfg.learning_rate)
        train_data = TensorBatches(train_x, train_y, batch_size, shuffle=True, seed=cfg.seed + world.rank)
        epoch_seconds = []
        for _ in range(cfg.epochs):
            synchronize(device)
            started = time.perf_counter()
            train_epoch(trained, train_data, optimizer, scheduler,
                        cfg.mixed_precision)
            synchronize(device)
            epoch_seconds.append(time.perf_counter() - started)
        step_ms = ddp_step_ms(trained)
    if not world.is_chief:
        return
    seconds, images = sum(epoch_seconds), len(arrays["train_labels"])  # every worker's images together
    _, accuracy = evaluate(model, TensorBatches(test_x, test_y, 1000), cfg.mixed_precision)
    print(json.dumps({
        "framework": "pytorch", "device": "cpu" if args.cpu else torch.cuda.get_device_name(0),
        "driver": driver_version(),
        "torch": torch.__version__, "cuda": torch.version.cuda, "model": cfg.model,
        "parameters": count_parameters(model), "mixed_precision": cfg.mixed_precision,
        "channels_last": args.channels_last, "compile": args.compile,
        "workers": world.size, "backend": args.backend if world.size > 1 else None, "ddp_step_ms": step_ms,
        "batch_size": cfg.batch_size, "epochs": cfg.epochs, "train_seconds": round(seconds, 2),
        "images_per_second": round(cfg.epochs * images / seconds),
        "last_epoch_images_per_second": round(images / epoch_seconds[-1]),
        "test_accuracy": round(accuracy, 4), "tensorflow": tensorflow_sees_gpu(),
    }), flush=True)


if __name__ == "__main__":
    main()
