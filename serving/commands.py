"""The `serve` and `kserve` commands (`python -m pipelines serve|kserve`, wired in pipelines/cli.py):
both take the registry (its URI and the registered model's name, as the pipeline's config
resolves them) plus their own options.

  serve   start MLServer for the registry's champion on 127.0.0.1 until Ctrl-C, once its signed
          files verify with the pusher's public key ($MNIST_MODEL_VERIFY_KEY_FILE or
          $MNIST_MODEL_VERIFY_KEY); a version that does not verify is refused with one line
  kserve  print (or write) a KServe InferenceService for the champion, validated offline
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TextIO

from components.kserve_deployer import inference_service as kserve
from serving import server as mlserver

WAKE_S = 0.5  # how often the wait for MLServer returns to Python, so a pending Ctrl-C is handled


def wait_interruptibly(process: subprocess.Popen, wake_s: float = WAKE_S) -> int:
    """`process.wait()` that a Ctrl-C always interrupts. A blocking waitpid is interrupted only when
    the kernel hands SIGINT to the main thread; handed to another thread (mlflow's and tqdm's start
    some), Python only flags it, and the main thread would sleep on until MLServer exits."""
    while True:
        try:
            return process.wait(timeout=wake_s)
        except subprocess.TimeoutExpired:
            continue


def serve(registry_uri: str, name: str, *, http_port: int = mlserver.DEFAULT_HTTP_PORT,
          grpc_port: int = mlserver.DEFAULT_GRPC_PORT, metrics_port: int = mlserver.DEFAULT_METRICS_PORT,
          max_body_mb: float = mlserver.DEFAULT_MAX_BODY_BYTES / 2**20, max_batch: int = mlserver.DEFAULT_MAX_BATCH,
          workers: int = 1, venv: str = "", public_key_file: str = "",
          deadline_s: float = mlserver.DEFAULT_DEADLINE_S, repository_token_file: str = "",
          out: TextIO = sys.stdout) -> int:
    """Serves `models:/<name>@champion` until Ctrl-C (exit status 0) or until MLServer exits (its
    status); 1 with one line on stderr when it cannot start (e.g. the version does not verify)."""
    mlserver.stop_on_signals()
    print(f"resolving models:/{name}@champion at {registry_uri} and starting MLServer "
          "(the first start creates the serving environment: serving/bootstrap.sh)", file=out, flush=True)
    try:
        public_key = Path(public_key_file).read_text(encoding="utf-8") if public_key_file else ""
        server = mlserver.start(registry_uri, name, http_port=http_port, grpc_port=grpc_port,
                                metrics_port=metrics_port, max_body_bytes=int(max_body_mb * 2**20),
                                max_batch=max_batch, parallel_workers=workers, venv=venv, public_key=public_key,
                                deadline_s=deadline_s, repository_token_file=repository_token_file)
    except KeyboardInterrupt:
        print("interrupted before the server was ready; stopped", file=out, flush=True)
        return 130
    except (mlserver.ServingError, OSError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    try:  # from here on, a Ctrl-C at any point (even during this banner) stops the server
        version = server.version.version
        print(f"serving {name} version {version} (models:/{name}@champion, its signed files verified) with MLServer, "
              f"the project's runtime, v2 protocol\n"
              f"  REST  {server.infer_url}\n"
              f"        {server.http_url}/v2/models/{name}/versions/{version}/infer\n"
              f"  gRPC  {server.grpc_address}  (inference.GRPCInferenceService/ModelInfer, model_name {name!r})\n"
              f"  metadata {server.http_url}/v2/models/{name}   metrics http://{server.host}:{server.metrics_port}/metrics\n"
              f"input: UINT8 [N, 28, 28] raw pixels; output: FP32 [N, K] probabilities over the model's classes "
              f"(their names: the answer's parameters.class_names). Ctrl-C stops it.",
              file=out, flush=True)
        status = wait_interruptibly(server.process)
        print(f"MLServer exited with status {status}", file=out, flush=True)
        return status or 1
    except KeyboardInterrupt:
        print("\nstopping MLServer ...", file=out, flush=True)
        status = server.stop()
        print(f"stopped (MLServer exit status {status})", file=out, flush=True)
        return 0
    finally:
        server.stop()


def render_inference_service(registry_uri: str, model_name: str, *,
                             artifacts_destination: str = kserve.DEFAULT_ARTIFACTS_DESTINATION,
                             service_account: str = kserve.DEFAULT_SERVICE_ACCOUNT, name: str = "",
                             namespace: str = "", canary_traffic_percent: int | None = None, cpu: str = "1",
                             memory: str = "2Gi", cpu_limit: str = "2", memory_limit: str = "4Gi", runtime: str = "",
                             output: str = "", out: TextIO = sys.stdout) -> int:
    """Prints the champion's InferenceService as YAML (or writes it to `output`); 1 with the reason if invalid."""
    try:
        version, isvc = kserve.render(
            registry_uri, model_name, artifacts_destination=artifacts_destination,
            service_account=service_account, name=name, namespace=namespace,
            canary_traffic_percent=canary_traffic_percent, cpu=cpu, memory=memory, cpu_limit=cpu_limit,
            memory_limit=memory_limit, runtime=runtime)
    except kserve.RenderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = kserve.to_yaml(isvc, version, registry_uri)
    if output:
        with open(output, "w") as f:
            f.write(text)
        storage = isvc["spec"]["predictor"]["model"]["storageUri"]
        print(f"{output}: InferenceService {isvc['metadata']['name']} for {version.name} version {version.version} "
              f"({storage}); kubectl apply -f {output}", file=out)
    else:
        out.write(text)
    return 0
