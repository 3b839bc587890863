"""The Kubernetes API of the cluster a step runs in, for the steps that create resources there
(KServeDeployer's InferenceService, a multi-worker trainer's TrainJob or TFJob): the client, and
what the API server says when it refuses a request.

The client is the pod's in-cluster configuration (its service account); outside a cluster, the
kubeconfig that $KUBECONFIG names (a step run by hand against a cluster, or the tests' fake API
server, tests/fake_kubernetes.py); a caller may also hand in its own kubernetes ApiClient.
"""

from __future__ import annotations

import json
import os
from typing import Any

POD_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
KUBECONFIG_ENV = "KUBECONFIG"


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


def api_client(step: str, what: str) -> Any:
    """A kubernetes ApiClient on the in-cluster configuration, else on the kubeconfig $KUBECONFIG names;
    NoClusterError naming `step` and `what` it does on the cluster when there is neither."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException as in_cluster:
        kubeconfig = os.environ.get(KUBECONFIG_ENV, "")
        if not kubeconfig:
            raise NoClusterError(f"{step}: no Kubernetes API in reach ({in_cluster}; no ${KUBECONFIG_ENV}); "
                                 f"this step {what}") from in_cluster
    try:
        # persist_config=False: a refreshed token is never written back into the user's file.
        return config.new_client_from_config(config_file=kubeconfig, persist_config=False)
    except (config.ConfigException, OSError) as e:
        raise NoClusterError(f"{step}: the kubeconfig ${KUBECONFIG_ENV} names ({kubeconfig}) is not usable: {e}") from e


def custom_objects_api(step: str, what: str, client: Any = None) -> Any:
    """kubernetes' CustomObjectsApi on `client` (a kubernetes ApiClient), else on api_client(step, what)."""
    from kubernetes import client as kubernetes_client

    return kubernetes_client.CustomObjectsApi(client or api_client(step, what))


def status_of(error: Exception) -> dict[str, Any]:
    """The Kubernetes Status object of a refused request (its message, reason and details), {} when the
    answer carried none (a proxy's HTML page, a connection that broke)."""
    try:
        status = json.loads(getattr(error, "body", None) or "")
    except (TypeError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def refusal(error: Exception) -> str:
    """The API server's own sentence for a refused request, else its HTTP status and reason."""
    message = status_of(error).get("message")
    if message:
        return str(message)
    return f"HTTP {getattr(error, 'status', '?')} {getattr(error, 'reason', None) or error}"


def missing_namespace(error: Exception) -> bool:
    """The request was refused because its namespace does not exist (not its resource type or object)."""
    return getattr(error, "status", None) == 404 and status_of(error).get("details", {}).get("kind") == "namespaces"
