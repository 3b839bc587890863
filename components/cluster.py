"""The Kubernetes API of the cluster a step runs in, for the steps that create resources there
(KServeDeployer's InferenceService, a multi-worker trainer's PyTorchJob or TFJob)."""

from __future__ import annotations

import os
from typing import Any

POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


class NoClusterError(RuntimeError):
    """No Kubernetes API in reach: the step runs on a Kubeflow cluster only."""


def pod_namespace(configured: str, namespace_file: str = POD_NAMESPACE_FILE) -> str:
    """`configured`, else the namespace of the pod this runs in, else "default"."""
    if configured:
        return configured
    if os.path.exists(namespace_file):
        with open(namespace_file, encoding="utf-8") as f:
            return f.read().strip()
    return "default"


def custom_objects_api(step: str, what: str) -> Any:
    """kubernetes' CustomObjectsApi on the in-cluster configuration; NoClusterError naming `step`
    and `what` it does on the cluster when there is none."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException as e:
        raise NoClusterError(f"{step}: no Kubernetes API in reach ({e}); this step {what}") from e
    return client.CustomObjectsApi()
