"""The KServe ServingRuntime for the project's MLServer image, and that image's entry point.

The rendered ServingRuntime is checked against KServe's own schema (serving/servingruntime.schema.json,
built from KServe's SDK by serving/kserve_schema.py) and what the image needs; an
InferenceService rendered with `--runtime` names it. The image's entry point
(`python -m serving.kserve_runtime serve`, its ENTRYPOINT) is run for real in the serving
environment on 127.0.0.1, on a folder laid out as KServe's storage initializer leaves a version's
run artifacts in /mnt/models (signed/ + manifest.sig): it serves the export, verified. The image
itself is not built here (serving/Dockerfile needs a Python 3.11 base image; see its header).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from components.kserve_deployer import inference_service as kserve
from components.registry import ModelVersion
from serving import client, kserve_runtime
from serving import server as mlserver
from tests import serving_helpers as helpers
from trainers import loader, manifest, model_format

IMAGE = "registry.example/mnist-mlserver:0123456789ab"


def test_the_serving_runtime_is_valid_and_runs_the_verifying_image():
    runtime = kserve_runtime.serving_runtime(IMAGE, namespace="models")
    kserve_runtime.validate(runtime)
    kserve_runtime.validate(yaml.safe_load(kserve_runtime.to_yaml(runtime)))  # as kubectl would read it
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["kind"] == "ServingRuntime"
    assert runtime["metadata"]["name"] == "mnist-mlserver-verified" and runtime["metadata"]["namespace"] == "models"
    spec = runtime["spec"]
    assert spec["supportedModelFormats"] == [{"name": "mlflow", "version": "2", "autoSelect": False}]
    assert spec["protocolVersions"] == ["v2"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container" and container["image"] == IMAGE
    args = container["args"]
    assert args[args.index("--model-name") + 1] == "{{.Name}}" and args[args.index("--model-dir") + 1] == "/mnt/models"
    key_file = args[args.index("--public-key-file") + 1]
    assert container["securityContext"]["runAsNonRoot"] is True and container["securityContext"]["runAsUser"] == 1000
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert key_file.startswith(mounts["model-signing-key"] + "/")
    assert volumes["model-signing-key"]["secret"]["secretName"] == "mnist-model-signing-public"
    assert mounts["tmp"] == "/tmp" and "emptyDir" in volumes["tmp"]


@pytest.mark.parametrize("what, change", [
    ("containers", lambda r: r["spec"].pop("containers")),
    ("supportedModelFormat", lambda r: r["spec"].update(supportedModelFormat=[{"name": "mlflow"}])),  # misspelt
    ("autoSelect", lambda r: r["spec"]["supportedModelFormats"][0].update(autoSelect="no")),
    ("apiVersion", lambda r: r.update(apiVersion="serving.kserve.io/v1beta1")),
    ("runAsNonRoot", lambda r: r["spec"]["containers"][0]["securityContext"].update(runAsNonRoot=False)),
    ("kserve-container", lambda r: r["spec"]["containers"][0].update(name="server")),
    ("public-key-file", lambda r: r["spec"]["containers"][0].update(args=["--model-name", "x"])),
    ("DNS-1123", lambda r: r["metadata"].update(name="Mnist_Runtime")),
])
def test_a_broken_serving_runtime_is_refused(what, change):
    runtime = kserve_runtime.serving_runtime(IMAGE)
    change(runtime)
    with pytest.raises(kserve_runtime.RenderError, match="not a valid KServe ServingRuntime") as error:
        kserve_runtime.validate(runtime)
    assert what in str(error.value) or what == "containers", str(error.value)


def test_an_inference_service_names_the_runtime_with_runtime():
    version = ModelVersion(helpers.NAME, "3", {}, ("champion",))
    isvc = kserve.inference_service(helpers.NAME, version, "s3://mlflow/artifacts/1/abc/artifacts",
                                    runtime=kserve_runtime.DEFAULT_NAME)
    kserve.validate(isvc)
    model = isvc["spec"]["predictor"]["model"]
    assert model["runtime"] == kserve_runtime.DEFAULT_NAME
    served_formats = kserve_runtime.serving_runtime(IMAGE)["spec"]["supportedModelFormats"]
    assert model["modelFormat"]["name"] in [f["name"] for f in served_formats]


def test_the_dockerfile_builds_the_locked_environment_as_a_non_root_user():
    text = (Path(mlserver.SERVING_DIR) / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#")
                    and not line.startswith(" ")]
    assert "--require-hashes" in text and "--no-deps" in text and "-r /opt/mnist-serving/requirements.lock" in text
    users = [rest for word, rest in instructions if word == "USER"]
    assert users == ["1000"], users
    entry = [rest for word, rest in instructions if word == "ENTRYPOINT"]
    assert entry == ['["python", "-m", "serving.kserve_runtime", "serve"]'], entry
    copied = [rest for word, rest in instructions if word == "COPY"]
    assert "serving/ /opt/mnist-serving/code/serving/" in copied
    assert "trainers/ /opt/mnist-serving/code/trainers/" in copied


def test_the_image_entry_point_serves_a_verified_version_from_its_model_folder(small_models, small_examples,
                                                                              tmp_path):
    """`serve` as the image runs it (args of the ServingRuntime, /mnt/models here a local folder),
    in the serving environment on 127.0.0.1."""
    private, public = manifest.generate_key_pair()
    models = tmp_path / "mnt-models"  # a version's run artifacts as the storage initializer leaves them
    export = models / model_format.SIGNED_DIR / model_format.EXPORT_IN_SIGNED
    shutil.copytree(small_models["keras_model"] / "Format-Serving", export)
    helpers.sign(str(models / model_format.SIGNED_DIR), private)
    (tmp_path / "key").mkdir()
    (tmp_path / "key" / "public.pem").write_bytes(public)
    http_port, grpc_port, metrics_port = mlserver.free_ports(3)
    runtime_args = kserve_runtime.serving_runtime(IMAGE)["spec"]["containers"][0]["args"]
    args = [a.replace("{{.Name}}", helpers.NAME).replace("/mnt/models", str(models))
            .replace(f"{kserve_runtime.KEY_DIR}/", f"{tmp_path}/key/") for a in runtime_args]
    for flag, value in (("--http-port", http_port), ("--grpc-port", grpc_port), ("--metrics-port", metrics_port)):
        args[args.index(flag) + 1] = str(value)
    venv = mlserver.serving_venv()
    work = tmp_path / "work"
    env = {**os.environ, "PYTHONPATH": mlserver.serving_pythonpath(str(work)), "HOME": str(work), "TMPDIR": str(work)}
    log = open(tmp_path / "entry.log", "wb")  # noqa: SIM115 (the child holds it)
    process = subprocess.Popen([os.path.join(venv, "bin", "python"), "-m", "serving.kserve_runtime", "serve", *args,
                                "--host", "127.0.0.1"], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{url}/v2/models/{helpers.NAME}/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "entry.log").read_text()[-3000:]
            time.sleep(0.5)
        images = helpers.images_of(small_examples, 16)
        served = client.infer_rest(f"{url}/v2/models/{helpers.NAME}/infer", images)
        expected = loader.load_predictor(str(small_models["keras_model"] / "Format-Serving"))[0](images)
        assert abs(served - expected).max() <= 1e-5
        status, answer = client.post(f"{url}/v2/repository/models/{helpers.NAME}/unload", b"")
        assert status == 403, answer
        log_text = (tmp_path / "entry.log").read_text()
        assert f"{helpers.NAME} ({models}): signed files verified" in log_text, log_text[-2000:]
        settings = json.loads(next(work.glob("mnist-mlserver-*/mnist-digits/model-settings.json")).read_text())
        assert settings["implementation"] == "serving.runtime.MnistRuntime"
        assert settings["parameters"]["uri"] == str(models) and "version" not in settings["parameters"]
        assert settings["parameters"]["extra"]["public_key_file"] == f"{tmp_path}/key/public.pem"
    finally:
        mlserver._kill_group(process.pid)
        process.wait(30)
