"""S3-compatible object stores (AWS S3, MinIO, SeaweedFS) as the pipeline's artifact store.

Everything that reads or writes artifacts goes through one of three clients, each with its own
S3 support: TFX, the trainers and the evaluator through `tf.io.gfile` (S3 comes from
tensorflow-io's filesystem plugins, registered when `tensorflow_io` is imported), Beam through
its AWS extra (boto3), MLflow through boto3. The endpoint and keys come from the standard AWS
variables, as a Kubernetes secret or the shell sets them, never from the package:

  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (default us-east-1), and for a store that
  is not AWS, AWS_ENDPOINT_URL (e.g. http://minio-service.kubeflow:9000).

`s3_environment` derives the variables tensorflow-io and MLflow read from those. KFP writes an
on-prem pipeline root as `minio://bucket/...`, a scheme none of the three clients knows: it is
the same bucket on the S3 endpoint, so `to_s3` maps it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

S3 = "s3://"
KFP_MINIO = "minio://"
OBJECT_STORE_SCHEMES = (S3, KFP_MINIO)
DEFAULT_REGION = "us-east-1"
# What a task needs to reach the store: a Kubernetes secret's keys, or the shell's.
CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL",
                        "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def is_object_store(uri: str) -> bool:
    return uri.startswith(OBJECT_STORE_SCHEMES)


def to_s3(uri: str) -> str:
    return S3 + uri[len(KFP_MINIO):] if uri.startswith(KFP_MINIO) else uri


def credentials(environ: Mapping[str, str]) -> dict[str, str]:
    return {name: environ[name] for name in CREDENTIAL_VARIABLES if environ.get(name)}


def s3_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables tensorflow-io's S3 filesystem and MLflow's S3 client read, derived from the
    standard AWS ones (those already set win)."""
    derived = {"AWS_REGION": environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
               # tensorflow-io's multi-part download reads past the end of an object and hands the
               # store's 416 InvalidRange error body back as file content (corrupt SavedModel
               # checkpoints: "truncated block read"); single-stream reads are correct.
               "S3_DISABLE_MULTI_PART_DOWNLOAD": "1"}
    endpoint = environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint)
        derived.update({
            "S3_ENDPOINT": endpoint,
            "S3_USE_HTTPS": "1" if parsed.scheme == "https" else "0",
            "MLFLOW_S3_ENDPOINT_URL": endpoint,
        })
    return {key: value for key, value in derived.items() if not environ.get(key)}


def enable_s3(environ: dict[str, str]) -> None:
    """Makes s3:// paths work in this process: the derived variables set in `environ` (the
    process's environment, passed in by the entry point), and tensorflow-io's filesystems
    registered with TensorFlow."""
    environ.update(s3_environment(environ))
    import tensorflow_io  # noqa: F401  (importing it registers s3:// with tf.io.gfile)


def uris_to_s3(invocation: Any) -> Any:
    """Every `minio://` string in a KFP executor-input document, as `s3://`."""
    if isinstance(invocation, dict):
        return {key: uris_to_s3(value) for key, value in invocation.items()}
    if isinstance(invocation, list):
        return [uris_to_s3(value) for value in invocation]
    return to_s3(invocation) if isinstance(invocation, str) else invocation


def executor_input_to_s3(serialized: str) -> str:
    return json.dumps(uris_to_s3(json.loads(serialized)))


def exit_process(code: int) -> None:
    """Ends an entry point's process. Once tensorflow-io's S3 client has been used, its teardown
    at interpreter exit aborts ("pure virtual method called"), turning a finished task into a
    failed one: the streams and logs are flushed and the process leaves without that teardown."""
    import logging
    import os
    import sys

    if "tensorflow_io" not in sys.modules:
        sys.exit(code)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
