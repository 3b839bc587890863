"""KServe: a ServingRuntime for the project's MLServer image (serving/Dockerfile), and that image's
entry point.

KServe's stock MLServer runtime serves `modelFormat: mlflow` with MLServer's MLflow runtime, which
loads the pyfunc (`mlflow.pyfunc.load_model`: the stored pickle or Python runs) and verifies
nothing. This runtime's image holds the serving environment (serving/requirements.lock) and the
project's own `serving` and `trainers` code, runs as a non-root user, and starts MLServer through
serving/launch.py (the guard) with serving/runtime.py:MnistRuntime, which verifies the version's
signed manifest with the pusher's public key (a Kubernetes secret mounted as a file) before it
loads the export with the project's loader. The InferenceService names it with `--runtime`
(`python -m pipelines kserve --runtime mnist-mlserver-verified`), and its storageUri must be the
folder holding the version's `signed/` and `manifest.sig` (the run's artifact root).

    python -m serving.kserve_runtime render --image IMAGE [--name N] [--namespace NS] > runtime.yaml
    python -m serving.kserve_runtime serve --model-name NAME [--model-dir /mnt/models] ...   # in the image

MLServer is started on a settings folder of its own under /tmp, never on /mnt/models: MLServer
puts the folder it is started on first on sys.path and loads every model-settings.json under it,
so a version's files there could name their own runtime or shadow `trainers`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

SERVING_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = SERVING_DIR / "servingruntime.schema.json"
DEFAULT_NAME = "mnist-mlserver-verified"
MODEL_DIR = "/mnt/models"  # where KServe's storage initializer puts the storageUri's files
KEY_DIR = "/etc/mnist-model-signing"
DEFAULT_KEY_SECRET, DEFAULT_KEY_ITEM = "mnist-model-signing-public", "public.pem"
HTTP_PORT, GRPC_PORT, METRICS_PORT = 8080, 8081, 8082
USER_ID = 1000
_DNS_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class RenderError(ValueError):
    """The ServingRuntime is not one KServe would accept; the message lists why."""


def serving_runtime(image: str, *, name: str = DEFAULT_NAME, namespace: str = "",
                    key_secret: str = DEFAULT_KEY_SECRET, key_item: str = DEFAULT_KEY_ITEM,
                    max_body_mb: float = 8.0, deadline_s: float = 30.0, max_batch: int = 1024,
                    cpu: str = "1", memory: str = "2Gi", cpu_limit: str = "2",
                    memory_limit: str = "4Gi") -> dict[str, Any]:
    """The ServingRuntime object (a dict, as kubectl reads it from YAML)."""
    metadata: dict[str, Any] = {"name": name, "labels": {"app.kubernetes.io/part-of": "mnist-bakeoff"},
                                "annotations": {"mnist-bakeoff/verifies": "signed manifest (trainers/manifest.py)"}}
    if namespace:
        metadata["namespace"] = namespace
    container = {
        "name": "kserve-container",
        "image": image,
        "args": ["--model-name", "{{.Name}}", "--model-dir", MODEL_DIR,
                 "--public-key-file", f"{KEY_DIR}/{key_item}", "--http-port", str(HTTP_PORT),
                 "--grpc-port", str(GRPC_PORT), "--metrics-port", str(METRICS_PORT),
                 "--max-body-mb", f"{max_body_mb:g}", "--deadline-s", f"{deadline_s:g}", "--max-batch", str(max_batch)],
        "ports": [{"containerPort": HTTP_PORT, "name": "h1", "protocol": "TCP"}],
        "readinessProbe": {"httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT}, "periodSeconds": 5},
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": USER_ID, "allowPrivilegeEscalation": False,
                            "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "model-signing-key", "mountPath": KEY_DIR, "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    spec = {
        "supportedModelFormats": [{"name": "mlflow", "version": "2", "autoSelect": False}],
        "protocolVersions": ["v2"],
        "multiModel": False,
        "containers": [container],
        "volumes": [{"name": "model-signing-key", "secret": {"secretName": key_secret, "items": [
                        {"key": key_item, "path": key_item}]}},
                    {"name": "tmp", "emptyDir": {}}],
    }
    return {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "ServingRuntime", "metadata": metadata, "spec": spec}


def validate(runtime: dict[str, Any]) -> None:
    """Raises RenderError listing every way `runtime` breaks KServe's ServingRuntime schema
    (servingruntime.schema.json, from KServe's SDK: serving/kserve_schema.py) and what this image
    needs that the schema cannot say."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
                for e in jsonschema.Draft7Validator(schema).iter_errors(runtime)]
    name = runtime.get("metadata", {}).get("name", "")
    if not isinstance(name, str) or not _DNS_1123.match(name) or len(name) > 63:
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 label")
    containers = runtime.get("spec", {}).get("containers") or []
    if not isinstance(containers, list) or not any(isinstance(c, dict) and c.get("name") == "kserve-container"
                                                   for c in containers):
        problems.append("spec.containers: no container named kserve-container (KServe serves through it)")
    for container in containers if isinstance(containers, list) else []:
        security = container.get("securityContext", {}) if isinstance(container, dict) else {}
        if not isinstance(security, dict) or security.get("runAsNonRoot") is not True:
            problems.append(f"spec.containers.{container.get('name')}.securityContext.runAsNonRoot: must be true")
        args = container.get("args", []) if isinstance(container, dict) else []
        if isinstance(args, list) and "--public-key-file" not in args:
            problems.append(f"spec.containers.{container.get('name')}.args: no --public-key-file (nothing to verify "
                            "the version with)")
    if problems:
        raise RenderError("not a valid KServe ServingRuntime:\n  " + "\n  ".join(problems))


def to_yaml(runtime: dict[str, Any]) -> str:
    import yaml

    head = ("# The project's MLServer image as a KServe ServingRuntime (python -m serving.kserve_runtime render):\n"
            "# verifies each version's signed manifest before loading it; InferenceServices use it with\n"
            f"# `python -m pipelines kserve --runtime {runtime['metadata']['name']}`.\n")
    return head + yaml.safe_dump(runtime, sort_keys=False)


def write_kserve_settings(folder: str, model_name: str, model_dir: str, public_key_file: str, *, host: str,
                          http_port: int, grpc_port: int, metrics_port: int, max_body_bytes: int, max_batch: int,
                          workers: int) -> None:
    from serving.mlserver_config import write_settings

    write_settings(folder, model_name, "", model_dir, host=host, http_port=http_port, grpc_port=grpc_port,
                   metrics_port=metrics_port, max_body_bytes=max_body_bytes, max_batch=max_batch,
                   parallel_workers=workers, what=f"{model_name} ({model_dir})", public_key_file=public_key_file)


def serve(argv: list[str]) -> None:
    """In the image: MLServer's settings in a private folder under /tmp, then serving/launch.py
    (the guard) in place of this process, so that KServe's signals reach MLServer itself."""
    parser = argparse.ArgumentParser(prog="python -m serving.kserve_runtime serve")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--model-dir", default=MODEL_DIR)
    parser.add_argument("--public-key-file", required=True)
    parser.add_argument("--host", default="0.0.0.0")  # inside the pod; KServe routes to it
    for flag, default in (("--http-port", HTTP_PORT), ("--grpc-port", GRPC_PORT), ("--metrics-port", METRICS_PORT),
                          ("--max-batch", 1024), ("--workers", 1)):
        parser.add_argument(flag, type=int, default=default)
    parser.add_argument("--max-body-mb", type=float, default=8.0)
    parser.add_argument("--deadline-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="mnist-mlserver-")
    max_body_bytes = int(args.max_body_mb * 2**20)
    write_kserve_settings(folder, args.model_name, args.model_dir, args.public_key_file, host=args.host,
                          http_port=args.http_port, grpc_port=args.grpc_port, metrics_port=args.metrics_port,
                          max_body_bytes=max_body_bytes, max_batch=args.max_batch, workers=args.workers)
    os.chdir(folder)  # MLServer puts its working directory on sys.path too
    os.execv(sys.executable, [sys.executable, "-m", "serving.launch", folder, "--max-body-bytes", str(max_body_bytes),
                              "--deadline-s", str(args.deadline_s)])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return
    parser = argparse.ArgumentParser(prog="python -m serving.kserve_runtime", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("render", "serve"))
    parser.add_argument("--image", required=True, help="the image built from serving/Dockerfile")
    parser.add_argument("--name", default=DEFAULT_NAME)
    parser.add_argument("--namespace", default="")
    parser.add_argument("--key-secret", default=DEFAULT_KEY_SECRET, help="the secret holding the public key")
    args = parser.parse_args(argv)
    runtime = serving_runtime(args.image, name=args.name, namespace=args.namespace, key_secret=args.key_secret)
    try:
        validate(runtime)
    except RenderError as e:
        sys.exit(f"error: {e}")
    sys.stdout.write(to_yaml(runtime))


if __name__ == "__main__":
    main()
