"""How fast each model answers, as a server would see it: latency at batch 1 and throughput at
batch 256, on the same sample for every model, after a warm-up."""

from __future__ import annotations

import time

import numpy as np


def latency_and_throughput(predict, images: np.ndarray, single_calls: int = 100,
                           batch: int = 256, batches: int = 8) -> dict[str, float]:
    """Latency at batch 1 (p50/p95, ms) and throughput at batch 256 (examples/s), after warm-up."""
    for _ in range(5):
        predict(images[:1])
        predict(images[:batch])
    times = []
    for i in range(single_calls):
        start = time.perf_counter()
        predict(images[i % len(images):i % len(images) + 1])
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(batches):
        predict(images[(i * batch) % max(1, len(images) - batch):][:batch])
    elapsed = time.perf_counter() - start
    return {"latency_ms_p50": float(np.percentile(times, 50) * 1000),
            "latency_ms_p95": float(np.percentile(times, 95) * 1000),
            "throughput_per_s": float(batches * min(batch, len(images)) / elapsed)}
