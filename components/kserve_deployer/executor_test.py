"""The real KServeDeployer executor: nothing happens when the alias did not move; when it moved,
the champion's InferenceService is rendered from a real MLflow server's registry (validated) and
applying it needs a cluster's Kubernetes API, which these machines do not have."""

from __future__ import annotations

import pytest
import yaml
from tfx.types import standard_artifacts

from components.kserve_deployer import executor
from components.registry import MlflowRegistry
from conftest import running_mlflow_server

NAME = "mnist-kserve"


def _run(tmp_path, registry_uri: str, pushed: int, champion: int, canary: int = -1):
    pushed_model = standard_artifacts.PushedModel()
    pushed_model.uri = str(tmp_path / "pushed")
    pushed_model.set_int_custom_property("pushed", pushed)
    pushed_model.set_int_custom_property("champion", champion)
    deployment = standard_artifacts.PushedModel()
    deployment.uri = str(tmp_path / "deployment")
    (tmp_path / "deployment").mkdir()
    executor.Executor().Do({executor.PUSHED_MODEL: [pushed_model]}, {executor.DEPLOYMENT: [deployment]}, {
        executor.REGISTRY_URI: registry_uri, executor.MODEL_NAME: NAME, executor.NAMESPACE: "models",
        executor.SERVICE_ACCOUNT: "models-reader", executor.ARTIFACTS_DESTINATION: "s3://mlflow/artifacts",
        executor.CANARY: canary})
    return deployment


@pytest.mark.parametrize("pushed, champion", [(0, 0), (1, 0)])
def test_nothing_is_applied_when_the_alias_did_not_move(tmp_path, pushed, champion):
    # An unreachable registry proves it: nothing is contacted at all.
    deployment = _run(tmp_path, "http://127.0.0.1:9", pushed, champion)
    assert deployment.get_int_custom_property("applied") == 0
    assert "did not move" in deployment.get_string_custom_property("reason")
    assert not (tmp_path / "deployment" / executor.RENDERED_FILE).exists()


def test_a_moved_alias_renders_the_champion_and_needs_the_cluster(small_models, tmp_path):
    with running_mlflow_server(tmp_path / "server") as (uri, _):
        registry = MlflowRegistry(uri, NAME)
        version = registry.register(str(small_models["pytorch_model"] / "Format-Serving"), "pytorch",
                                    tags={}, metrics={})
        registry.promote(version.version)
        with pytest.raises(executor.NoClusterError, match="no Kubernetes API in reach"):
            _run(tmp_path, uri, pushed=1, champion=1, canary=10)
    isvc = yaml.safe_load((tmp_path / "deployment" / executor.RENDERED_FILE).read_text())
    predictor = isvc["spec"]["predictor"]
    assert isvc["metadata"]["namespace"] == "models" and predictor["canaryTrafficPercent"] == 10
    assert predictor["serviceAccountName"] == "models-reader"
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"} and predictor["model"]["protocolVersion"] == "v2"
    assert predictor["model"]["storageUri"].startswith("s3://mlflow/artifacts/")
    assert isvc["metadata"]["annotations"]["mnist-bakeoff/model-version"] == version.version


def test_the_pod_namespace_is_the_default(tmp_path):
    namespace_file = tmp_path / "namespace"
    assert executor.pod_namespace("models", str(namespace_file)) == "models"
    assert executor.pod_namespace("", str(namespace_file)) == "default"
    namespace_file.write_text("kubeflow-user\n")
    assert executor.pod_namespace("", str(namespace_file)) == "kubeflow-user"
