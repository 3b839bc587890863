"""What a training run or a benchmark ran on: the CPU model and the instruction sets that decide
TensorFlow's and PyTorch's fast paths (both trainers record it in the model's metadata)."""

from __future__ import annotations

import os
import platform

# The flags that choose TensorFlow's and PyTorch's CPU kernels (oneDNN: AVX2/FMA, AVX-512, AMX).
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """"<model name>, N cores, flags: ..." (of FLAGS, those the CPU has; "none of ..." if none)."""
    model, flags = platform.processor() or platform.machine(), set()
    if os.path.exists(cpuinfo):
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    have = [flag for flag in FLAGS if flag in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(have) if have else 'none of ' + ' '.join(FLAGS)}"
