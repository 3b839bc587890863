"""Untrusted files and config: a pickle where a model is expected is refused without being run,
YAML tags that construct Python objects are refused, names and output paths from config are
checked, and registry URIs carrying credentials are refused without echoing them.

Every malicious file here carries a live payload (the first test runs each one through the
unsafe loader to prove it creates its sentinel file); the other tests assert that the safe
loaders raise a clear error and that the sentinel was never created.
"""

from __future__ import annotations

import glob
import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from components import examples as example_data
from components.registry import MlflowRegistry, RegistryError, embedded_uri
from conftest import run_evaluator
from pipelines import cli
from pipelines.config import load_config
from trainers import loader, savedmodel_ops
from trainers.loader import UntrustedModelError


class Payload:
    """Unpickled, it runs `touch SENTINEL` (os.system), as a malicious model file would."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch '{self.sentinel}'",)


def raw_pickle(sentinel: Path) -> bytes:
    return pickle.dumps({"model": Payload(sentinel)}, protocol=4)


def torch_saved(sentinel: Path, path: Path) -> bytes:
    torch.save({"weight": torch.zeros(2), "evil": Payload(sentinel)}, path)
    return path.read_bytes()


def torchscript_with_evil_pickles(tmp_path: Path, sentinel: Path) -> bytes:
    """A real TorchScript archive (its code and all) whose data.pkl and constants.pkl are replaced by the payload."""
    real = tmp_path / "real-torchscript.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), real)
    out = tmp_path / "evil-archive.zip"
    with zipfile.ZipFile(real) as src, zipfile.ZipFile(out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name.endswith(("/data.pkl", "/constants.pkl")):
                data = pickle.dumps(Payload(sentinel), protocol=2)
            dst.writestr(name, data)
    return out.read_bytes()


@pytest.fixture
def exports(small_models, tmp_path) -> dict[str, Path]:
    """Copies of the real Keras and PyTorch exports, each as a Model artifact folder."""
    out = {}
    for framework, candidate in (("keras", "keras_model"), ("pytorch", "pytorch_model")):
        root = tmp_path / f"{framework}-model"
        shutil.copytree(small_models[candidate] / "Format-Serving", root / "Format-Serving")
        out[framework] = root
    return out


def test_the_payloads_are_live(tmp_path):
    """Control: loaded unsafely, each malicious file runs its code (so the refusals below mean something)."""
    first, second, third = tmp_path / "ran-pickle", tmp_path / "ran-torch-save", tmp_path / "ran-yaml"
    pickle.loads(raw_pickle(first))
    assert first.exists()
    torch_saved(second, tmp_path / "evil.pt")
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert second.exists()
    yaml.unsafe_load(f"epochs: !!python/object/apply:os.system [\"touch '{third}'\"]\n")
    assert third.exists()


def test_real_exports_pass_the_checks(exports):
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    for framework, root in exports.items():
        predict, meta = loader.load_predictor(str(root / "Format-Serving"))
        assert meta["framework"] == framework
        assert predict(images).shape == (2, 10)
    assert not list((exports["pytorch"] / "Format-Serving").glob("model.pt"))  # no TorchScript exported


CASES = {
    # name: (framework, file replaced, how it is made, expected error)
    "pytorch-raw-pickle": ("pytorch", "state_dict.pt", "pickle",
                           r"state_dict\.pt: is a Python pickle \(protocol 4\), not a state dict"),
    "pytorch-torch-save": ("pytorch", "state_dict.pt", "torch_save",
                           r"state_dict\.pt: holds Python objects other than tensors.*posix\.system"),
    "pytorch-torchscript-with-evil-pickles": ("pytorch", "state_dict.pt", "evil_torchscript",
                                              r"state_dict\.pt: is a TorchScript archive \(it carries code\)"),
    "pytorch-not-torch": ("pytorch", "state_dict.pt", "junk",
                          r"state_dict\.pt: is not a state dict \(torch\.save writes a zip archive\)"),
    "keras-raw-pickle": ("keras", "saved_model.pb", "pickle",
                         r"saved_model\.pb: is a Python pickle \(protocol 4\), not a SavedModel"),
    "keras-torch-save": ("keras", "saved_model.pb", "torch_save",
                         r"saved_model\.pb: is a torch\.save archive .*not a SavedModel"),
    "keras-not-a-protobuf": ("keras", "saved_model.pb", "junk", r"saved_model\.pb: is not a SavedModel protobuf"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_malicious_file_where_the_model_is_expected_is_refused(exports, tmp_path, case):
    framework, name, kind, error = CASES[case]
    model_dir = exports[framework] / "Format-Serving"
    target = model_dir / name
    assert target.is_file()  # the real export has this file: the malicious one takes its place
    sentinel = tmp_path / "sentinel"
    if kind == "pickle":
        content = raw_pickle(sentinel)
    elif kind == "torch_save":
        content = torch_saved(sentinel, tmp_path / "evil.pt")
    elif kind == "evil_torchscript":
        content = torchscript_with_evil_pickles(tmp_path, sentinel)
    else:
        content = b"\x00\xff not a protobuf \xff" * 8
    target.write_bytes(content)
    with pytest.raises(UntrustedModelError, match=error) as err:
        loader.load_predictor(str(model_dir))
    assert str(target) in str(err.value) and "\n" not in str(err.value)
    assert not sentinel.exists()


def test_metadata_pointing_outside_the_model_folder_is_refused(exports, tmp_path):
    model_dir = exports["pytorch"] / "Format-Serving"
    meta_path = model_dir / "model_meta.json"
    meta = json.loads(meta_path.read_text())
    shutil.copy(model_dir / "state_dict.pt", tmp_path / "outside.pt")  # a valid model, but outside the folder
    for name in ("../outside.pt", str(tmp_path / "outside.pt"), ".."):
        meta_path.write_text(json.dumps({**meta, "file": name}))
        with pytest.raises(UntrustedModelError, match="only a plain file name inside the model folder"):
            loader.load_predictor(str(model_dir))
    meta_path.write_text(json.dumps({**meta, "model": "resnet"}))
    with pytest.raises(UntrustedModelError, match="names the architecture 'resnet', not one of"):
        loader.load_predictor(str(model_dir))


def test_state_dicts_load_weights_only(exports, tmp_path):
    real = loader.load_state_dict(str(exports["pytorch"] / "Format-Serving" / "state_dict.pt"))
    assert real and all(isinstance(v, torch.Tensor) for v in real.values())
    sentinel = tmp_path / "sentinel"
    evil = tmp_path / "state_dict.pt"
    torch_saved(sentinel, evil)
    with pytest.raises(UntrustedModelError, match=r"state_dict\.pt: holds Python objects.*posix\.system"):
        loader.load_state_dict(str(evil))
    evil.write_bytes(raw_pickle(sentinel))
    with pytest.raises(UntrustedModelError, match=r"state_dict\.pt: is a Python pickle"):
        loader.load_state_dict(str(evil))
    assert not sentinel.exists()


def test_a_state_dict_that_does_not_fit_the_architecture_is_refused(exports, small_models, tmp_path):
    """The weights go into the architecture of the installed trainers/torch_model.py: other keys or
    shapes are refused in one line, before any weight is used."""
    model_dir = exports["pytorch"] / "Format-Serving"
    meta_path, state_path = model_dir / "model_meta.json", model_dir / "state_dict.pt"
    meta = json.loads(meta_path.read_text())
    assert meta["model"] == "seed_cnn" and meta["format"] == "state_dict"
    meta_path.write_text(json.dumps({**meta, "model": "bn_cnn"}))
    with pytest.raises(UntrustedModelError, match=r"state_dict\.pt: does not fit bn_cnn with 10 classes "
                       r"\(trainers/torch_model\.py\): missing: .*; unexpected: 1\.bias, 5\.bias"):
        loader.load_predictor(str(model_dir))
    meta_path.write_text(json.dumps({**meta, "num_classes": 5}))
    with pytest.raises(UntrustedModelError, match=r"Format-Serving: model metadata gives 5 classes but names 10$"):
        loader.load_predictor(str(model_dir))
    meta_path.write_text(json.dumps({**meta, "num_classes": 5, "class_names": list("abcde")}))
    with pytest.raises(UntrustedModelError, match=r"does not fit seed_cnn with 5 classes .*other shapes: "
                       r"5\.bias \[10\] \(architecture \[5\]\), 5\.weight \[10, 5408\] \(architecture \[5, 5408\]\)$"):
        loader.load_predictor(str(model_dir))
    meta_path.write_text(json.dumps(meta))
    state = torch.load(state_path, weights_only=True)
    torch.save({**state, "extra.weight": torch.zeros(3)}, state_path)
    with pytest.raises(UntrustedModelError, match=r"does not fit seed_cnn with 10 classes .*: unexpected: "
                       r"extra\.weight$"):
        loader.load_predictor(str(model_dir))


def test_an_older_torchscript_export_loads_through_its_state_dict(exports, tmp_path):
    """An export of the TorchScript format (model.pt beside state_dict.pt): its state dict is
    loaded, its model.pt never (here a live pickle payload: loading it in any way would run it)."""
    model_dir = exports["pytorch"] / "Format-Serving"
    expected = loader.load_predictor(str(model_dir))[0]
    meta = json.loads((model_dir / "model_meta.json").read_text())
    old = {key: value for key, value in meta.items() if key not in ("num_classes", "class_names")}
    old.update({"format": "torchscript", "file": "model.pt", "state_dict": "state_dict.pt"})
    (model_dir / "model_meta.json").write_text(json.dumps(old))
    sentinel = tmp_path / "sentinel"
    (model_dir / "model.pt").write_bytes(raw_pickle(sentinel))
    predict, _ = loader.load_predictor(str(model_dir))
    images = np.random.default_rng(0).integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    np.testing.assert_array_equal(predict(images), expected(images))
    assert not sentinel.exists()
    (model_dir / "model_meta.json").write_text(json.dumps({**old, "state_dict": None}))
    with pytest.raises(UntrustedModelError, match="a TorchScript export without a state dict; TorchScript is never"):
        loader.load_predictor(str(model_dir))


# --- SavedModels whose graph does what no export of the project does --------------------------
def hostile_saved_model(folder: Path, payload) -> Path:
    """A real SavedModel served as the project's are: `serve` (and the serving_default signature)
    takes uint8 images [N, 28, 28] and returns plausible probabilities [N, 10] (a softmax over a
    linear layer), after the payload ran. `payload(images)` returns an op or a [10] tensor added
    to the logits. Apart from the payload, only ops of the allowlist. With a Keras model's
    metadata beside it, as the loader expects."""
    import tensorflow as tf

    class Hostile(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weights = tf.Variable(tf.random.stateless_normal([784, 10], seed=[1, 2]) * 0.01)

        @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8)])
        def serve(self, images):
            logits = tf.reshape(tf.cast(images, tf.float32) * (1 / 255), [-1, 784]) @ self.weights
            effect = payload(images)
            if isinstance(effect, tf.Operation):
                with tf.control_dependencies([effect]):
                    return tf.nn.softmax(tf.identity(logits))
            return tf.nn.softmax(logits + effect)

    module = Hostile()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    (folder / "model_meta.json").write_text(json.dumps({"framework": "keras", "format": "tf_saved_model",
                                                        "model": "bn_cnn"}))
    return folder


def _one_hot_of(count):
    """[10] logits that make class `count % 10` win: what the model read shows in its answer."""
    import tensorflow as tf

    return 100.0 * tf.one_hot(tf.cast(count, tf.int32) % 10, 10)


def _write_file(target: Path):
    import tensorflow as tf

    return lambda images: tf.io.write_file(str(target), "pwned")


def _write_file_in_a_branch(target: Path):
    """The write hidden in a tf.cond branch: a function of the library called by an If op."""
    import tensorflow as tf

    def payload(images):
        def write():
            with tf.control_dependencies([tf.io.write_file(str(target), "pwned")]):
                return tf.constant(0.0)
        return tf.zeros([10]) + tf.cond(tf.cast(tf.shape(images)[0], tf.bool), write, lambda: tf.constant(0.0))
    return payload


def _save_v2(prefix: Path):
    """tf.raw_ops.SaveV2 in the serving function: the served images, to a checkpoint of the author's choosing."""
    import tensorflow as tf

    return lambda images: tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=["stolen"], shape_and_slices=[""],
                                            tensors=[images])


def _read_file(secret: Path):
    import tensorflow as tf

    return lambda images: _one_hot_of(tf.strings.length(tf.io.read_file(str(secret))))


def _matching_files(folder: Path):
    import tensorflow as tf

    return lambda images: _one_hot_of(tf.size(tf.io.matching_files(str(folder / "*"))))


IMAGES = np.zeros((3, 28, 28), dtype=np.uint8)


def _prove_write(model_dir: Path, target: Path) -> None:
    import tensorflow as tf

    served = tf.saved_model.load(str(model_dir))
    probabilities = served.serve(IMAGES).numpy()
    assert probabilities.shape == (3, 10) and np.allclose(probabilities.sum(1), 1.0)
    assert target.exists()
    target.unlink()


@pytest.mark.parametrize("payload, refused", [
    ("write_file", r"WriteFile in function __inference_serve_\d+"),
    # the function of the branch is walked too; the If op calling it is no op of the exports either
    ("write_file_in_a_branch", r"If in function __inference_serve_\d+; WriteFile in function cond_true_\d+"),
])
def test_a_saved_model_that_writes_a_file_is_refused(tmp_path, payload, refused):
    marker = tmp_path / "marker"
    make = {"write_file": _write_file, "write_file_in_a_branch": _write_file_in_a_branch}[payload]
    model_dir = hostile_saved_model(tmp_path / "model", make(marker))
    _prove_write(model_dir, marker)  # control: TensorFlow's own loader runs it
    with pytest.raises(UntrustedModelError, match=rf"^{model_dir}/saved_model\.pb: holds TensorFlow ops that this "
                       rf"project's exports never use, refused before loading: {refused} \(allowed: "
                       r"trainers/savedmodel_allowlist\.py\)$") as err:
        loader.load_predictor(str(model_dir))
    assert "\n" not in str(err.value) and not marker.exists()


def test_a_saved_model_whose_serving_function_saves_a_checkpoint_is_refused(tmp_path):
    """SaveV2 is allowed in the saver's own functions only: here the serving function calls it."""
    import tensorflow as tf

    stolen = tmp_path / "elsewhere" / "stolen"
    model_dir = hostile_saved_model(tmp_path / "model", _save_v2(stolen))
    served = tf.saved_model.load(str(model_dir))
    served.serve(IMAGES + 7)
    np.testing.assert_array_equal(tf.train.load_checkpoint(str(stolen)).get_tensor("stolen"), IMAGES + 7)
    shutil.rmtree(stolen.parent)
    # The saver's own functions hold SaveV2 too, and are not refused.
    assert "SaveV2" in {op for place, ops in savedmodel_ops.ops_by_place(
        savedmodel_ops.read_saved_model(str(model_dir)).meta_graphs[0]).items() if "traced_save" in place for op in ops}
    with pytest.raises(UntrustedModelError, match=r"saved_model\.pb: .* refused before loading: SaveV2 in function "
                       r"__inference_serve_\d+ \(allowed: trainers/savedmodel_allowlist\.py\)$"):
        loader.load_predictor(str(model_dir))
    assert not stolen.parent.exists()


def test_a_signature_that_points_at_the_saver_loses_the_savers_allowance(tmp_path):
    """SaveV2 is the saver's only while nothing but the saver reaches it: a serving signature whose
    output is the saver's save op (what a TF1 loader, TF Serving, runs) makes its SaveV2 refused."""
    import tensorflow as tf

    model_dir = hostile_saved_model(tmp_path / "model", lambda images: tf.zeros([10]))
    assert loader.load_predictor(str(model_dir))[0](IMAGES).shape == (3, 10)  # harmless as saved
    saved_model = savedmodel_ops.read_saved_model(str(model_dir))
    meta_graph = saved_model.meta_graphs[0]
    meta_graph.signature_def["serving_default"].outputs["output_0"].name = meta_graph.saver_def.save_tensor_name
    (model_dir / "saved_model.pb").write_bytes(saved_model.SerializeToString())
    with pytest.raises(UntrustedModelError, match=r"refused before loading: DisableCopyOnRead in function "
                       r"__inference__traced_save_\d+; MergeV2Checkpoints in function __inference__traced_save_\d+; "
                       r"SaveV2 in function __inference__traced_save_\d+; Select in"):
        loader.load_predictor(str(model_dir))


@pytest.mark.parametrize("op", ["ReadFile", "MatchingFiles"])
def test_a_saved_model_that_reads_files_is_refused(tmp_path, op):
    """What the model reads shows in its answer (the winning class is the file's length, or the
    folder's file count, modulo 10): proven live, then refused."""
    import tensorflow as tf

    secrets = tmp_path / "secrets"
    secrets.mkdir()
    secret = secrets / "token"
    payload = _read_file(secret) if op == "ReadFile" else _matching_files(secrets)
    model_dir = hostile_saved_model(tmp_path / "model", payload)
    for count in (3, 7):  # a secret of `count` bytes, or a folder of `count` files
        if op == "ReadFile":
            secret.write_text("x" * count)
        else:
            for i in range(count):
                (secrets / f"f{i}").touch()
        served = tf.saved_model.load(str(model_dir))  # a fresh load: a loaded function reads a file once
        assert set(served.serve(IMAGES).numpy().argmax(1)) == {count}
    with pytest.raises(UntrustedModelError, match=rf"{op} in function __inference_serve_\d+"):
        loader.load_predictor(str(model_dir))


def test_the_allowlist_is_what_the_projects_keras_exports_need(tmp_path):
    """Fresh exports of every Keras model (float32 and mixed_bfloat16) hold exactly the checked-in
    allowlist (trainers.savedmodel_ops.write_allowlist() rewrites it) and load; it holds no op that
    TensorFlow's `saved_model_cli scan` or ProtectAI's modelscan deny, and the checkpoint ops only
    for the saver."""
    from tensorflow.python.tools import saved_model_cli

    from trainers import savedmodel_allowlist

    model_dirs = savedmodel_ops.export_project_models(str(tmp_path))
    assert savedmodel_ops.derive_allowlist(model_dirs) == (savedmodel_allowlist.EXPORT_OPS,
                                                            savedmodel_allowlist.SAVER_OPS), \
        "the exports changed: rewrite the allowlist with trainers.savedmodel_ops.write_allowlist() and review it"
    denied = saved_model_cli._OP_DENYLIST | {"MatchingFiles", "PyFunc", "PyFuncStateless", "EagerPyFunc",
                                             "WholeFileReader", "WholeFileReaderV2", "ImmutableConst"}
    assert not denied & (savedmodel_allowlist.EXPORT_OPS | savedmodel_allowlist.SAVER_OPS)
    assert not {"SaveV2", "RestoreV2", "MergeV2Checkpoints"} & savedmodel_allowlist.EXPORT_OPS
    for model_dir in model_dirs:
        Path(model_dir, "model_meta.json").write_text(json.dumps({"framework": "keras"}))
        probabilities = loader.load_predictor(model_dir)[0](IMAGES)
        assert probabilities.shape == (3, 10) and np.allclose(probabilities.sum(1), 1.0, atol=1e-3)


def test_the_evaluator_refuses_a_malicious_candidate(small_examples, exports, tmp_path):
    sentinel = tmp_path / "sentinel"
    (exports["pytorch"] / "Format-Serving" / "state_dict.pt").write_bytes(raw_pickle(sentinel))
    (tmp_path / "eval").mkdir()
    with pytest.raises(Exception, match=r"UntrustedModelError|is a Python pickle") as err:
        run_evaluator(small_examples, {"keras_model": exports["keras"], "pytorch_model": exports["pytorch"]},
                      tmp_path / "eval", min_accuracy=0.0)
    assert "state_dict.pt: is a Python pickle" in str(err.value)
    assert not sentinel.exists()
    assert not (tmp_path / "eval" / "evaluation" / "evaluation.json").exists()


def test_predict_runs_no_code_stored_in_the_registry(exports, small_examples, tmp_path, capsys):
    """`registry predict` loads the champion's files with the installed code, once they verify:
    code stored with the registered pyfunc is never run, and code changed in the artifact store
    (here to create a sentinel) is refused by name before anything is loaded."""
    name = "mnist-untrusted"
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, name)
    version = registry.register(str(exports["pytorch"] / "Format-Serving"), "pytorch", tags={}, metrics={})
    registry.promote(version.version)
    images, _ = example_data.load_split(small_examples, "test", limit=1)
    Image.fromarray(images[0]).save(tmp_path / "digit.png")
    argv = ["registry", "--registry-uri", uri, "--registered-model-name", name, "predict", str(tmp_path / "digit.png")]
    assert cli.main(argv) == 0
    answer = json.loads(capsys.readouterr().out)
    expected = loader.load_predictor(str(exports["pytorch"] / "Format-Serving"))[0](images)[0]
    assert answer["version"] == version.version and answer["digit"] == int(expected.argmax())

    stored = [p for p in glob.glob(str(tmp_path / "registry" / "artifacts" / "**" / "*.py"), recursive=True)
              if "MnistDigitModel" in Path(p).read_text()]
    assert stored, "the registered pyfunc's code was not found in the artifact store"
    sentinel = tmp_path / "sentinel"
    for path in stored:
        with open(path, "a") as f:
            f.write(f"\nopen({str(sentinel)!r}, 'w').close()\n")
    assert cli.main(argv) == 2
    (line,) = [entry for entry in capsys.readouterr().err.splitlines() if entry.startswith("error:")]
    assert line.startswith(f"error: {name} version {version.version}: file model/") and "was changed since it was " \
        "signed" in line and line.endswith("it is not loaded")
    assert not sentinel.exists()

    # Control: MLflow's pyfunc loader, which `predict` used before, does run the stored code.
    source = registry._client.get_model_version_download_uri(name, version.version)
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp_path / "dl"), tracking_uri=uri)
    mlflow.pyfunc.load_model(local)
    assert sentinel.exists()


def test_predict_refuses_a_malicious_champion(exports, tmp_path, capsys):
    name = "mnist-untrusted"
    uri = embedded_uri(str(tmp_path / "registry"))
    registry = MlflowRegistry(uri, name)
    sentinel = tmp_path / "sentinel"
    (exports["pytorch"] / "Format-Serving" / "state_dict.pt").write_bytes(raw_pickle(sentinel))
    registry.promote(registry.register(str(exports["pytorch"] / "Format-Serving"), "pytorch",
                                       tags={}, metrics={}).version)
    Image.fromarray(np.zeros((28, 28), dtype=np.uint8)).save(tmp_path / "digit.png")
    argv = ["registry", "--registry-uri", uri, "--registered-model-name", name, "predict", str(tmp_path / "digit.png")]
    assert cli.main(argv) == 2
    assert "state_dict.pt: is a Python pickle" in capsys.readouterr().err
    assert not sentinel.exists()


# --- configuration ----------------------------------------------------------------------------
def test_yaml_config_with_python_tags_is_refused(tmp_path):
    sentinel = tmp_path / "sentinel"
    for text in (f"epochs: !!python/object/apply:os.system [\"touch '{sentinel}'\"]\n",
                 f"!!python/object/apply:os.system [\"touch '{sentinel}'\"]\n",
                 f"class_names: !!python/object/new:subprocess.Popen [[\"touch\", \"{sentinel}\"]]\n"):
        path = tmp_path / "pipeline.yaml"
        path.write_text(text)
        with pytest.raises(yaml.constructor.ConstructorError, match="could not determine a constructor.*python/"):
            load_config(str(path))
    assert not sentinel.exists()


@pytest.mark.parametrize("field", ["pipeline_name", "registered_model_name"])
@pytest.mark.parametrize("bad", ["../evil", "a/b", "..", "x..y", "", ".hidden", "-flag", "a b", "a\\b",
                                 "a" * 129, "name\n"])
def test_unsafe_names_are_refused(tmp_path, field, bad):
    with pytest.raises(ValueError, match=rf"{field} .* is not a safe name"):
        load_config(output_root=str(tmp_path), **{field: bad})


def test_the_registry_refuses_a_name_with_a_trailing_newline(tmp_path):
    with pytest.raises(RegistryError, match="invalid registered model name 'mnist\\\\n'"):
        MlflowRegistry(embedded_uri(str(tmp_path)), "mnist\n")


def test_safe_names_are_accepted(tmp_path):
    cfg = load_config(output_root=str(tmp_path), pipeline_name="mnist-bakeoff", registered_model_name="Model_1.v2")
    assert cfg.registered_model_name == "Model_1.v2"
    config = tmp_path / "c.yaml"
    config.write_text("registered_model_name: ../../etc/passwd\n")
    with pytest.raises(ValueError, match="registered_model_name '../../etc/passwd' is not a safe name"):
        load_config(str(config))


@pytest.mark.parametrize("link", ["pipeline_root", "metadata.sqlite", "registry"])
def test_outputs_that_escape_output_root_through_a_symlink_are_refused(tmp_path, link):
    root, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    root.mkdir()
    elsewhere.mkdir()
    (root / link).symlink_to(elsewhere)
    with pytest.raises(ValueError, match=rf"resolves to {elsewhere}, outside output_root {root}"):
        load_config(output_root=str(root))


def test_symlinks_that_stay_inside_output_root_are_accepted(tmp_path):
    real_root, inside = tmp_path / "real-out", tmp_path / "real-out" / "roots" / "a"
    inside.mkdir(parents=True)
    (real_root / "pipeline_root").symlink_to(inside)
    (tmp_path / "out").symlink_to(real_root)  # output_root itself may be a link: it is the root
    cfg = load_config(output_root=str(tmp_path / "out"))
    assert os.path.realpath(cfg.pipeline_root) == str(inside)


@pytest.mark.parametrize("uri", ["http://alice:hunter2-secret@mlflow.example:5000",
                                 "https://hunter2-secret@mlflow.example",
                                 "postgresql://mlflow:hunter2-secret@db:5432/mlflow",
                                 "https://mlflow.example/?token=hunter2-secret"])
def test_registry_uris_with_credentials_are_refused_without_echoing_them(tmp_path, monkeypatch, uri):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or "
                                         "MLFLOW_TRACKING_TOKEN") as err:
        load_config(output_root=str(tmp_path), registry_uri=uri)
    assert "hunter2" not in str(err.value) and "registry_uri" in str(err.value)
    # The same URI from the environment (read by the command line, the edge): refused too.
    with pytest.raises(ValueError, match="MLFLOW_TRACKING_URI .* carries credentials") as err:
        cli.settings_from_environment({"MLFLOW_TRACKING_URI": uri})
    assert "hunter2" not in str(err.value)


def test_registry_uris_without_credentials_are_accepted(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    for uri in ("http://mlflow.mlflow.svc.cluster.local:5000", "https://mlflow.example/path?experiment=3",
                f"sqlite:///{tmp_path}/mlflow.db", ""):
        assert load_config(output_root=str(tmp_path), registry_uri=uri).registry_uri == uri
