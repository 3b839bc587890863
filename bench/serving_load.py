"""Bounded load on the served champion: MLServer (serving/server.py) on 127.0.0.1, an asyncio client.

For each batch size and concurrency, `concurrency` clients send v2 requests of real MNIST test
digits back to back for a fixed duration (and at most --max-requests each run), then stop by
themselves; it reports p50/p99 latency, requests/s, images/s and the error rate, and the server's
memory (RSS of MLServer and its inference workers) before the first run, after each and at the
end. Traffic goes to 127.0.0.1 only.

    MNIST_MODEL_VERIFY_KEY_FILE=public.pem PYTHONPATH=. $(infra/bootstrap.sh)/bin/python -m bench.serving_load \
        --registry-uri sqlite:////path/to/runs/registry/mlflow.db [--duration 20] [--json out.json] \
        [--adaptive-batch-size 32 --adaptive-batch-time 0.005]   # MLServer's adaptive batching
    # or --url http://127.0.0.1:8080/v2/models/mnist-digits/infer --server-pid PID for a running server

The client runs on the same machine as the server (on the 2-core VM they share both cores).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "mnist" / "t10k-images-idx3-ubyte.gz"


def load_images(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    count = int.from_bytes(data[4:8], "big")
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, 28, 28)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of `pid` and all its descendants, in MB."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0
    for p in processes:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 1e6


async def run_load(url: str, bodies: list[bytes], concurrency: int, duration_s: float,
                   max_requests: int) -> dict:
    import aiohttp

    latencies: list[float] = []
    errors: dict[str, int] = {}
    sent = 0
    deadline = time.perf_counter() + duration_s
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker(index: int) -> None:
            nonlocal sent
            i = index
            while time.perf_counter() < deadline and sent < max_requests:
                sent += 1
                body = bodies[i % len(bodies)]
                i += concurrency
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    status = type(e).__name__
                if status == 200:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = time.perf_counter() - began
    done = len(latencies) + sum(errors.values())
    ms = np.array(latencies) * 1000
    return {"requests": done, "ok": len(latencies), "errors": errors, "seconds": round(elapsed, 2),
            "error_rate": (sum(errors.values()) / done) if done else float("nan"),
            "requests_per_s": len(latencies) / elapsed,
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else float("nan"),
            "p99_ms": float(np.percentile(ms, 99)) if len(ms) else float("nan")}


def bodies_for(images: np.ndarray, batch: int, count: int = 32) -> list[bytes]:
    from serving.client import v2_request

    rng = np.random.default_rng(0)
    starts = rng.integers(0, len(images) - batch, size=count)
    return [json.dumps(v2_request(images[s:s + batch])).encode() for s in starts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--registry-uri", default="", help="serve this registry's champion (started and stopped here)")
    parser.add_argument("--model-name", default="mnist-digits")
    parser.add_argument("--url", default="", help="or load an already running server's v2 infer URL")
    parser.add_argument("--server-pid", type=int, default=0, help="with --url: the server's pid, for its memory")
    parser.add_argument("--images", default=str(DEFAULT_IMAGES), help="IDX images (MNIST test file)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per (batch, concurrency) run")
    parser.add_argument("--max-requests", type=int, default=100_000, help="cap per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=1, help="run the whole matrix this many times (memory soak)")
    parser.add_argument("--workers", type=int, default=1, help="MLServer parallel_workers when started here")
    parser.add_argument("--adaptive-batch-size", type=int, default=0,
                        help="when started here: MLServer's adaptive batching, merging up to this many requests")
    parser.add_argument("--adaptive-batch-time", type=float, default=0.005,
                        help="with --adaptive-batch-size: the longest a request waits for others, in seconds")
    parser.add_argument("--json", default="", help="write the results here too")
    args = parser.parse_args()

    images = load_images(Path(args.images))
    server = None
    if args.registry_uri:
        from serving import server as mlserver

        server = mlserver.start(args.registry_uri, args.model_name, http_port=0, grpc_port=0, metrics_port=0,
                                parallel_workers=args.workers, log_path=os.devnull,
                                adaptive_batch_size=args.adaptive_batch_size,
                                adaptive_batch_time_s=args.adaptive_batch_time)
        url, pid = server.infer_url, server.process.pid
        print(f"MLServer serving {args.model_name} version {server.version.version} at {url}", flush=True)
    elif args.url:
        url, pid = args.url, args.server_pid
    else:
        parser.error("give --registry-uri (start a server here) or --url")
    batching = {"max_batch_size": args.adaptive_batch_size, "max_batch_time_s": args.adaptive_batch_time}
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "duration_s": args.duration,
               "adaptive_batching": batching if args.adaptive_batch_size else None, "memory_mb": {}, "runs": []}
    try:
        warm = bodies_for(images, 1, 4)
        asyncio.run(run_load(url, warm, 1, 3.0, 50))  # first calls build TensorFlow/PyTorch's kernels
        if pid:
            results["memory_mb"]["start"] = round(tree_rss_mb(pid), 1)
        bodies = {batch: bodies_for(images, batch) for batch in args.batch}
        for round_ in range(1, args.rounds + 1):
            for batch in args.batch:
                for concurrency in args.concurrency:
                    run = asyncio.run(run_load(url, bodies[batch], concurrency, args.duration, args.max_requests))
                    run.update(round=round_, batch=batch, concurrency=concurrency,
                               images_per_s=run["requests_per_s"] * batch)
                    if pid:
                        run["server_rss_mb"] = round(tree_rss_mb(pid), 1)
                    results["runs"].append(run)
                    print(json.dumps(run), flush=True)
            if pid:
                results["memory_mb"][f"after round {round_}"] = round(tree_rss_mb(pid), 1)
        if pid:
            results["memory_mb"]["end"] = round(tree_rss_mb(pid), 1)
    finally:
        if server is not None:
            server.stop()
    print("\n| round | batch | concurrency | requests | p50 ms | p99 ms | requests/s | images/s | errors | "
          "server RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results["runs"]:
        print(f"| {r['round']} | {r['batch']} | {r['concurrency']} | {r['requests']} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | "
              f"{r['requests_per_s']:.1f} | {r['images_per_s']:.0f} | {r['error_rate']:.1%} | "
              f"{r.get('server_rss_mb', float('nan')):.0f} |")
    print(f"server memory (MLServer + workers, RSS): {results['memory_mb']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
