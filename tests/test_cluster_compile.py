"""Issue #17: multi-worker trainer steps (Vertex AI CustomJob through TFX's Vertex training
extension; on Kubeflow a Trainer v2 TrainJob for PyTorch, a v1 TFJob for Keras) and the Beam steps'
runner (Direct, Dataflow, Flink), each compiled for real and checked by presubmit, and broken
variants presubmit names."""

from __future__ import annotations

import copy
import json
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from kfp import components

from components.training_job import job
from pipelines.config import load_config
from pipelines.kubeflow import compile as kfp_compile
from pipelines.kubeflow.package import Package
from pipelines.kubeflow.presubmit import presubmit_problems, presubmit_warnings
from pipelines.pipeline import TRAINER_IDS

BUCKET = "gs://mnist-bakeoff-test/root"
IMAGE = "europe-docker.pkg.dev/proj-1/mnist/mnist-tfx:abc123"
VERTEX_KEYS = ("ai_platform_enable_vertex", "ai_platform_vertex_region", "ai_platform_training_args")
VARIANTS = {
    "vertex_workers_dataflow": ("vertex", {"kfp_target": "vertex", "kfp_trainer_workers": 4, "gcp_project": "proj-1",
                                           "gcp_region": "europe-west4", "beam_runner": "dataflow",
                                           "dataflow_temp_location": "gs://mnist-bakeoff-test/tmp",
                                           "beam_max_workers": 4}),
    "kubeflow_workers_flink": ("kubeflow", {"kfp_trainer_workers": 2, "beam_runner": "flink",
                                            "flink_job_endpoint": "flink-beam-jobserver.flink:8099",
                                            "kfp_cpu_request": 4.0, "kfp_memory_limit_gb": 16.0,
                                            "kfp_training_job_service_account": "default-editor"}),
}


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("cluster")
    return {name: Path(kfp_compile.compile_kubeflow(load_config(kfp_pipeline_root=BUCKET, image=IMAGE, **changes),
                                                    str(out / f"{name}.yaml")))
            for name, (_, changes) in VARIANTS.items()}


def _custom_config(package: Package, task_id: str) -> dict:
    return json.loads(package.tasks[task_id]["inputs"]["parameters"]["custom_config"]["runtimeValue"]["constant"])


def _container(package: Package, task_id: str) -> dict:
    return package.executors[package.executor_label(task_id)]["container"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cluster_variant_loads_and_passes_presubmit(compiled, variant):
    components.load_component_from_file(str(compiled[variant]))
    target, _ = VARIANTS[variant]
    assert presubmit_problems(compiled[variant], target) == []
    warnings = presubmit_warnings(compiled[variant])
    assert any("infra/build_beam_sdk_image.sh" in w for w in warnings), warnings


def test_vertex_trainers_launch_a_custom_job_of_chief_and_workers(compiled):
    package = Package.read(compiled["vertex_workers_dataflow"])
    assert not package.platform and "trainer_config" not in package.root_parameters  # settings compiled in
    for task_id in TRAINER_IDS:
        container = _container(package, task_id)
        assert "components.training_job.executor.VertexExecutor" in container["args"]
        assert "accelerator" not in container.get("resources", {})  # the step only launches the job
        config = _custom_config(package, task_id)
        assert config["ai_platform_enable_vertex"] is True and config["ai_platform_vertex_region"] == "europe-west4"
        args = config["ai_platform_training_args"]
        assert args["project"] == "proj-1"
        pool = {"machine_spec": {"machine_type": "g2-standard-8", "accelerator_type": "NVIDIA_L4",
                                 "accelerator_count": 1}, "container_spec": {"image_uri": IMAGE}}
        assert args["job_spec"]["worker_pool_specs"] == [{**pool, "replica_count": 1}, {**pool, "replica_count": 3}]
        assert config["epochs"] == 4 and config["seed"] == 42


def test_kubeflow_trainers_launch_a_train_job_or_a_tf_job(compiled):
    package = Package.read(compiled["kubeflow_workers_flink"])
    assert "trainer_config" not in package.root_parameters  # the settings are compiled in
    placed = {label: spec for label, spec in package.kubernetes_executors.items() if set(spec) != {"secretAsEnv"}}
    assert placed == {}  # no step is placed: the model-signing secrets are all its platform section holds
    kinds = {"keras_trainer": ("TFJob", ""), "pytorch_trainer": ("TrainJob", "torch-distributed")}
    for task_id, (kind, runtime) in kinds.items():
        assert "components.training_job.executor.Executor" in _container(package, task_id)["args"]
        assert "accelerator" not in _container(package, task_id).get("resources", {})
        settings = job.JobSettings.from_dict(_custom_config(package, task_id)[job.JOB_KEY])
        assert settings == job.JobSettings(
            kind=kind, replicas=2, image=IMAGE, resources={"limits": {"nvidia.com/gpu": "1", "memory": "16G"},
                                                           "requests": {"cpu": "4"}},
            node_selector={"cloud.google.com/gke-accelerator": "nvidia-l4"},
            tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            service_account="default-editor", runtime=runtime)
    train_job = job.render(job.JobSettings.from_dict(_custom_config(package, "pytorch_trainer")[job.JOB_KEY]),
                           "pytorch-trainer-1a2b3c4d", "ml", ["python"])
    assert train_job["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert job.replica_images(train_job) == [_container(package, "pytorch_trainer")["image"]]


def test_presubmit_says_which_operators_the_kubeflow_jobs_need(compiled):
    warnings = presubmit_warnings(compiled["kubeflow_workers_flink"])
    assert any("task keras_trainer: its TFJob is the v1 training operator's (kubeflow.org/v1, release-1.9), since "
               "Kubeflow Trainer v2 has no TensorFlow runtime" in w for w in warnings), warnings
    assert any("task pytorch_trainer: its TrainJob needs Kubeflow Trainer v2 (>= v2.2) and its ClusterTrainingRuntime "
               "'torch-distributed'" in w for w in warnings), warnings
    assert not any("TFJob" in w or "TrainJob" in w for w in presubmit_warnings(compiled["vertex_workers_dataflow"]))


def test_beam_args_per_runner(compiled):
    vertex, kubeflow = (Package.read(compiled[name]) for name in ("vertex_workers_dataflow", "kubeflow_workers_flink"))
    dataflow = ["--runner=DataflowRunner", "--project=proj-1", "--region=europe-west4",
                "--temp_location=gs://mnist-bakeoff-test/tmp", f"--sdk_container_image={IMAGE}", "--max_num_workers=4"]
    flink = ["--runner=PortableRunner", "--job_endpoint=flink-beam-jobserver.flink:8099", "--environment_type=DOCKER",
             f"--environment_config={IMAGE}", f"--sdk_container_image={IMAGE}"]
    for package, expected in ((vertex, dataflow), (kubeflow, flink)):
        for task_id in ("MnistExampleGen", "StatisticsGen", "BakeoffEvaluator"):  # TFX appends them to the args
            assert _container(package, task_id)["args"][-len(expected):] == expected, task_id
    direct = ["--runner=FnApiRunner", "--direct_running_mode=in_memory", "--direct_num_workers=0",
              f"--sdk_container_image={load_config().image}"]
    assert kfp_compile.beam_args(load_config()) == direct
    processes = load_config(beam_direct_running_mode="multi_processing", beam_direct_workers=2)
    assert kfp_compile.beam_args(processes)[1:3] == ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def test_no_beam_args_of_the_project_make_tfx_build_an_sdist_of_itself(tmp_path, monkeypatch):
    """TFX attaches an sdist of itself to Beam args that name no worker image, built again at every
    Beam executor's start (3 s) and left in the temp dir (49 MB each): every runner's args here,
    and the tests' own, name one."""
    from tfx.utils import dependency_utils

    from conftest import TEST_BEAM_ARGS
    from pipelines.local_runner import local_beam_args

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    bare = ["--runner=FnApiRunner", "--direct_running_mode=in_memory"]
    assert dependency_utils.make_beam_dependency_flags(bare)[-1].startswith(f"--extra_package={tmp_path}/")
    built = list(tmp_path.iterdir())
    runners = [load_config(image=IMAGE, **changes) for _, changes in VARIANTS.values()]
    for args in (TEST_BEAM_ARGS, local_beam_args(load_config()), *map(kfp_compile.beam_args, runners)):
        assert dependency_utils.make_beam_dependency_flags(args) == args
    assert list(tmp_path.iterdir()) == built


def test_statistics_gen_asks_the_direct_runner_for_one_worker_unless_the_count_is_named(compiled, tmp_path):
    """TFDV's stages are set up again by every DirectRunner worker: StatisticsGen's own Beam argument,
    after the pipeline's (the last wins), asks for one where the config leaves the count to Beam
    (0); the other Beam steps keep the pipeline's, and a named count or another runner is left as
    it is."""
    default = Package.read(kfp_compile.compile_kubeflow(load_config(kfp_pipeline_root=BUCKET),
                                                        str(tmp_path / "default.yaml")))
    named = Package.read(kfp_compile.compile_kubeflow(load_config(kfp_pipeline_root=BUCKET, beam_direct_workers=2),
                                                      str(tmp_path / "named.yaml")))

    def workers(package: Package, task_id: str) -> list[str]:
        return [arg for arg in _container(package, task_id)["args"] if arg.startswith("--direct_num_workers")]

    assert workers(default, "StatisticsGen") == ["--direct_num_workers=0", "--direct_num_workers=1"]
    assert workers(default, "ImageValidator") == workers(default, "MnistExampleGen") == ["--direct_num_workers=0"]
    assert workers(named, "StatisticsGen") == ["--direct_num_workers=2"]
    flink = Package.read(compiled["kubeflow_workers_flink"])
    assert workers(flink, "StatisticsGen") == []


def test_a_package_whose_beam_pods_would_start_a_worker_per_node_core_is_refused(tmp_path, capsys):
    """Beam's workers 0 is multiprocessing.cpu_count(): in a pod, the node's cores. A local run may
    ask for it; a package may not, and nothing is written."""
    from pipelines import cli
    from pipelines.local_runner import local_beam_args

    settings = ["--beam-direct-running-mode", "multi_processing", "--beam-direct-workers", "0"]
    out = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "--output", str(out), *settings]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: cannot compile {out}: beam_direct_running_mode multi_processing with "
                            "beam_direct_workers 0"), error
    assert "the node's cores" in error and not out.exists()
    cfg = load_config(beam_direct_running_mode="multi_processing", beam_direct_workers=0)
    assert "--direct_num_workers=0" in local_beam_args(cfg)
    assert cli.main(["compile", "--output", str(out), *settings[:-1], "2"]) == 0
    assert "--direct_num_workers=2" in out.read_text()


@pytest.mark.parametrize("settings, message", [
    ({"kfp_trainer_workers": 0}, "kfp_trainer_workers must be 1..64, got 0"),
    ({"kfp_target": "vertex", "kfp_trainer_workers": 2}, "launches a Vertex AI CustomJob per trainer: set "
                                                         "gcp_project, gcp_region"),
    ({"kfp_trainer_workers": 3}, "batch_size 128 does not split evenly over kfp_trainer_workers 3"),
    ({"kfp_trainer_workers": 2, "kfp_accelerator": "tpu"}, "multi-worker trainers run on CPUs or GPUs"),
    ({"beam_runner": "spark"}, "beam_runner 'spark' is not direct, dataflow or flink"),
    ({"beam_runner": "dataflow", "gcp_project": "p", "gcp_region": "r"}, "needs dataflow_temp_location, a gs:// "
                                                                         "folder, got ''"),
    ({"beam_runner": "flink", "flink_job_endpoint": "jobserver"}, "needs flink_job_endpoint, host:port"),
])
def test_cluster_settings_are_checked_at_load(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        load_config(**settings)


def test_local_runs_stay_on_the_direct_runner():
    from pipelines.local_runner import local_beam_args

    cfg = load_config(beam_runner="flink", flink_job_endpoint="jobserver:8099")
    assert local_beam_args(cfg)[0] == "--runner=FnApiRunner"


def _edited(path: Path, tmp_path: Path, change) -> Path:
    package = Package.read(path)
    package.spec = copy.deepcopy(package.spec)
    change(package)
    package.path = str(tmp_path / "edited.yaml")
    package.write()
    return Path(package.path)


def _edit_custom_config(task_id: str, edit):
    def change(package):
        parameter = package.tasks[task_id]["inputs"]["parameters"]["custom_config"]["runtimeValue"]
        config = json.loads(parameter["constant"])
        edit(config)
        parameter["constant"] = json.dumps(config)
    return change


def _edit_args(task_id: str, edit):
    def change(package):
        container = _container(package, task_id)
        container["args"] = edit(container["args"])
    return change


def _pools(config):
    return config["ai_platform_training_args"]["job_spec"]["worker_pool_specs"]


BROKEN = {
    "pool_image": ("vertex_workers_dataflow", "vertex", _edit_custom_config(
        "keras_trainer", lambda c: _pools(c)[1]["container_spec"].update(image_uri="gcr.io/x/other:1")),
        "task keras_trainer: pool 1 runs image 'gcr.io/x/other:1', not the executor's"),
    "two_chiefs": ("vertex_workers_dataflow", "vertex", _edit_custom_config(
        "pytorch_trainer", lambda c: _pools(c)[0].update(replica_count=2)),
        "task pytorch_trainer: pool 0 (the chief) has 2 replicas, not 1"),
    "kubernetes_accelerator_in_pool": ("vertex_workers_dataflow", "vertex", _edit_custom_config(
        "keras_trainer", lambda c: _pools(c)[0]["machine_spec"].update(accelerator_type="nvidia.com/gpu")),
        "pool 0 accelerator 'nvidia.com/gpu' is not valid on Vertex AI"),
    "placeholder_project": ("vertex_workers_dataflow", "vertex", _edit_custom_config(
        "keras_trainer", lambda c: c["ai_platform_training_args"].update(project="YOUR-PROJECT")),
        "ai_platform_training_args project 'YOUR-PROJECT' is not a project"),
    "vertex_job_on_kubeflow": ("vertex_workers_dataflow", "kubeflow", lambda p: None,
                               "task keras_trainer: a multi-worker trainer compiled for vertex, not kubeflow"),
    "missing_temp_location": ("vertex_workers_dataflow", "vertex", _edit_args(
        "StatisticsGen", lambda args: [a for a in args if not a.startswith("--temp_location")]),
        "executor StatisticsGen_executor: Beam runner DataflowRunner needs --temp_location, a gs:// folder"),
    "dataflow_other_image": ("vertex_workers_dataflow", "vertex", _edit_args(
        "StatisticsGen", lambda args: [*args, "--sdk_container_image=apache/beam_python3.10_sdk:2.74.0"]),
        "--sdk_container_image 'apache/beam_python3.10_sdk:2.74.0' is not the executor's image"),
    "unknown_runner": ("kubeflow_workers_flink", "kubeflow", _edit_args(
        "MnistExampleGen", lambda args: [*args, "--runner=SparkRunner"]),
        "executor MnistExampleGen_executor: Beam runner SparkRunner is not one we support"),
    "flink_without_endpoint": ("kubeflow_workers_flink", "kubeflow", _edit_args(
        "DriftValidator", lambda args: [a for a in args if not a.startswith("--job_endpoint")]),
        "Beam runner PortableRunner needs --job_endpoint host:port"),
    "job_image": ("kubeflow_workers_flink", "kubeflow", _edit_custom_config(
        "pytorch_trainer", lambda c: c[job.JOB_KEY].update(image="ghcr.io/x/other:2")),
        "task pytorch_trainer: the TrainJob's replicas run image 'ghcr.io/x/other:2', not the executor's"),
    "tf_job_image": ("kubeflow_workers_flink", "kubeflow", _edit_custom_config(
        "keras_trainer", lambda c: c[job.JOB_KEY].update(image="ghcr.io/x/other:3")),
        "task keras_trainer: the TFJob's replicas run image 'ghcr.io/x/other:3', not the executor's"),
    "job_kind": ("kubeflow_workers_flink", "kubeflow", _edit_custom_config(
        "keras_trainer", lambda c: c[job.JOB_KEY].update(kind="TrainJob", runtime="torch-distributed")),
        "run_fn trainers.keras_trainer.run_fn trains with TFJob's environment, not TrainJob's"),
    "tf_job_for_pytorch": ("kubeflow_workers_flink", "kubeflow", _edit_custom_config(
        "pytorch_trainer", lambda c: c[job.JOB_KEY].update(kind="TFJob", runtime="")),
        "run_fn trainers.torch_trainer.run_fn trains with TrainJob's environment, not TFJob's"),
    "train_job_without_runtime": ("kubeflow_workers_flink", "kubeflow", _edit_custom_config(
        "pytorch_trainer", lambda c: c[job.JOB_KEY].update(runtime="")),
        "task pytorch_trainer: custom_config kubeflow_training_job is not a training job: kubeflow_training_job: a "
        "TrainJob needs a runtime"),
    "v1_pytorch_job": ("kubeflow_workers_flink", "kubeflow", _edit_custom_config(
        "pytorch_trainer", lambda c: c[job.JOB_KEY].update(kind="PyTorchJob", runtime="")),
        "kind PyTorchJob (the v1 training operator) is replaced by Kubeflow Trainer v2's TrainJob: recompile"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_presubmit_names_the_cluster_problem(compiled, tmp_path, case):
    variant, target, change, expected = BROKEN[case]
    path = _edited(compiled[variant], tmp_path, change)
    problems = presubmit_problems(path, target)
    assert any(expected in p and p.startswith(f"{path}: ") for p in problems), problems


def test_dataflow_needs_a_cloud_storage_root_and_flink_warns_of_an_s3_one(compiled):
    problems = presubmit_problems(compiled["vertex_workers_dataflow"], "vertex", pipeline_root="s3://b/root")
    assert any("Beam runner DataflowRunner cannot reach the pipeline root 's3://b/root'" in p for p in problems)
    package = Package.read(compiled["kubeflow_workers_flink"])
    package.spec["defaultPipelineRoot"] = "minio://mlpipeline/root"
    from pipelines.kubeflow.presubmit import cluster_warnings

    assert any("get none of the step's AWS_* variables" in w for w in cluster_warnings(package))


def test_committed_package_is_single_container_and_direct():
    spec = yaml.safe_load_all(Path(kfp_compile.__file__).parents[2].joinpath("pipeline.yaml").read_text())
    text = json.dumps(next(spec))
    runners = set(re.findall(r"--runner=(\w+)", text))
    assert runners == {"FnApiRunner"} and "VertexExecutor" not in text and job.JOB_KEY not in text
