"""MLServer's two settings files for one signed version served by serving/runtime.py (used by
serving/server.py here and by serving/kserve_runtime.py in the KServe image; imports nothing of
MLServer, MLflow or the pipeline)."""

from __future__ import annotations

import json
from pathlib import Path

RUNTIME = "serving.runtime.MnistRuntime"


def write_settings(folder: str, model_name: str, version: str, signed_dir: str, *, host: str, http_port: int,
                   grpc_port: int, metrics_port: int, max_body_bytes: int, max_batch: int,
                   parallel_workers: int, what: str, public_pem: str = "", public_key_file: str = "",
                   adaptive_batch_size: int = 0,
                   adaptive_batch_time_s: float = 0.0) -> None:
    """MLServer's settings.json (the server) and <model>/model-settings.json (the model) in `folder`.

    The pusher's public key goes in as PEM text (`public_pem`) or as the path of a file holding it
    (`public_key_file`, e.g. a mounted secret). adaptive_batch_size > 1: MLServer's adaptive
    batching (requests merged up to that many, waiting at most adaptive_batch_time_s)."""
    settings = {
        "debug": False, "host": host, "http_port": http_port, "grpc_port": grpc_port,
        "metrics_port": metrics_port, "parallel_workers": parallel_workers,
        "grpc_max_message_length": max_body_bytes, "load_models_at_startup": True,
        "parallel_workers_timeout": 3,  # seconds for the workers to stop at SIGTERM
    }
    key = {"public_key": public_pem} if public_pem else {"public_key_file": public_key_file}
    model_settings = {
        "name": model_name, "implementation": RUNTIME,
        "parameters": {"uri": signed_dir, **({"version": version} if version else {}),
                       "extra": {"max_batch": max_batch, "what": what, **key}},
        "inputs": [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}],
    }
    if adaptive_batch_size > 1:
        model_settings.update(max_batch_size=adaptive_batch_size, max_batch_time=adaptive_batch_time_s)
    Path(folder, "settings.json").write_text(json.dumps(settings, indent=2))
    Path(folder, model_name).mkdir(exist_ok=True)
    Path(folder, model_name, "model-settings.json").write_text(json.dumps(model_settings, indent=2))
