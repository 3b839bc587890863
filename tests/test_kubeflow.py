"""Kubeflow / Vertex packaging: trainer placement per accelerator configuration, the pre-submit
check on the committed package and on broken ones, and the deploy command's offline parts."""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from kfp import components

from conftest import FAST_TRAINING
from pipelines import cli, revision
from pipelines.config import REPO_ROOT, PipelineConfig, load_config
from pipelines.kubeflow import deploy, launch, placement
from pipelines.kubeflow.package import Package, PackageError
from pipelines.kubeflow.presubmit import _image_problem, presubmit_problems, presubmit_warnings
from pipelines.pipeline import TRAINER_IDS

COMMITTED = REPO_ROOT / "pipeline.yaml"
BUCKET = "gs://mnist-bakeoff-test/root"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
TPU_TOLERATION = {"key": "google.com/tpu", "operator": "Exists", "effect": "NoSchedule"}

# name -> (config changes, expected trainer resources, expected trainer kubernetes config)
VARIANTS = {
    "none": ({"kfp_accelerator": "none"}, {}, None),
    "gpu": ({"kfp_accelerator": "gpu", "kfp_accelerator_count": 2, "kfp_accelerator_type": "nvidia-tesla-t4"},
            {"accelerator": {"type": "nvidia.com/gpu", "count": "2"}},
            {"nodeSelector": {"labels": {"cloud.google.com/gke-accelerator": "nvidia-tesla-t4"}},
             "tolerations": [GPU_TOLERATION]}),
    "tpu": ({"kfp_accelerator": "tpu", "kfp_accelerator_count": 4,
             "kfp_accelerator_type": "tpu-v5-lite-podslice", "kfp_tpu_topology": "2x2"},
            {"accelerator": {"type": "google.com/tpu", "count": "4"}},
            {"nodeSelector": {"labels": {"cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice",
                                         "cloud.google.com/gke-tpu-topology": "2x2"}},
             "tolerations": [TPU_TOLERATION]}),
    "cpu_memory": ({"kfp_accelerator": "none", "kfp_cpu_request": 2.0, "kfp_cpu_limit": 4.0,
                    "kfp_memory_request_gb": 8.0, "kfp_memory_limit_gb": 16.0,
                    "kfp_node_selector": {"pool": "trainers"},
                    "kfp_tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                                         "effect": "NoSchedule"}]},
                   {"cpuRequest": 2.0, "cpuLimit": 4.0, "memoryRequest": 8.0, "memoryLimit": 16.0},
                   {"nodeSelector": {"labels": {"pool": "trainers"}},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ml",
                                     "effect": "NoSchedule"}]}),
    "vertex_gpu": ({"kfp_target": "vertex", "kfp_accelerator": "gpu", "kfp_accelerator_type": "nvidia-l4"},
                   {"accelerator": {"type": "NVIDIA_L4", "count": "1"}}, None),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    """Each configuration compiled once, for real (KubeflowV2DagRunner + the placement step)."""
    from pipelines.kubeflow.compile import compile_kubeflow

    out = tmp_path_factory.mktemp("variants")
    paths = {}
    for name, (changes, _, _) in VARIANTS.items():
        cfg = load_config(kfp_pipeline_root=BUCKET, **changes)
        paths[name] = Path(compile_kubeflow(cfg, str(out / f"{name}.yaml")))
    return paths


def _resources_by_task(package: Package) -> dict[str, dict]:
    return {task_id: package.executors[package.executor_label(task_id)]["container"].get("resources", {})
            for task_id in package.tasks}


def _kubernetes_by_task(package: Package) -> dict[str, dict]:
    return {task_id: package.kubernetes_executors.get(package.executor_label(task_id))
            for task_id in package.tasks}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_places_trainers_and_nothing_else(compiled, variant):
    _, resources, kubernetes = VARIANTS[variant]
    package = Package.read(compiled[variant])
    assert set(TRAINER_IDS) < set(package.tasks)
    for task_id, found in _resources_by_task(package).items():
        assert found == (resources if task_id in TRAINER_IDS else {}), task_id
    target = "vertex" if variant.startswith("vertex") else "kubeflow"
    for task_id, found in _kubernetes_by_task(package).items():
        secrets = placement.model_key_secrets(load_config(kfp_target=target), task_id)
        expected = kubernetes if task_id in TRAINER_IDS else None
        if secrets:  # the tasks that sign or verify models get those keys, nothing else
            expected = {**(expected or {}), "secretAsEnv": secrets}
        assert found == expected, task_id
    assert bool(package.platform) == (kubernetes is not None or target == "kubeflow")
    assert package.spec["defaultPipelineRoot"] == BUCKET


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_kfp_loads_variant_and_presubmit_passes(compiled, variant):
    component = components.load_component_from_file(str(compiled[variant]))
    _, _, kubernetes = VARIANTS[variant]
    target = "vertex" if variant.startswith("vertex") else "kubeflow"
    package = Package.read(compiled[variant])
    if package.platform:  # kfp parsed the platform section into its PlatformSpec
        executors = component.platform_spec.platforms["kubernetes"].deployment_spec.executors
        with_secrets = {t for t in package.tasks if placement.model_key_secrets(load_config(kfp_target=target), t)}
        placed = set(TRAINER_IDS) if kubernetes else set()
        assert {package.executor_label(t) for t in placed | with_secrets} == set(executors)
    assert presubmit_problems(compiled[variant], target) == []


def test_kserve_step_is_compiled_for_kubeflow_only_and_never_runs_locally(tmp_path):
    from pipelines.kubeflow.compile import compile_kubeflow
    from pipelines.local_runner import local_pipeline

    cfg = load_config(kfp_pipeline_root=BUCKET, kserve_deploy=True, kserve_canary_traffic_percent=10,
                      output_root=str(tmp_path / "out"))
    package = Package.read(compile_kubeflow(cfg, str(tmp_path / "kserve.yaml")))
    task = package.tasks["KServeDeployer"]
    assert task["dependentTasks"] == ["RegistryPusher"]
    assert task["inputs"]["parameters"]["registry_uri"] == {"componentInputParameter": "registry_uri"}
    assert task["inputs"]["parameters"]["canary_traffic_percent"]["runtimeValue"]["constant"] == 10
    assert presubmit_problems(package.path, "kubeflow") == []
    vertex = Package.read(compile_kubeflow(cfg.replace(kfp_target="vertex"), str(tmp_path / "vertex.yaml")))
    assert "KServeDeployer" not in vertex.tasks
    assert "KServeDeployer" not in {c.id for c in local_pipeline(cfg).components}
    assert "KServeDeployer" not in Package.read(COMMITTED).tasks  # off by default


def test_vertex_rejects_an_unknown_accelerator_at_compile():
    cfg = load_config(kfp_target="vertex", kfp_accelerator="gpu", kfp_accelerator_type="nvidia-rtx-9090")
    with pytest.raises(ValueError, match="kfp_accelerator_type 'nvidia-rtx-9090' has no Vertex AI name"):
        placement.accelerator_resource(cfg)


def test_config_refuses_unknown_accelerator_kind():
    with pytest.raises(ValueError, match="kfp_accelerator 'fpga' is not none, gpu or tpu"):
        load_config(kfp_accelerator="fpga")


# --- pre-submit on the committed package and on broken variants ---------------------------------
def test_presubmit_passes_on_committed_package_given_a_pipeline_root():
    assert presubmit_problems(COMMITTED, "kubeflow", pipeline_root=BUCKET) == []
    assert cli.main(["presubmit", str(COMMITTED), "--pipeline-root", BUCKET]) == 0


@pytest.mark.parametrize("variant, warned", [("gpu", True), ("vertex_gpu", True), ("tpu", False), ("none", False)])
def test_presubmit_warns_about_the_gpu_driver(compiled, variant, warned):
    warnings = presubmit_warnings(compiled[variant])
    assert bool(warnings) == warned
    for trainer in TRAINER_IDS:  # one warning per GPU trainer, naming the driver it needs
        label = Package.read(compiled[variant]).executor_label(trainer)
        assert any(label in w and "NVIDIA driver >= 580" in w for w in warnings) == warned


def test_presubmit_command_fails_on_the_placeholder_root(capsys):
    assert cli.main(["presubmit", str(COMMITTED)]) == 1
    assert "is the placeholder" in capsys.readouterr().out


def _broken(tmp_path: Path, change) -> Path:
    """The committed package with `change(spec, platform)` applied, written to tmp_path."""
    package = Package.read(COMMITTED)
    package.spec, package.platform = copy.deepcopy(package.spec), copy.deepcopy(package.platform)
    change(package.spec, package.platform)
    package.path = str(tmp_path / "broken.yaml")
    package.write()
    return Path(package.path)


def _trainer_label(spec: dict) -> str:
    return spec["components"]["keras_trainer"]["executorLabel"]


def _set_trainer_accelerator(kind: str, count: str = "1"):
    def change(spec, platform):
        spec["deploymentSpec"]["executors"][_trainer_label(spec)]["container"]["resources"] = {
            "accelerator": {"type": kind, "count": count}}
    return change


def _set_task_parameter(task_id: str, name: str, value: str):
    def change(spec, platform):
        spec["root"]["dag"]["tasks"][task_id]["inputs"]["parameters"][name] = {"runtimeValue": {"constant": value}}
    return change


def _set_parameter_default(name: str, value: str):
    def change(spec, platform):
        spec["root"]["inputDefinitions"]["parameters"][name]["defaultValue"] = value
    return change


def _set_image(image: str):
    def change(spec, platform):
        spec["deploymentSpec"]["executors"]["StatisticsGen_executor"]["container"]["image"] = image
    return change


def _drop_platform(spec, platform):
    platform.clear()


def _drop_tpu_topology(spec, platform):
    _set_trainer_accelerator("google.com/tpu", "4")(spec, platform)
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    executors[_trainer_label(spec)]["nodeSelector"]["labels"] = {
        "cloud.google.com/gke-tpu-accelerator": "tpu-v5-lite-podslice"}


def _unknown_platform_executor(spec, platform):
    platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["Nope_executor"] = {}


def _set_command(command):
    def change(spec, platform):
        for executor in spec["deploymentSpec"]["executors"].values():
            executor["container"]["command"] = command
    return change


def _drop_pipeline_root(spec, platform):
    spec.pop("defaultPipelineRoot", None)


def _cache_the_champion(spec, platform):
    spec["root"]["dag"]["tasks"]["ChampionResolver"]["cachingOptions"] = {"enableCache": True}


def _evaluate_without_the_champion(spec, platform):
    task = spec["root"]["dag"]["tasks"]["BakeoffEvaluator"]
    task["dependentTasks"].remove("ChampionResolver")
    task["inputs"]["artifacts"].pop("champion")


def _drop_secret(executor_label):
    def change(spec, platform):
        platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor_label].pop("secretAsEnv")
    return change


BROKEN = {
    "image_latest": (_set_image("ghcr.io/mnist-bakeoff/mnist-tfx:latest"), "kubeflow", BUCKET,
                     "executor StatisticsGen_executor: image 'ghcr.io/mnist-bakeoff/mnist-tfx:latest' is not pinned"),
    "image_untagged": (_set_image("ghcr.io/mnist-bakeoff/mnist-tfx"), "kubeflow", BUCKET,
                       "image 'ghcr.io/mnist-bakeoff/mnist-tfx' is not pinned"),
    "vertex_name_on_kubeflow": (_set_trainer_accelerator("NVIDIA_L4"), "kubeflow", BUCKET,
                                "executor keras_trainer_executor: accelerator 'NVIDIA_L4' is not valid on kubeflow"),
    "kubernetes_name_on_vertex": (_set_trainer_accelerator("nvidia.com/gpu"), "vertex", BUCKET,
                                  "accelerator 'nvidia.com/gpu' is not valid on vertex"),
    "platform_section_on_vertex": (lambda s, p: None, "vertex", BUCKET,
                                   "kubernetes platform section, which Vertex AI does not apply"),
    "gpu_without_node_selector": (_drop_platform, "kubeflow", BUCKET,
                                  "executor keras_trainer_executor: requests nvidia.com/gpu but has no node selector"),
    "tpu_without_topology": (_drop_tpu_topology, "kubeflow", BUCKET,
                             "requests google.com/tpu but its node selector lacks cloud.google.com/gke-tpu-topology"),
    "unknown_platform_executor": (_unknown_platform_executor, "kubeflow", BUCKET,
                                  "kubernetes platform section names executor 'Nope_executor'"),
    "home_path": (_set_task_parameter("MnistExampleGen", "cache_dir", "/home/me/.cache/mnist"), "kubeflow", BUCKET,
                  "task MnistExampleGen: parameter cache_dir = '/home/me/.cache/mnist' is a path of the machine"),
    "repo_path": (_set_task_parameter("ImportSchemaGen", "schema_file", str(REPO_ROOT / "schema" / "schema.pbtxt")),
                  "kubeflow", BUCKET, "task ImportSchemaGen: parameter schema_file = "),
    "sqlite_registry": (_set_task_parameter("RegistryPusher", "registry_uri", "sqlite:///runs/registry/mlflow.db"),
                        "kubeflow", BUCKET, "task RegistryPusher: registry_uri 'sqlite:///runs/registry/mlflow.db' "
                        "is not a registry a cluster can reach"),
    "sqlite_registry_default": (_set_parameter_default("registry_uri", "sqlite:///mlflow.db"), "kubeflow", BUCKET,
                                "task RegistryPusher: registry_uri 'sqlite:///mlflow.db' is not a registry"),
    "local_source_default": (_set_parameter_default("source", "/home/me/mnist"), "kubeflow", BUCKET,
                             "task MnistExampleGen: parameter source = '/home/me/mnist' is a path of the machine"),
    "empty_registry": (_set_task_parameter("RegistryPusher", "registry_uri", ""), "kubeflow", BUCKET,
                       "task RegistryPusher: registry_uri '' is not a registry"),
    "no_pipeline_root": (_drop_pipeline_root, "kubeflow", None, "no pipeline root"),
    "placeholder_root": (lambda s, p: None, "kubeflow", None,
                         "pipeline root 'gs://YOUR-BUCKET/mnist-bakeoff' is the placeholder"),
    "tfx_command_with_s3": (_set_command(["python", "-m", "tfx.orchestration.kubeflow.v2.container."
                                          "kubeflow_v2_run_executor"]), "kubeflow", "minio://mlpipeline/v2",
                            "executor StatisticsGen_executor: command ['python', '-m', 'tfx.orchestration"),
    "cached_champion": (_cache_the_champion, "kubeflow", BUCKET,
                        "task ChampionResolver may be taken from the cache"),
    "evaluated_without_the_champion": (_evaluate_without_the_champion, "kubeflow", BUCKET,
                                       "task BakeoffEvaluator does not take ChampionResolver's champion"),
    "pusher_without_signing_key": (_drop_secret("RegistryPusher_executor"), "kubeflow", BUCKET,
                                   "task RegistryPusher gets no MNIST_MODEL_SIGNING_KEY from a secret"),
    "resolver_without_verify_key": (_drop_secret("ChampionResolver_executor"), "kubeflow", BUCKET,
                                    "task ChampionResolver gets no MNIST_MODEL_VERIFY_KEY from a secret"),
    "s3_root_on_vertex": (_drop_platform, "vertex", "s3://bucket/root",
                          "pipeline root 's3://bucket/root' is not storage the TFX executors can write to on vertex"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_presubmit_names_the_problem(tmp_path, case):
    change, target, root, expected = BROKEN[case]
    path = _broken(tmp_path, change)
    problems = presubmit_problems(path, target, pipeline_root=root)
    assert any(expected in p and p.startswith(f"{path}: ") for p in problems), problems


def test_an_s3_root_needs_the_store_secret_on_every_task(tmp_path):
    problems = presubmit_problems(COMMITTED, "kubeflow", pipeline_root="minio://mlpipeline/v2/artifacts")
    assert any("get no secret with its keys; compile with kfp_object_store_secret" in p for p in problems), problems
    cfg = load_config(kfp_object_store_secret="mlpipeline-s3", kfp_pipeline_root="minio://mlpipeline/v2/artifacts")
    from pipelines.kubeflow.compile import compile_kubeflow

    package = Package.read(compile_kubeflow(cfg, str(tmp_path / "pipeline.yaml")))
    for label in package.executors:
        secret = package.kubernetes_executors[label]["secretAsEnv"][0]  # then a model-signing secret, if any
        assert secret["secretName"] == "mlpipeline-s3"
        assert {m["envVar"] for m in secret["keyToEnv"]} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    for root in ("s3://mnist-bakeoff/root", "minio://mlpipeline/v2/artifacts"):
        assert presubmit_problems(package.path, "kubeflow", pipeline_root=root) == []
    # The keys never travel in the package itself.
    assert "AWS_SECRET_ACCESS_KEY=" not in Path(package.path).read_text()


def test_presubmit_refuses_three_documents(tmp_path):
    path = tmp_path / "three.yaml"
    path.write_text(COMMITTED.read_text() + "\n---\n{a: 1}\n")
    with pytest.raises(PackageError, match=f"{path}: expected a pipeline spec and at most one"):
        presubmit_problems(path, "kubeflow")


# --- run parameters and deploy: everything before the endpoint is contacted ----------------------
def test_committed_package_takes_run_parameters_with_defaults():
    package = Package.read(COMMITTED)
    parameters = package.root_parameters
    assert {name: p["defaultValue"] for name, p in parameters.items()} == {
        "source": "", "registry_uri": PipelineConfig().kfp_registry_uri,
        "trainer_config": json.dumps(PipelineConfig().trainer_config(), sort_keys=True)}
    uses = {(task_id, name): p["componentInputParameter"] for task_id, task in package.tasks.items()
            for name, p in task["inputs"].get("parameters", {}).items() if "componentInputParameter" in p}
    assert uses[("MnistExampleGen", "source")] == "source"
    assert uses[("RegistryPusher", "registry_uri")] == "registry_uri"
    assert {uses[(t, "custom_config")] for t in TRAINER_IDS} == {"trainer_config"}


def _single_document(tmp_path: Path) -> Package:
    """The committed package without its platform section (Vertex's loader takes one document)."""
    package = Package.read(COMMITTED)
    package.platform = {}
    package.path = str(tmp_path / "single.yaml")
    package.write()
    return package


def test_parameters_are_typed_and_trainer_settings_edit_trainer_config():
    package = Package.read(COMMITTED)
    values = deploy.parse_parameters(["source=gs://b/mnist", "epochs=2", "learning_rate=0.01"], package)
    assert values["source"] == "gs://b/mnist"
    assert json.loads(values["trainer_config"]) == {**PipelineConfig().trainer_config(),
                                                    "epochs": 2, "learning_rate": 0.01}


def test_unknown_parameter_names_the_package_and_what_it_takes():
    package = Package.read(COMMITTED)
    with pytest.raises(ValueError, match=r"pipeline.yaml: the pipeline has no parameter 'epoch' \(it takes: "
                                         r"registry_uri, source, trainer_config, accelerator, "):
        deploy.parse_parameters(["epoch=2"], package)
    with pytest.raises(ValueError, match="--param epochs: 'two' is not a INT"):
        deploy.parse_parameters(["epochs=two"], package)
    with pytest.raises(ValueError, match="expected NAME=VALUE"):
        deploy.parse_parameters(["epochs"], package)


def _deployment(*argv: str) -> deploy.Deployment:
    return cli.deployment_from_args(cli.build_parser().parse_args(["deploy", *argv]))


def test_kubeflow_deployment_defaults_to_the_code_revision():
    d = _deployment("kubeflow", "--host", "http://kfp", "--run")
    assert d.version_name == revision.code_revision() and d.run_name == f"run-{d.version_name}"
    # Caching as each task has it in the package: the champion's resolution never caches.
    assert d.pipeline_name == "mnist-bakeoff" and d.run and d.enable_caching is None
    assert d.parameters == {}  # the revision a version records is the image's


class RecordingKfpClient:
    """Stands in for kfp.Client's five calls (no KFP API server runs here) and records them."""

    def __init__(self, existing_pipeline_id: str | None):
        self.existing, self.calls = existing_pipeline_id, []

    def get_pipeline_id(self, name):
        self.calls.append(("get_pipeline_id", name))
        return self.existing

    def upload_pipeline(self, path, pipeline_name):
        self.calls.append(("upload_pipeline", pipeline_name))
        return argparse.Namespace(pipeline_id="p-new")

    def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id):
        self.calls.append(("upload_pipeline_version", pipeline_version_name, pipeline_id))
        return argparse.Namespace(pipeline_version_id="v-1")

    def create_experiment(self, name):
        self.calls.append(("create_experiment", name))
        return argparse.Namespace(experiment_id="e-1")

    def run_pipeline(self, experiment_id, job_name, **kwargs):
        self.calls.append(("run_pipeline", experiment_id, job_name, kwargs))
        return argparse.Namespace(run_id="r-1")


def test_deploy_creates_the_pipeline_once_then_adds_versions():
    d = _deployment("kubeflow", "--host", "h", "--version", "abc")
    first, later = RecordingKfpClient(None), RecordingKfpClient("p-old")
    assert deploy.deploy_kubeflow(d, first) == {"pipeline_id": "p-new", "version_id": "v-1"}
    assert [c[0] for c in first.calls] == ["get_pipeline_id", "upload_pipeline", "upload_pipeline_version"]
    deploy.deploy_kubeflow(d, later)
    assert later.calls[-1] == ("upload_pipeline_version", "abc", "p-old")


def test_deploy_with_run_passes_parameters_and_root():
    d = _deployment(
        "kubeflow", "--host", "h", "--version", "abc", "--run", "--param", "source=gs://b/mnist",
        "--pipeline-root", BUCKET, "--no-cache")
    client = RecordingKfpClient("p-old")
    assert deploy.deploy_kubeflow(d, client)["run_id"] == "r-1"
    assert client.calls[-1] == ("run_pipeline", "e-1", "run-abc", {
        "pipeline_id": "p-old", "version_id": "v-1", "params": {"source": "gs://b/mnist"},
        "pipeline_root": BUCKET, "enable_caching": False})


def test_vertex_pipeline_job_is_built_from_the_deployment(tmp_path):
    """The real aiplatform.PipelineJob, built offline: it reads the package and types the values."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    package = _single_document(tmp_path)
    d = _deployment(
        "vertex", "--project", "proj", "--region", "europe-west4", "--package", package.path,
        "--param", "epochs=3", "--param", "source=gs://b/mnist", "--pipeline-root", BUCKET,
        "--run-name", "bakeoff-1")
    job = aiplatform.PipelineJob(**deploy.vertex_job_arguments(d, "proj", "europe-west4"),
                                 credentials=AnonymousCredentials())
    runtime = job._gca_resource.runtime_config
    assert runtime.gcs_output_directory == BUCKET
    assert runtime.parameter_values["source"] == "gs://b/mnist"
    assert json.loads(runtime.parameter_values["trainer_config"])["epochs"] == 3
    assert job._gca_resource.display_name == "bakeoff-1"


def test_deploy_refuses_a_package_that_fails_presubmit(capsys):
    # The committed package's root is the placeholder; nothing is contacted.
    assert cli.main(["deploy", "kubeflow", "--host", "http://127.0.0.1:9", "--version", "x"]) == 1
    assert "is the placeholder" in capsys.readouterr().err


def test_deploy_checks_the_package_with_the_run_parameters(capsys):
    argv = ["deploy", "kubeflow", "--host", "http://127.0.0.1:9", "--version", "x", "--pipeline-root", BUCKET,
            "--param", "registry_uri=sqlite:///runs/registry/mlflow.db"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "registry_uri 'sqlite:///runs/registry/mlflow.db' is not a registry a cluster can reach" in err


def test_vertex_rejects_the_two_document_package():
    """Why vertex packages carry no platform section: aiplatform's loader reads one document."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform

    assert len(list(yaml.safe_load_all(COMMITTED.read_text()))) == 2
    with pytest.raises(yaml.YAMLError, match="expected a single document"):
        aiplatform.PipelineJob(display_name="x", template_path=str(COMMITTED), pipeline_root=BUCKET,
                               project="p", location="us-central1", credentials=AnonymousCredentials())


# --- in-cluster MLflow (infra/mlflow) -------------------------------------------------------------
MLFLOW_DIR = REPO_ROOT / "infra" / "mlflow"


def _mlflow_objects() -> list[dict]:
    kustomization = yaml.safe_load((MLFLOW_DIR / "kustomization.yaml").read_text())
    return [doc for resource in kustomization["resources"]
            for doc in yaml.safe_load_all((MLFLOW_DIR / resource).read_text()) if doc]


def _containers(objects: list[dict]) -> list[dict]:
    return [c for o in objects if o["kind"] in ("Deployment", "StatefulSet")
            for c in o["spec"]["template"]["spec"]["containers"]]


def test_mlflow_service_is_the_registry_uri_the_compile_uses():
    from urllib.parse import urlparse

    url = urlparse(PipelineConfig().kfp_registry_uri)
    service, namespace = url.hostname.split(".")[:2]
    objects = _mlflow_objects()
    services = {(o["metadata"]["name"], o["metadata"]["namespace"]): o for o in objects if o["kind"] == "Service"}
    assert [p["port"] for p in services[(service, namespace)]["spec"]["ports"]] == [url.port]
    server = next(c for c in _containers(objects) if c["name"] == "mlflow")
    command = " ".join(server["args"])
    assert "--serve-artifacts" in command and "postgresql://" in command and "s3://" in command
    # MLflow refuses Host headers it does not know; the pipeline's must be allowed.
    allowed = re.search(r'--allowed-hosts "([^"]+)"', command).group(1).split(",")
    assert url.netloc in allowed


def test_mlflow_images_are_pinned_and_secrets_documented():
    objects = _mlflow_objects()
    kustomization = yaml.safe_load((MLFLOW_DIR / "kustomization.yaml").read_text())
    replaced = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]}
    example = yaml.safe_load((MLFLOW_DIR / "secret.example.yaml").read_text())
    for container in _containers(objects):
        image = replaced.get(container["image"], container["image"])
        assert _image_problem(container["name"], image) is None, image
        for source in container.get("envFrom", []):
            assert source["secretRef"]["name"] == example["metadata"]["name"]
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            assert ref is None or ref["key"] in example["stringData"], env


def test_mlflow_server_image_has_the_locked_mlflow():
    locked = re.search(r"^mlflow==(\S+)", (REPO_ROOT / "requirements.lock").read_text(), re.M).group(1)
    server_lock = (MLFLOW_DIR / "requirements.lock").read_text()
    assert re.search(r"^mlflow==(\S+)", server_lock, re.M).group(1) == locked
    blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9])", server_lock) if b.strip() and not b.startswith("#")]
    assert all("--hash=sha256:" in b for b in blocks) and len(blocks) > 50
    dockerfile = (MLFLOW_DIR / "Dockerfile").read_text()
    assert "--require-hashes -r /tmp/requirements.lock" in dockerfile and "==" not in dockerfile
    kustomization = yaml.safe_load((MLFLOW_DIR / "kustomization.yaml").read_text())
    assert kustomization["images"][0]["newTag"] == locked


def test_kustomize_renders_the_mlflow_stack():
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed; the structural tests above still ran")
    rendered = subprocess.run([kubectl, "kustomize", str(MLFLOW_DIR)], check=True, capture_output=True,
                              text=True).stdout
    kinds = sorted(d["kind"] for d in yaml.safe_load_all(rendered) if d)
    assert kinds == ["Deployment", "Deployment", "Namespace", "PersistentVolumeClaim",
                     "Service", "Service", "Service", "StatefulSet"]
    assert "mlflow-server:3" in rendered and "image: mlflow-server\n" not in rendered


# --- the compiled package itself, run task by task as the KFP v2 launcher would --------------------
LAUNCH_SUBSET = {"train_limit": 2500, "eval_ratio": 0.2, "test_limit": 1000, "epochs": 1, **FAST_TRAINING}
# Both frameworks tuned by two tasks sharing one study, each trial 300 training examples.
LAUNCH_TUNING = {"tune_trials": 2, "tune_workers": 2, "tune_examples": 300}


@pytest.fixture(scope="module")
def launched(mnist_dir, deployed_services, tmp_path_factory) -> SimpleNamespace:
    """A package compiled for a small real MNIST subset, with tuning, every task run from its
    container command and executor-input JSON (in this venv, the checkout standing in for the
    image's /pipeline), each as soon as its dependencies have finished: its artifacts on an S3
    bucket under the `minio://` URIs an on-prem KFP hands out, the registry on the MLflow server
    backed by PostgreSQL, the studies in another database of that server (as the secrets give
    it, the password from the environment). The package, the outputs by task/key, the registry
    URI, the failure, if any, the store and the studies' storage URI."""
    from conftest import lock_settings
    from infra import services
    from pipelines import model_keys
    from pipelines.kubeflow.compile import compile_kubeflow

    store, registry_uri, database = deployed_services
    lock_uri, password = lock_settings(database)
    storage, _ = lock_settings(services.create_database(database, "optuna"))
    root = tmp_path_factory.mktemp("launch")
    cfg = load_config(kfp_pipeline_root=BUCKET, kfp_accelerator="none", min_metric=0.5,
                      registered_model_name="mnist-launch", kfp_registry_lock_uri=lock_uri,
                      kfp_tune_storage_uri=storage, **LAUNCH_TUNING, **LAUNCH_SUBSET)
    package = compile_kubeflow(cfg, str(root / "pipeline.yaml"))
    assert presubmit_problems(package, "kubeflow") == []
    # As the cluster's secrets give them: the store's keys to every task, the model keys and the
    # database's password to the tasks whose secrets name them.
    environment = {**store.environment, **model_keys.key_environment(os.environ), **password}
    try:
        with open(root / "launch.log", "w") as log:
            outputs = launch.launch_locally(package, f"minio://{store.bucket}/launch",
                                            {"source": str(mnist_dir), "registry_uri": registry_uri}, log=log,
                                            scratch=root / "scratch", environment=environment, parallelism=2)
        failure = None
    except launch.TaskFailed as e:
        outputs, failure = e.outputs, e
    return SimpleNamespace(package=Package.read(package), outputs=outputs, registry_uri=registry_uri,
                           failure=failure, store=store, storage=storage, password=password["PGPASSWORD"],
                           log=(root / "launch.log").read_text(),
                           task_logs={d.name: (d / "log.txt").read_text() for d in (root / "scratch").iterdir()
                                      if (d / "log.txt").exists()})


def _started_and_exited(log: str) -> list[tuple[str, str]]:
    """The launcher's lines in order: ("start" | "exit", task id)."""
    events = []
    for line in log.splitlines():
        if (found := re.fullmatch(r"launch: (\S+) exited -?\d+ after [\d.]+ s", line)):
            events.append(("exit", found.group(1)))
        elif (found := re.fullmatch(r"launch: (\S+)", line)):
            events.append(("start", found.group(1)))
    return events


def _object(store, uri: str) -> bytes:
    bucket, _, key = uri.removeprefix("minio://").partition("/")
    return store.client().get_object(Bucket=bucket, Key=key)["Body"].read()


def _failure_log(failure) -> str:
    return Path(str(failure).rpartition("its log: ")[2]).read_text()[-3000:] if failure else ""


def test_launcher_runs_the_tasks_in_dependency_order_up_to_the_trainers(launched):
    package, outputs, store = launched.package, launched.outputs, launched.store
    order = launch.task_order(package)
    assert set(order) == set(package.tasks)
    for position, task_id in enumerate(order):
        assert set(package.tasks[task_id].get("dependentTasks", [])) <= set(order[:position])
    assert launched.failure is None, _failure_log(launched.failure)
    examples = outputs["MnistExampleGen/examples"]
    assert json.loads(examples["metadata"]["split_names"]) == ["train", "eval", "test"]
    assert examples["type"]["instanceSchema"].startswith("title: tfx.Examples")
    assert "ChampionResolver/model" in outputs and "DataGate/validated_schema" not in outputs
    for trainer in TRAINER_IDS:  # KFP's URIs, as it wrote them; the files on the bucket
        uri = outputs[f"{trainer}/model"]["uri"]
        assert uri.startswith(f"minio://{store.bucket}/launch/{trainer}/"), uri
        assert any(k.endswith(("saved_model.pb", "state_dict.pt")) for k in store.keys(uri.split("/", 3)[3])), trainer


def test_the_launcher_runs_independent_tasks_at_once_and_each_after_its_dependencies(launched):
    events = _started_and_exited(launched.log)
    tasks = launched.package.tasks
    assert sorted(t for kind, t in events if kind == "start") == sorted(t for kind, t in events if kind == "exit") \
        == sorted(tasks)
    for position, (kind, task_id) in enumerate(events):
        if kind == "start":  # every dependency had exited before it started
            exited = {t for k, t in events[:position] if k == "exit"}
            assert set(tasks[task_id].get("dependentTasks", [])) <= exited, task_id
    running, most = set(), 0
    for kind, task_id in events:
        running = running | {task_id} if kind == "start" else running - {task_id}
        most = max(most, len(running))
        assert len(running) <= 2  # the parallelism it was given
    assert most == 2
    # Never a free slot while a task is ready: before each exit, both slots are taken or nothing waits.
    for position, (kind, _) in enumerate(events):
        if kind == "exit":
            started = {t for k, t in events[:position] if k == "start"}
            exited = {t for k, t in events[:position] if k == "exit"}
            ready = {t for t in tasks if t not in started and set(tasks[t].get("dependentTasks", [])) <= exited}
            assert not ready or len(started - exited) == 2, (position, sorted(started - exited), sorted(ready))


BEAM_TASKS = ("MnistExampleGen", "StatisticsGen", "ImageValidator", "BakeoffEvaluator")


def test_the_beam_steps_run_the_engine_they_were_given_and_fetch_no_runner(launched):
    """Each Beam step runs on the FnApiRunner it names, in_memory in the task's own process (the
    package's default: no worker subprocesses, which would each import TensorFlow, one per core of
    the node). Given Beam's DirectRunner instead, Beam 2.74 first tries its Prism runner: it
    starts a worker pool and downloads Prism's binary from GitHub at every Beam step (here the
    download fails and it falls back; in a cluster with internet it would run an executable nobody
    verified)."""
    logs = launched.task_logs
    assert set(BEAM_TASKS) <= set(logs), sorted(logs)
    # FnApiRunner says which mode it runs when given several workers (its warning that in_memory
    # ignores the count); StatisticsGen asks for one (pipelines/beam_options.py statistics_args).
    in_process = {task_id for task_id in BEAM_TASKS if "running_mode: in_memory" in logs[task_id]}
    subprocesses = {task_id for task_id, text in logs.items() if "starting control server on port" in text}
    assert (in_process, subprocesses) == (set(BEAM_TASKS) - {"StatisticsGen"}, set())
    tried_prism = {task_id for task_id, text in logs.items() if "PrismRunner" in text or "Downloading prism" in text}
    assert tried_prism == set()


def test_a_failed_task_stops_the_launch_and_names_its_log(tmp_path):
    """MNIST's source is missing: the ingest fails; nothing after it starts, nothing is left
    running (the tasks started beside it, which depend on nothing, finish), and the error names
    the task's log."""
    import io

    from pipelines.kubeflow.compile import compile_kubeflow

    package = compile_kubeflow(load_config(kfp_pipeline_root=BUCKET, kfp_accelerator="none"),
                               str(tmp_path / "pipeline.yaml"))
    log = io.StringIO()
    with pytest.raises(launch.TaskFailed) as failed:
        launch.launch_locally(package, tmp_path / "run", {"source": str(tmp_path / "no-mnist-here"),
                                                          "registry_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                              log=log, parallelism=2)
    assert failed.value.task_id == "MnistExampleGen"
    task_log = tmp_path / "run" / "MnistExampleGen" / "log.txt"
    assert str(failed.value).endswith(f"task MnistExampleGen exited with 1; its log: {task_log}")
    assert "no-mnist-here" in task_log.read_text()
    events = _started_and_exited(log.getvalue())
    started = sorted(t for kind, t in events if kind == "start")
    assert started == sorted(t for kind, t in events if kind == "exit")  # none left running
    tasks = Package.read(package).tasks
    assert "MnistExampleGen" in started and all(not tasks[t].get("dependentTasks") for t in started)
    finished = {key.partition("/")[0] for key in failed.value.outputs}
    assert finished == set(started) - {"MnistExampleGen"} and "ChampionResolver" in finished


def test_launched_package_evaluates_and_registers_the_winner(launched):
    """The whole package, the bake-off's system.* KFP UI outputs included (infra/kfp_types)."""
    from components.registry import MlflowRegistry

    package, outputs, store = launched.package, launched.outputs, launched.store
    assert launched.failure is None, _failure_log(launched.failure)
    assert set(outputs) == {f"{task_id}/{key}" for task_id, task in package.tasks.items()
                            for key in package.spec["components"][task["componentRef"]["name"]]
                            .get("outputDefinitions", {}).get("artifacts", {})}
    evaluation = json.loads(_object(store, outputs["BakeoffEvaluator/evaluation"]["uri"] + "/evaluation.json"))
    assert evaluation["data"]["examples"] == LAUNCH_SUBSET["test_limit"]
    registry = MlflowRegistry(launched.registry_uri, "mnist-launch")
    assert [v.version for v in registry.versions()] == ["1"]
    assert registry.champion().version == "1"
    # The KFP UI artifacts: files at their URIs, metrics in their metadata.
    assert _object(store, outputs["BakeoffEvaluator/report"]["uri"]).startswith(b"<!doctype html>")
    assert _object(store, outputs["BakeoffEvaluator/summary"]["uri"]).startswith(b"# MNIST bake-off")
    assert len(outputs["BakeoffEvaluator/classification_metrics"]["metadata"]["confusionMatrix"]["rows"]) == 10


def test_launched_package_tunes_then_trains_with_the_tuned_values(launched, monkeypatch):
    """Both frameworks' two tuner tasks, launched together, share their study in PostgreSQL and
    spend its budget exactly once; the trainers train with task 0's best values, which both
    tasks report (each waits until the study's last trial has finished)."""
    import optuna

    from components.tuner import study as study_lib

    assert launched.failure is None, _failure_log(launched.failure)
    outputs, store = launched.outputs, launched.store
    monkeypatch.setenv("PGPASSWORD", launched.password)
    evaluation = json.loads(_object(store, outputs["BakeoffEvaluator/evaluation"]["uri"] + "/evaluation.json"))
    opened = study_lib.open_storage(launched.storage, 30)
    budget = LAUNCH_TUNING["tune_trials"] * LAUNCH_SUBSET["epochs"] * LAUNCH_TUNING["tune_examples"]
    assert sorted(evaluation["tuning"]["frameworks"]) == ["keras", "pytorch"]
    for framework, study in evaluation["tuning"]["frameworks"].items():
        trials = optuna.load_study(study_name=study["study"], storage=opened).trials
        assert study["spent"] == study["budget"]["total"] == budget and len(trials) == LAUNCH_TUNING["tune_trials"]
        model = outputs[f"{framework}_trainer/model"]["uri"]
        meta = json.loads(_object(store, model + "/Format-Serving/model_meta.json"))
        assert {k: meta["config"][k] for k in study["best"]["params"]} == study["best"]["params"]
        for task in range(LAUNCH_TUNING["tune_workers"]):
            results = outputs[f"{framework}_tuner_{task}/tuner_results"]["uri"]
            found = json.loads(_object(store, results + "/tuning.json"))
            assert found["best"] == study["best"], (framework, task)
