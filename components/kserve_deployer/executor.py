"""KServeDeployer's executor: when the pusher of this run moved the `champion` alias, renders the
champion's InferenceService from the registry (components/kserve_deployer/inference_service.py,
validated offline against KServe's schema) and applies it to the cluster the step runs in:
created, or patched with the new version's storageUri (and canaryTrafficPercent, when set, so
KServe splits traffic between the new and the previous revision). Otherwise it does nothing and
says why. It needs the Kubernetes API of the cluster it runs on, and a service account allowed
to get, create and patch inferenceservices.serving.kserve.io in the namespace.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import tensorflow as tf
import yaml
from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils

from components.cluster import NoClusterError, custom_objects_api, pod_namespace  # noqa: F401 (NoClusterError: the step's error)
from components.kserve_deployer import inference_service

PUSHED_MODEL = "pushed_model"
DEPLOYMENT = "deployment"
REGISTRY_URI = "registry_uri"
MODEL_NAME = "registered_model_name"
NAMESPACE = "namespace"
SERVICE_ACCOUNT = "service_account"
ARTIFACTS_DESTINATION = "artifacts_destination"
CANARY = "canary_traffic_percent"
RENDERED_FILE = "inferenceservice.yaml"
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def alias_moved(pushed: types.Artifact) -> bool:
    """This run registered a version and it holds the champion alias (RegistryPusher's record)."""
    return bool(pushed.get_int_custom_property("pushed")) and bool(pushed.get_int_custom_property("champion"))


def apply(isvc: dict[str, Any], namespace: str) -> str:
    """Creates or patches the InferenceService through the in-cluster Kubernetes API; "created" or "patched"."""
    from kubernetes.client.rest import ApiException

    api = custom_objects_api("KServeDeployer", "applies the InferenceService on the Kubeflow cluster it runs "
                             "in (compile it only for kfp_target kubeflow)")
    name = isvc["metadata"]["name"]
    try:
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except ApiException as e:
        if e.status != 404:
            raise
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, isvc)
        return "created"
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, isvc)
    return "patched"


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
        namespace = pod_namespace(exec_properties.get(NAMESPACE) or "")
        canary = int(exec_properties.get(CANARY, -1))
        version, isvc = inference_service.render(
            exec_properties[REGISTRY_URI], exec_properties[MODEL_NAME],
            artifacts_destination=exec_properties[ARTIFACTS_DESTINATION],
            service_account=exec_properties[SERVICE_ACCOUNT], namespace=namespace,
            canary_traffic_percent=canary if canary >= 0 else None)
        with tf.io.gfile.GFile(os.path.join(deployment.uri, RENDERED_FILE), "w") as f:
            f.write(yaml.safe_dump(isvc, sort_keys=False))
        action = apply(isvc, namespace)
        logging.info("KServeDeployer: InferenceService %s/%s %s for version %s", namespace,
                     isvc["metadata"]["name"], action, version.version)
        deployment.set_int_custom_property("applied", 1)
        deployment.set_string_custom_property("action", action)
        deployment.set_string_custom_property("inference_service", f"{namespace}/{isvc['metadata']['name']}")
        deployment.set_string_custom_property("registered_version", version.version)
        deployment.set_string_custom_property(
            "storage_uri", isvc["spec"]["predictor"]["model"]["storageUri"])
