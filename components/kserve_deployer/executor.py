"""KServeDeployer's executor: when the pusher of this run moved the `champion` alias, renders the
InferenceService of exactly the version that pusher registered, as its `pushed_model` artifact
names it (registered_model, registered_version, and model_source, the version's files as MLflow's
get_model_version_download_uri gave them), and applies it to the cluster the step runs in:
created, or patched with the new version's storageUri (and canaryTrafficPercent, when set, so
KServe splits traffic between the new and the previous revision; when not, the previous
revision's canary share is cleared). It reads nothing from the registry: where the alias points
by the time this step runs (a concurrent run, a rollback) does not change what this run deploys.
Otherwise it does nothing and says why. It needs the Kubernetes API of the cluster it runs on
(components/cluster.py), and a service account allowed to get, create and patch
inferenceservices.serving.kserve.io in the namespace.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from typing import Any

import tensorflow as tf
import yaml
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.cluster import NoClusterError, custom_objects_api, missing_namespace, pod_namespace, refusal  # noqa: F401 (NoClusterError: the step's error)
from components.kserve_deployer import inference_service
from components.registry import CHAMPION_ALIAS, ModelVersion

PUSHED_MODEL = "pushed_model"
DEPLOYMENT = "deployment"
# Kept in the component's interface; the executor serves what the pushed artifact names instead.
REGISTRY_URI = "registry_uri"
MODEL_NAME = "registered_model_name"
NAMESPACE = "namespace"
SERVICE_ACCOUNT = "service_account"
ARTIFACTS_DESTINATION = "artifacts_destination"
CANARY = "canary_traffic_percent"
RENDERED_FILE = "inferenceservice.yaml"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
VERBS = "get, create and patch"
# RegistryPusher's custom properties on its pushed_model artifact that name the version it registered.
PUSHED_PROPERTIES = ("registry_uri", "registered_model", "registered_version", "model_source")


@dataclasses.dataclass(frozen=True)
class PushedVersion:
    registry_uri: str
    model: str
    version: str
    source: str  # the version's files, as the registry gave them (mlflow-artifacts:/..., s3://...)


def alias_moved(pushed: types.Artifact) -> bool:
    """This run registered a version and it holds the champion alias (RegistryPusher's record)."""
    return bool(pushed.get_int_custom_property("pushed")) and bool(pushed.get_int_custom_property("champion"))


def pushed_version(pushed: types.Artifact) -> PushedVersion:
    """The version the pusher's artifact names; ValueError naming the properties it lacks."""
    values = {key: pushed.get_string_custom_property(key) for key in PUSHED_PROPERTIES}
    missing = [key for key, value in values.items() if not value]
    if missing:
        raise ValueError(f"KServeDeployer: the pushed_model artifact {pushed.uri} has no {', '.join(missing)}: "
                         "its RegistryPusher records no model source; rebuild the image with a current one")
    return PushedVersion(values["registry_uri"], values["registered_model"], values["registered_version"],
                         values["model_source"])


def refused(error: Exception, namespace: str, name: str, verb: str) -> RuntimeError:
    """The one line that says what a refused `verb` on the InferenceService means and what to do."""
    where = f"InferenceService {namespace}/{name}"
    status = getattr(error, "status", None)
    if status == 404 and missing_namespace(error):
        return RuntimeError(f"{where}: namespace {namespace!r} does not exist (kserve_namespace)")
    if status == 404:
        return RuntimeError(f"{where}: the cluster has no {GROUP}/{VERSION} {PLURAL}: KServe is not installed")
    if status == 403:
        return RuntimeError(f"{where}: this step's service account may not {verb} {PLURAL}.{GROUP} in namespace "
                            f"{namespace!r}: grant it {VERBS} (a Role and RoleBinding)")
    return RuntimeError(f"{where}: {verb} refused: {refusal(error)}")


def patch_body(isvc: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that makes the existing object this one: a share the new object does not set
    is removed (null), else the previous rollout's canaryTrafficPercent would stay."""
    body = copy.deepcopy(isvc)
    body["spec"]["predictor"].setdefault("canaryTrafficPercent", None)
    return body


def apply(isvc: dict[str, Any], namespace: str, api: Any = None) -> str:
    """Creates or patches the InferenceService (through `api`, a CustomObjectsApi; default: the
    cluster's); "created" or "patched"."""
    from kubernetes.client.rest import ApiException

    api = api or custom_objects_api("KServeDeployer", "applies the InferenceService on the Kubeflow cluster it runs "
                                    "in (compile it only for kfp_target kubeflow)")
    name = isvc["metadata"]["name"]
    try:
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        found = True
    except ApiException as e:
        # A 404 for the object, not for the resource type: the create says which.
        if e.status != 404:
            raise refused(e, namespace, name, "get") from e
        found = False
    verb = "patch" if found else "create"
    try:
        if found:
            api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch_body(isvc))
        else:
            api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, isvc)
    except ApiException as e:
        raise refused(e, namespace, name, verb) from e
    return "patched" if found else "created"


class Executor(base_executor.BaseExecutor):
    def Do(self, input_dict: dict[str, list[types.Artifact]],
           output_dict: dict[str, list[types.Artifact]], exec_properties: dict[str, Any]) -> None:
        pushed = artifact_utils.get_single_instance(input_dict[PUSHED_MODEL])
        deployment = artifact_utils.get_single_instance(output_dict[DEPLOYMENT])
        if not alias_moved(pushed):
            reason = "the champion alias did not move in this run: the served model stays as it is"
            logging.info("KServeDeployer: %s", reason)
            deployment.set_int_custom_property("applied", 0)
            deployment.set_string_custom_property("reason", reason)
            return
        version = pushed_version(pushed)
        expected = exec_properties.get(MODEL_NAME) or version.model
        if version.model != expected:
            raise ValueError(f"KServeDeployer: the pushed version is of {version.model!r}, not the registered model "
                             f"{expected!r} this step serves")
        namespace = pod_namespace(exec_properties.get(NAMESPACE) or "")
        canary = int(exec_properties.get(CANARY, -1))
        isvc = inference_service.render_version(
            ModelVersion(version.model, version.version, {}, (CHAMPION_ALIAS,)), version.source,
            artifacts_destination=exec_properties[ARTIFACTS_DESTINATION],
            service_account=exec_properties[SERVICE_ACCOUNT], namespace=namespace,
            canary_traffic_percent=canary if canary >= 0 else None)
        with tf.io.gfile.GFile(os.path.join(deployment.uri, RENDERED_FILE), "w") as f:
            f.write(yaml.safe_dump(isvc, sort_keys=False))
        action = apply(isvc, namespace)
        logging.info("KServeDeployer: InferenceService %s/%s %s for %s version %s (%s)", namespace,
                     isvc["metadata"]["name"], action, version.model, version.version, version.source)
        deployment.set_int_custom_property("applied", 1)
        deployment.set_string_custom_property("action", action)
        deployment.set_string_custom_property("inference_service", f"{namespace}/{isvc['metadata']['name']}")
        deployment.set_string_custom_property("registry_uri", version.registry_uri)
        deployment.set_string_custom_property("registered_model", version.model)
        deployment.set_string_custom_property("registered_version", version.version)
        deployment.set_string_custom_property("model_source", version.source)
        deployment.set_string_custom_property("storage_uri", isvc["spec"]["predictor"]["model"]["storageUri"])
