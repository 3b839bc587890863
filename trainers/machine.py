"""What a training run or a benchmark ran on: the CPU model and the instruction sets that decide
TensorFlow's and PyTorch's fast paths (both trainers record it in the model's metadata), the
numeric choice that follows from them (bfloat16 where the CPU computes it natively), and the
runtime settings that TensorFlow and PyTorch read from the environment when they load."""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

from trainers.config import CPU_BFLOAT16

# The flags that choose TensorFlow's and PyTorch's CPU kernels (oneDNN: AVX2/FMA, AVX-512, AMX).
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
# bfloat16 dot products in hardware: oneDNN's bf16 convolutions and matmuls run on these, and
# emulate bf16 (slower than float32) on every other CPU.
NATIVE_BFLOAT16 = ("amx_bf16", "avx512_bf16")


def _cpuinfo(cpuinfo: str) -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    if os.path.exists(cpuinfo):
        with open(cpuinfo, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    return model, flags


def cpu_description(cpuinfo: str = "/proc/cpuinfo") -> str:
    """"<model name>, N cores, flags: ..." (of FLAGS, those the CPU has; "none of ..." if none)."""
    model, flags = _cpuinfo(cpuinfo)
    have = [flag for flag in FLAGS if flag in flags]
    return f"{model}, {os.cpu_count()} cores, flags: {' '.join(have) if have else 'none of ' + ' '.join(FLAGS)}"


def native_bfloat16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 dot products in hardware (AMX or AVX-512 BF16)."""
    return any(flag in _cpuinfo(cpuinfo)[1] for flag in NATIVE_BFLOAT16)


def cpu_precision(cpu_bfloat16: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """What a trainer computes in on this CPU: "bfloat16" (mixed: float32 weights) or "float32".
    `cpu_bfloat16` is the train section's setting: "on", "off", or "auto" (bfloat16 where the CPU
    has it in hardware). One rule for both trainers, their tuning trials and the local cache key."""
    if cpu_bfloat16 not in CPU_BFLOAT16:
        raise ValueError(f"cpu_bfloat16 {cpu_bfloat16!r} is not one of {CPU_BFLOAT16}")
    native = cpu_bfloat16 == "auto" and native_bfloat16(cpuinfo)
    return "bfloat16" if cpu_bfloat16 == "on" or native else "float32"


def runtime_defaults(machine: str | None = None) -> dict[str, str]:
    """The environment variables TensorFlow and PyTorch read once, when they load: the processes'
    entry points (python -m pipelines, the image, the benches) set them before anything imports
    either (with_runtime_defaults: a user's own setting wins).

    - OMP_WAIT_POLICY=PASSIVE: PyTorch's OpenMP threads spin while they wait for each other
      (libgomp's default policy): with another busy process on the machine one of them is
      descheduled and the others spin through its time slice (the PyTorch trainer 2.35x slower
      beside one busy process on 2 cores; 1.24x waiting passively, bench/README.md). TensorFlow's
      own thread pools do not read it.
    - TF_ENABLE_ONEDNN_OPTS=1 (x86-64): TensorFlow's oneDNN kernels. TensorFlow turns them on by
      itself only on CPUs with AVX-512 VNNI or BF16, AVX-VNNI or AMX (tensorflow/core/util/port.cc,
      DefaultOneDnnPolicy); on an AVX2 CPU without them its own kernels trained the Keras models
      1.6-1.9x slower (bench/README.md). On the CPUs TensorFlow already enables them for, this
      changes nothing; elsewhere (ARM) TensorFlow's own choice stands.
    """
    defaults = {"OMP_WAIT_POLICY": "PASSIVE"}
    if (machine or platform.machine()).lower() in ("x86_64", "amd64"):
        defaults["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return defaults


def with_runtime_defaults(environ: Mapping[str, str]) -> dict[str, str]:
    """`environ` with runtime_defaults() for each variable it does not set."""
    return {**runtime_defaults(), **environ}


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
KEPT_ALLOCATION_BYTES, KEPT_FREE_BYTES = 64 << 20, 256 << 20


def keep_freed_memory() -> bool:
    """Makes glibc's malloc keep the memory a process frees for its next allocations, for the rest
    of the process: blocks up to KEPT_ALLOCATION_BYTES from the heap, not each its own mmap, and up
    to KEPT_FREE_BYTES of free heap kept instead of handed back to the OS. PyTorch's CPU tensors
    come straight from malloc: by default each training step's 11 MB feature maps were fresh pages,
    4,000-5,000 page faults a step (the seed model, batch 128), 5-8 % of the PyTorch trainer's time
    (bench/README.md). TensorFlow keeps its own pools. False where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, KEPT_ALLOCATION_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES))
