"""GPU check (under a minute of work): both trainers, one epoch on CUDA, throughput and device.

PYTHONPATH=. python bench/gpu_check.py [--mnist DIR] [--model bn_cnn|seed_cnn] [--batch-size 128] [--mixed-precision]

Kept ready for when a GPU machine is lent; asks for accelerator=gpu, so it fails loudly (rather
than measuring the CPU) where TensorFlow or PyTorch sees no GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mnist", default=os.path.join(REPO, "..", "shared", "data", "mnist"))
    parser.add_argument("--model", default="bn_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--mixed-precision", action="store_true", help="bfloat16 compute (both trainers)")
    args = parser.parse_args()

    from tfx.components.trainer.fn_args_utils import FnArgs

    from bench.trainers import ingest
    from trainers import keras_trainer, torch_trainer
    from trainers.spec import read_model_meta

    work = tempfile.mkdtemp(prefix="gpu-check-")
    _, examples = ingest(args.mnist, work)
    for name, run_fn in (("keras", keras_trainer.run_fn), ("pytorch", torch_trainer.run_fn)):
        out = os.path.join(work, name)
        fn_args = FnArgs(train_files=[os.path.join(examples, "Split-train", "*")],
                         eval_files=[os.path.join(examples, "Split-eval", "*")],
                         serving_model_dir=os.path.join(out, "serving"), model_run_dir=os.path.join(out, "run"),
                         custom_config={"model": args.model, "epochs": 1, "batch_size": args.batch_size,
                                        "accelerator": "gpu", "mixed_precision": args.mixed_precision})
        run_fn(fn_args)
        meta = read_model_meta(fn_args.serving_model_dir)
        with open(os.path.join(examples, "split_counts.json")) as f:
            n_train = json.load(f)["train"]
        print(f"{name}: device {meta['device']}, mixed precision {meta['mixed_precision']}, "
              f"1 epoch in {meta['train_seconds']:.1f} s, "
              f"{n_train / meta['train_seconds']:.0f} examples/s (batch {args.batch_size})", flush=True)


if __name__ == "__main__":
    main()
