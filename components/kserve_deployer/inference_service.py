"""A KServe InferenceService for one registered model version, checked offline against KServe's
schema: the registry's champion (`render`, for `python -m pipelines kserve`), or the version a
pipeline run pushed, as its pusher's artifact names it (`render_version`, for KServeDeployer).

The predictor is KServe's MLflow model format on the v2 protocol (KServe serves it with MLServer's
MLflow runtime, as `python -m pipelines serve` does here), reading the champion version's MLflow
pyfunc straight from the object store: `storageUri` is where that version's files are in the
bucket, never a `models:/` URI (KServe's storage initializer cannot resolve those). With the
cluster registry of infra/mlflow, versions are stored through the tracking server's artifact
proxy (`mlflow-artifacts:/<path>`), which keeps them under its `--artifacts-destination`
(`s3://mlflow/artifacts`): the URI is that destination plus the path. A version already stored
at an s3://, gs:// or https:// URI is used as it is; a local file (the embedded registry) is
refused, since no cluster can read it.

The rendered object is validated against inferenceservice.schema.json beside this file (built from
KServe's SDK by serving/kserve_schema.py: unknown fields, wrong types, missing required fields)
plus what that schema cannot say (a DNS-1123 name, a traffic percentage of 0-100).
`registry rollback N` moves the alias, so the next render points at version N.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

from components.registry import CHAMPION_ALIAS, MlflowRegistry, ModelVersion
from trainers.model_format import PYFUNC_IN_SIGNED, SIGNED_DIR

SCHEMA_PATH = Path(__file__).resolve().parent / "inferenceservice.schema.json"
# infra/mlflow/mlflow.yaml: `mlflow server --artifacts-destination s3://mlflow/artifacts --serve-artifacts`.
DEFAULT_ARTIFACTS_DESTINATION = "s3://mlflow/artifacts"
# The Kubernetes service account whose secret holds the bucket's credentials (KServe's storage
# initializer reads them from the service account's secrets, with the s3 endpoint annotations).
DEFAULT_SERVICE_ACCOUNT = "mlflow-models-reader"
# The project's ServingRuntime (serving/kserve_runtime.py: MLServer with the verifying runtime).
VERIFIED_RUNTIME = "mnist-mlserver-verified"
OBJECT_STORE_SCHEMES = ("s3", "gs", "https")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")


class RenderError(ValueError):
    """The InferenceService cannot be rendered, or is not valid; the message says why."""


def signed_root(source: str) -> str:
    """The folder holding a version's `signed/` files and `manifest.sig` (what the verifying runtime
    is given), from the version's MLflow source (`<root>/signed/model`)."""
    suffix = f"/{SIGNED_DIR}/{PYFUNC_IN_SIGNED}"
    if not source.rstrip("/").endswith(suffix):
        raise RenderError(f"{source} is not a signed version's model ({suffix} at the end): registered before "
                          "versions were signed, it cannot be verified, so it is not served")
    return source.rstrip("/")[:-len(suffix)]


def storage_uri(source: str, artifacts_destination: str = DEFAULT_ARTIFACTS_DESTINATION) -> str:
    """Where the files under an MLflow artifact URI `source` are in the object store."""
    parsed = urllib.parse.urlparse(source)
    if parsed.scheme == "mlflow-artifacts":
        if not artifacts_destination:
            raise RenderError(f"{source} is stored through an MLflow artifact proxy: give the server's "
                              "--artifacts-destination (e.g. s3://mlflow/artifacts) to locate it in the bucket")
        return artifacts_destination.rstrip("/") + "/" + parsed.path.lstrip("/")
    if parsed.scheme in OBJECT_STORE_SCHEMES:
        return source
    if parsed.scheme == "models":
        raise RenderError(f"{source} is a registry URI, which KServe's storage initializer cannot resolve")
    raise RenderError(f"{source} is not in an object store a cluster can read ({parsed.scheme or 'a local path'}): "
                      "register to an MLflow server whose artifacts live in a bucket (infra/mlflow), "
                      "e.g. MLFLOW_TRACKING_URI=http://... make run")


def champion_source(registry: MlflowRegistry) -> tuple[ModelVersion, str]:
    """The champion version and its MLflow pyfunc's source URI, as the registry records it."""
    found = registry.champion_source()
    if found is None:
        raise RenderError(f"{registry.model_name} has no version with the alias {CHAMPION_ALIAS} at {registry.uri}")
    return found


def service_name(model_name: str) -> str:
    """A DNS-1123 label from the registered model's name (KServe names Services and hosts after it)."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    if name and not name[0].isalpha():
        name = "m-" + name
    return name[:63].rstrip("-")


def inference_service(model_name: str, version: ModelVersion, storage: str, *, name: str = "", namespace: str = "",
                      service_account: str = DEFAULT_SERVICE_ACCOUNT, canary_traffic_percent: int | None = None,
                      cpu: str = "1", memory: str = "2Gi", cpu_limit: str = "2", memory_limit: str = "4Gi",
                      runtime: str = "", min_replicas: int | None = None) -> dict[str, Any]:
    """The InferenceService object (a dict, as kubectl reads it from YAML)."""
    metadata: dict[str, Any] = {"name": name or service_name(model_name)}
    if namespace:
        metadata["namespace"] = namespace
    metadata.update({
        "labels": {"app.kubernetes.io/part-of": "mnist-bakeoff", "mnist-bakeoff/model-version": version.version},
        "annotations": {"mnist-bakeoff/registered-model": model_name,
                        "mnist-bakeoff/model-version": version.version,
                        "mnist-bakeoff/model-alias": CHAMPION_ALIAS},
    })
    model: dict[str, Any] = {
        "modelFormat": {"name": "mlflow"},
        "protocolVersion": "v2",
        "storageUri": storage,
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu_limit, "memory": memory_limit}},
    }
    if runtime:
        model["runtime"] = runtime
    predictor: dict[str, Any] = {"serviceAccountName": service_account, "model": model}
    if canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = canary_traffic_percent
    if min_replicas is not None:
        predictor["minReplicas"] = min_replicas
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "metadata": metadata,
            "spec": {"predictor": predictor}}


def validate(isvc: dict[str, Any]) -> None:
    """Raises RenderError listing every way `isvc` breaks KServe's schema (and the rules it cannot say)."""
    import jsonschema

    schema = json.loads(SCHEMA_PATH.read_text())
    validator = jsonschema.Draft7Validator(schema)
    problems = [f"{'.'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}"
                for e in sorted(validator.iter_errors(isvc), key=lambda e: list(map(str, e.absolute_path)))]
    name = (isvc.get("metadata") or {}).get("name", "")
    if not isinstance(name, str) or not _DNS_LABEL.match(name):
        problems.append(f"metadata.name: {name!r} is not a DNS-1123 label (a-z, 0-9, '-', at most 63)")
    predictor = (isvc.get("spec") or {}).get("predictor") or {}
    canary = predictor.get("canaryTrafficPercent")
    if canary is not None and (not isinstance(canary, int) or not 0 <= canary <= 100):
        problems.append(f"spec.predictor.canaryTrafficPercent: {canary!r} is not a percentage 0-100")
    storage = ((predictor.get("model") or {}).get("storageUri")) or ""
    if isinstance(storage, str) and storage.startswith("models:/"):
        problems.append(f"spec.predictor.model.storageUri: {storage} is a registry URI, not an object store URI")
    if problems:
        source = ", ".join(schema.get("x-source", {}))
        raise RenderError(f"not a valid KServe InferenceService ({source}):\n  " + "\n  ".join(problems))


def render_version(version: ModelVersion, source: str, *, artifacts_destination: str = DEFAULT_ARTIFACTS_DESTINATION,
                   **options: Any) -> dict[str, Any]:
    """The InferenceService of `version`, whose MLflow source URI is `source`, validated; nothing is
    asked of the registry. The storageUri is the version's signed root, which the project's
    runtime verifies before loading (serving/kserve_runtime.py); KServe's stock MLflow runtime would
    load the pyfunc unverified, so `runtime` defaults to the project's."""
    options["runtime"] = options.get("runtime") or VERIFIED_RUNTIME
    isvc = inference_service(version.name, version, storage_uri(signed_root(source), artifacts_destination),
                             **options)
    validate(isvc)
    return isvc


def render(registry_uri: str, model_name: str, *, artifacts_destination: str = DEFAULT_ARTIFACTS_DESTINATION,
           **options: Any) -> tuple[ModelVersion, dict[str, Any]]:
    """The champion's InferenceService, validated: (the version it serves, the object)."""
    version, source = champion_source(MlflowRegistry(registry_uri, model_name))
    return version, render_version(version, source, artifacts_destination=artifacts_destination, **options)


def to_yaml(isvc: dict[str, Any], version: ModelVersion, registry_uri: str) -> str:
    import yaml

    header = (f"# KServe InferenceService for {version.name} version {version.version} (alias {CHAMPION_ALIAS} "
              f"at {registry_uri}),\n# rendered by `python -m pipelines kserve` and validated against "
              f"KServe's schema ({SCHEMA_PATH.name}).\n")
    return header + yaml.safe_dump(isvc, sort_keys=False)
