"""The real KServeDeployer executor against a fake Kubernetes API server (tests/fake_kubernetes.py),
reached through the real kubernetes client and a kubeconfig: nothing happens when the alias did not
move; when it moved, the InferenceService of the version the pusher's artifact names is created, or
patched, and refused requests say what is wrong. No registry is involved: the registry URI points at
the fake server, which records any request, and only Kubernetes paths are asked."""

from __future__ import annotations

import pytest
import yaml
from tfx.types import standard_artifacts

from components.kserve_deployer import executor
from tests.fake_kubernetes import FakeKubernetes

NAME = "mnist-kserve"
ISVC = (executor.GROUP, executor.VERSION, executor.PLURAL)
SOURCE = "mlflow-artifacts:/1/run7/artifacts/signed/model"  # a signed version: <run artifacts>/signed/model


@pytest.fixture
def fake(tmp_path, monkeypatch):
    with FakeKubernetes([ISVC], namespaces=["models"]) as server:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig")))
        yield server


def _pushed(pushed: int = 1, champion: int = 1, version: str = "7", source: str = SOURCE, registry: str = ""):
    artifact = standard_artifacts.PushedModel()
    artifact.uri = "/tmp/pushed"
    artifact.set_int_custom_property("pushed", pushed)
    artifact.set_int_custom_property("champion", champion)
    for key, value in (("registry_uri", registry), ("registered_model", NAME), ("registered_version", version),
                       ("model_source", source)):
        if value:
            artifact.set_string_custom_property(key, value)
    return artifact


def _run(tmp_path, fake, pushed, canary: int = -1, model_name: str = NAME):
    deployment = standard_artifacts.PushedModel()
    deployment.uri = str(tmp_path / "deployment")
    (tmp_path / "deployment").mkdir(exist_ok=True)
    executor.Executor().Do({executor.PUSHED_MODEL: [pushed]}, {executor.DEPLOYMENT: [deployment]}, {
        executor.REGISTRY_URI: fake.url + "/mlflow", executor.MODEL_NAME: model_name, executor.NAMESPACE: "models",
        executor.SERVICE_ACCOUNT: "models-reader", executor.ARTIFACTS_DESTINATION: "s3://mlflow/artifacts",
        executor.CANARY: canary})
    return deployment


def _served(fake) -> dict:
    return fake.objects[("models", executor.PLURAL, NAME)]


@pytest.mark.parametrize("pushed, champion", [(0, 0), (1, 0)])
def test_nothing_is_applied_when_the_alias_did_not_move(tmp_path, fake, pushed, champion):
    deployment = _run(tmp_path, fake, _pushed(pushed, champion, registry=fake.url + "/mlflow"))
    assert deployment.get_int_custom_property("applied") == 0
    assert "did not move" in deployment.get_string_custom_property("reason")
    assert not (tmp_path / "deployment" / executor.RENDERED_FILE).exists()
    assert fake.requests == []


def test_a_moved_alias_creates_the_pushed_version_without_asking_the_registry(tmp_path, fake):
    deployment = _run(tmp_path, fake, _pushed(version="7", registry=fake.url + "/mlflow"), canary=10)
    assert [(r.method, r.path.split("?")[0]) for r in fake.requests] == [
        ("GET", f"/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices/{NAME}"),
        ("POST", "/apis/serving.kserve.io/v1beta1/namespaces/models/inferenceservices")]
    assert all(r.authorization == "Bearer fake-service-account-token" for r in fake.requests)
    served = _served(fake)
    predictor = served["spec"]["predictor"]
    # The version's signed root (signed/ and manifest.sig), for the project's verifying runtime.
    assert predictor["model"]["storageUri"] == "s3://mlflow/artifacts/1/run7/artifacts"
    assert predictor["model"]["runtime"] == "mnist-mlserver-verified"
    assert predictor["canaryTrafficPercent"] == 10 and predictor["serviceAccountName"] == "models-reader"
    assert predictor["model"]["modelFormat"] == {"name": "mlflow"} and predictor["model"]["protocolVersion"] == "v2"
    assert served["metadata"]["annotations"]["mnist-bakeoff/model-version"] == "7"
    assert served["metadata"]["labels"]["mnist-bakeoff/model-version"] == "7"
    assert yaml.safe_load((tmp_path / "deployment" / executor.RENDERED_FILE).read_text())["spec"] == served["spec"]
    assert deployment.get_string_custom_property("action") == "created"
    assert deployment.get_string_custom_property("registered_version") == "7"
    assert deployment.get_string_custom_property("model_source") == SOURCE
    assert deployment.get_string_custom_property("inference_service") == f"models/{NAME}"


def test_an_existing_service_is_patched_to_the_pushed_version_and_its_canary_cleared(tmp_path, fake):
    """The service runs version 3 at a 10% canary (the registry's alias may point anywhere by now):
    this run pushed version 8, stored on S3 directly, to get all the traffic at once."""
    fake.put({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
              "metadata": {"name": NAME, "namespace": "models",
                           "annotations": {"mnist-bakeoff/model-version": "3"}},
              "spec": {"predictor": {"canaryTrafficPercent": 10,
                                     "model": {"storageUri": "s3://mlflow/artifacts/1/run3/artifacts/model"}}}})
    deployment = _run(tmp_path, fake, _pushed(version="8", source="s3://models/8/signed/model", registry="http://r:5000"))
    (patch,) = fake.seen("PATCH")
    assert patch.content_type == "application/merge-patch+json"
    served = _served(fake)
    assert served["spec"]["predictor"]["model"]["storageUri"] == "s3://models/8"
    assert "canaryTrafficPercent" not in served["spec"]["predictor"]
    assert served["metadata"]["annotations"]["mnist-bakeoff/model-version"] == "8"
    assert deployment.get_string_custom_property("action") == "patched"
    assert fake.seen("POST") == []


def test_a_canary_patch_sets_the_share(tmp_path, fake):
    _run(tmp_path, fake, _pushed(version="4", registry="http://r:5000"))
    _run(tmp_path, fake, _pushed(version="5", source="mlflow-artifacts:/1/run5/artifacts/signed/model",
                                 registry="http://r:5000"), canary=25)
    predictor = _served(fake)["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 25
    assert predictor["model"]["storageUri"] == "s3://mlflow/artifacts/1/run5/artifacts"


@pytest.mark.parametrize("verb", ["get", "create"])
def test_a_forbidden_request_names_the_permission(tmp_path, fake, verb):
    fake.forbid("models", verb)
    with pytest.raises(RuntimeError) as error:
        _run(tmp_path, fake, _pushed(registry="http://r:5000"))
    assert str(error.value) == (f"InferenceService models/{NAME}: this step's service account may not {verb} "
                                "inferenceservices.serving.kserve.io in namespace 'models': grant it get, create "
                                "and patch (a Role and RoleBinding)")
    assert fake.objects == {}


def test_a_forbidden_patch_names_the_permission(tmp_path, fake):
    _run(tmp_path, fake, _pushed(version="4", registry="http://r:5000"))
    fake.forbid("models", "patch")
    with pytest.raises(RuntimeError, match="may not patch inferenceservices.serving.kserve.io in namespace 'models'"):
        _run(tmp_path, fake, _pushed(version="5", registry="http://r:5000"))
    assert _served(fake)["metadata"]["annotations"]["mnist-bakeoff/model-version"] == "4"


def test_a_cluster_without_kserve_or_the_namespace_is_named(tmp_path, monkeypatch):
    with FakeKubernetes([], namespaces=["models"]) as bare:
        monkeypatch.setenv("KUBECONFIG", str(bare.write_kubeconfig(tmp_path / "kubeconfig")))
        with pytest.raises(RuntimeError) as error:
            _run(tmp_path, bare, _pushed(registry="http://r:5000"))
    assert str(error.value) == (f"InferenceService models/{NAME}: the cluster has no serving.kserve.io/v1beta1 "
                                "inferenceservices: KServe is not installed")
    with FakeKubernetes([ISVC], namespaces=["other"]) as elsewhere:
        monkeypatch.setenv("KUBECONFIG", str(elsewhere.write_kubeconfig(tmp_path / "kubeconfig")))
        with pytest.raises(RuntimeError) as error:
            _run(tmp_path, elsewhere, _pushed(registry="http://r:5000"))
    assert str(error.value) == f"InferenceService models/{NAME}: namespace 'models' does not exist (kserve_namespace)"


def test_a_pushed_artifact_without_its_source_or_of_another_model_is_refused(tmp_path, fake):
    with pytest.raises(ValueError, match="pushed_model artifact /tmp/pushed has no model_source"):
        _run(tmp_path, fake, _pushed(source="", registry="http://r:5000"))
    with pytest.raises(ValueError, match="the pushed version is of 'mnist-kserve', not the registered model 'other'"):
        _run(tmp_path, fake, _pushed(registry="http://r:5000"), model_name="other")
    assert fake.requests == []


def test_without_a_cluster_the_step_says_so(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBECONFIG", raising=False)
    deployment = standard_artifacts.PushedModel()
    deployment.uri = str(tmp_path)
    with pytest.raises(executor.NoClusterError, match="KServeDeployer: no Kubernetes API in reach"):
        executor.Executor().Do({executor.PUSHED_MODEL: [_pushed(registry="http://r:5000")]},
                               {executor.DEPLOYMENT: [deployment]}, {
            executor.MODEL_NAME: NAME, executor.NAMESPACE: "models", executor.SERVICE_ACCOUNT: "models-reader",
            executor.ARTIFACTS_DESTINATION: "s3://mlflow/artifacts", executor.CANARY: -1})


def test_the_pod_namespace_is_the_default(tmp_path):
    namespace_file = tmp_path / "namespace"
    assert executor.pod_namespace("models", str(namespace_file)) == "models"
    assert executor.pod_namespace("", str(namespace_file)) == "default"
    namespace_file.write_text("kubeflow-user\n")
    assert executor.pod_namespace("", str(namespace_file)) == "kubeflow-user"
