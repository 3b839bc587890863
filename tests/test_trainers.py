"""Both trainers' real run_fn on small real data; their exports agree on interface and size."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trainers import common, keras_trainer, loader, machine, model_format, torch_model, torch_trainer

FIVE_CLASSES = ["zero", "one", "two", "three", "four"]


@pytest.mark.parametrize("name, classes, expected", [("seed_cnn", 10, 54_410), ("bn_cnn", 10, 165_746),
                                                     ("seed_cnn", 5, 54_410 - 5 * (5408 + 1)),
                                                     ("bn_cnn", 2, 165_746 - 8 * (128 + 1))])
def test_same_architecture_same_parameter_count(name, classes, expected):
    keras_params = keras_trainer.count_trainable(keras_trainer.build_model(name, classes))
    torch_params = torch_model.count_parameters(torch_model.build_model(name, classes))
    assert keras_params == torch_params == expected


def _keras_layer_sequence(model) -> list[str]:
    """Layer kinds in torch's names; a fused activation counts as its own layer, as in torch."""
    names = {"Conv2D": "Conv2d", "MaxPooling2D": "MaxPool2d", "BatchNormalization": "BatchNorm2d",
             "ReLU": "ReLU", "Flatten": "Flatten", "Dropout": "Dropout", "Dense": "Linear"}
    sequence = ["Normalize"]  # Rescaling + Reshape
    for layer in model.layers:
        if type(layer).__name__ in names:
            sequence.append(names[type(layer).__name__])
            if getattr(layer, "activation", None) is not None and layer.activation.__name__ == "relu":
                sequence.append("ReLU")
    return sequence


@pytest.mark.parametrize("name", common.MODEL_NAMES)
def test_same_layers_in_the_same_order(name):
    # The served Keras model ends in softmax; torch's trains on logits and its export adds softmax.
    # torch flattens inside MapLinear: the Identity stands where Flatten stood (the state dict's keys).
    as_keras = {"Identity": "Flatten", "MapLinear": "Linear"}
    torch_sequence = [as_keras.get(type(m).__name__, type(m).__name__) for m in torch_model.build_model(name)]
    assert _keras_layer_sequence(keras_trainer.build_model(name)) == torch_sequence


# Exports in registries were trained with these keys: an architecture that renames one cannot load them.
STATE_DICT_KEYS = {
    "seed_cnn": ["1.weight", "1.bias", "5.weight", "5.bias"],
    "bn_cnn": ["1.weight", "3.weight", "3.bias", "3.running_mean", "3.running_var", "3.num_batches_tracked",
               "5.weight", "7.weight", "7.bias", "7.running_mean", "7.running_var", "7.num_batches_tracked",
               "11.weight", "11.bias", "14.weight", "14.bias"],
}


@pytest.mark.parametrize("name", common.MODEL_NAMES)
def test_the_state_dict_keeps_the_keys_of_earlier_exports(name):
    assert list(torch_model.build_model(name).state_dict()) == STATE_DICT_KEYS[name]


@pytest.mark.parametrize("name", common.MODEL_NAMES)
def test_a_channels_last_model_computes_what_the_served_layout_computes(name):
    """MapLinear reads a channels-last map in place: the same logits and gradients as Flatten +
    Linear over the (C, H, W) features, which the loader's model (contiguous) computes."""
    import torch

    torch.manual_seed(0)
    served = torch_model.build_model(name).eval()
    trained = torch_model.placed(torch_model.build_model(name), torch.device("cpu")).eval()
    trained.load_state_dict(served.state_dict())
    images = torch.randint(0, 256, (16, *common.IMAGE_SHAPE), dtype=torch.uint8)
    served_logits, trained_logits = served(images), trained(images)
    # The feature map MapLinear is given: the layers up to the Identity that stands where Flatten was.
    features = trained[:[type(layer) for layer in trained].index(torch.nn.Identity) + 1](images)
    assert features.is_contiguous(memory_format=torch.channels_last) and not features.is_contiguous()
    torch.testing.assert_close(trained_logits, served_logits, rtol=1e-5, atol=1e-5)
    served_logits.square().sum().backward()
    trained_logits.square().sum().backward()
    for (key, served_param), trained_param in zip(served.named_parameters(), trained.parameters(), strict=True):
        torch.testing.assert_close(trained_param.grad, served_param.grad, rtol=1e-4, atol=1e-5, msg=key)


def _tf_shift(images: np.ndarray, seed: int) -> np.ndarray:
    import tensorflow as tf

    return common.shift_images(tf.constant(images), 2, tf.constant([seed, 3], tf.int64)).numpy()


def _torch_shift(images: np.ndarray, seed: int) -> np.ndarray:
    import torch

    return torch_model.shift_images(torch.from_numpy(images), 2, torch.Generator().manual_seed(seed)).numpy()


@pytest.mark.parametrize("shift", [_tf_shift, _torch_shift], ids=["tensorflow", "torch"])
def test_shift_images_moves_each_image_by_at_most_the_shift(shift):
    """The one augmentation in both frameworks (Keras' in tf.data, PyTorch's in torch)."""
    images = np.zeros((500, 28, 28), np.uint8)
    images[:, 10:18, 12:16] = (np.arange(500) % 250 + 1).astype(np.uint8)[:, None, None]
    shifted = shift(images, 7)
    assert shifted.shape == images.shape and shifted.dtype == np.uint8
    offsets = set()
    for before, after in zip(images, shifted, strict=True):
        rows, cols = np.nonzero(after)
        dy, dx = rows.min() - 10, cols.min() - 12
        assert -2 <= dy <= 2 and -2 <= dx <= 2
        np.testing.assert_array_equal(after[10 + dy:18 + dy, 12 + dx:16 + dx], before[10:18, 12:16])
        assert after.sum(dtype=np.int64) == before.sum(dtype=np.int64)  # only background moved out
        offsets.add((dy, dx))
    assert len(offsets) == 25  # every offset in [-2, 2]^2 occurs in 500 draws
    np.testing.assert_array_equal(shifted, shift(images, 7))
    assert not np.array_equal(shifted, shift(images, 8))
    # A digit at the border loses the pixels moved out, and nothing wraps around.
    edge = np.zeros((200, 28, 28), np.uint8)
    edge[:, :, 0] = 255
    moved = shift(edge, 7)
    assert moved[:, :, 26:].max() == 0 and moved.sum(dtype=np.int64) < edge.sum(dtype=np.int64)


def test_torch_batches_are_the_decoded_split_reshuffled_each_pass(small_examples):
    import torch

    pattern = [str(small_examples.uri) + "/Split-train/*"]
    images, labels = common.decode_split(pattern)
    plain_images, plain_labels = next(common.make_dataset(pattern, len(labels), shuffle=False, seed=0)
                                      .as_numpy_iterator())
    np.testing.assert_array_equal(images, plain_images)  # the Keras input's records and parsing
    np.testing.assert_array_equal(labels, plain_labels)

    def passes(seed: int, shift: int = 0, steps: int | None = None, n: int = 2) -> list[list[np.ndarray]]:
        data = torch_trainer.split_batches(pattern, 256, shuffle=True, seed=seed, shift=shift, steps=steps)
        return [[torch.cat(part).numpy() for part in zip(*data, strict=True)] for _ in range(n)]

    (first_images, first_labels), (second_images, second_labels) = passes(5)
    assert sorted(first_labels) == sorted(labels) and len(first_images) == len(images)  # every image once
    assert not np.array_equal(first_labels, second_labels)  # a new order each pass
    np.testing.assert_array_equal(passes(5, n=1)[0][1], first_labels)  # the same seed, the same order
    assert not np.array_equal(passes(6, n=1)[0][1], first_labels)
    (shifted, shifted_labels), (shifted_again, _) = passes(5, shift=2)
    np.testing.assert_array_equal(shifted_labels, first_labels)
    assert not np.array_equal(shifted, first_images) and not np.array_equal(shifted, shifted_again)
    np.testing.assert_array_equal(shifted.sum(axis=(1, 2)) <= first_images.sum(axis=(1, 2)), True)
    (fewer, fewer_labels), _ = passes(5, steps=3)
    assert len(fewer_labels) == 3 * 256 and len(fewer) == 3 * 256
    evaluation = torch_trainer.split_batches(pattern, 1000, shuffle=False, seed=0)
    assert len(evaluation) == -(-len(labels) // 1000)
    np.testing.assert_array_equal(torch.cat([y for _, y in evaluation]).numpy(), labels)  # file order
    with pytest.raises(ValueError, match="the same positive count"):
        torch_model.TensorBatches(torch.zeros(0, 28, 28, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64), 8)


def test_augmented_input_is_reproducible_and_new_each_epoch(small_examples):
    pattern = [str(small_examples.uri) + "/Split-train/*"]

    def epochs(shift: int, seed: int, n: int = 2) -> list[tuple[np.ndarray, np.ndarray]]:
        ds = common.make_dataset(pattern, 256, shuffle=False, seed=seed, shift=shift)
        return [next(ds.as_numpy_iterator()) for _ in range(n)]

    (plain, labels), _ = epochs(0, 5)
    (first, first_labels), (second, _) = epochs(2, 5)
    np.testing.assert_array_equal(first_labels, labels)
    assert not np.array_equal(first, plain) and not np.array_equal(first, second)
    np.testing.assert_array_equal(epochs(2, 5, n=1)[0][0], first)  # same seed, same shifts
    assert not np.array_equal(epochs(2, 6, n=1)[0][0], first)


@pytest.mark.parametrize("candidate", ["keras_model", "pytorch_model"])
def test_export_serves_raw_uint8_and_records_metadata(small_models, small_examples, candidate):
    model_dir = str(small_models[candidate] / "Format-Serving")
    predict, meta = loader.load_predictor(model_dir)
    assert meta["framework"] == {"keras_model": "keras", "pytorch_model": "pytorch"}[candidate]
    assert meta["device"] == "cpu" and meta["parameters"] == 54_410
    assert meta["cpu"] == machine.cpu_description()  # the CPU it trained on, with its kernels' flags
    assert meta["class_names"] == [str(d) for d in range(10)] and meta["num_classes"] == 10
    images, labels = next(common.make_dataset(
        [str(small_examples.uri) + "/Split-test/*"], 500, shuffle=False, seed=0).as_numpy_iterator())
    probs = predict(images)
    assert probs.shape == (500, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    # One epoch on ~2,700 images is far from converged but clearly learned something.
    assert (probs.argmax(axis=1) == labels).mean() > 0.6
    with open(f"{model_dir}/{common.HISTORY_FILE}") as f:
        history = json.load(f)
    assert len(history["loss"]) == 1 and len(history["val_accuracy"]) == 1
    with pytest.raises(ValueError, match="expected uint8 images"):
        predict(images.astype(np.float32))


def test_tensorboard_logs_are_written(small_models):
    for model_dir in small_models.values():
        assert list((model_dir / "run").rglob("events.out.tfevents.*"))


def test_normalization_is_identical_in_both_frameworks():
    import torch

    raw = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    keras_model = keras_trainer.build_model("seed_cnn")
    keras_norm = keras_model.layers[1](raw).numpy()
    torch_norm = torch_model.Normalize()(torch.from_numpy(raw)).numpy()[:, 0]
    np.testing.assert_allclose(keras_norm, torch_norm, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("accelerator", ["gpu", "tpu"])
def test_asking_for_a_missing_accelerator_is_an_error(accelerator):
    # These machines have neither a GPU nor a TPU: both trainers must refuse, not fall back to CPU.
    with pytest.raises(RuntimeError, match=f"accelerator={accelerator}"):
        torch_trainer.choose_device(accelerator)
    with pytest.raises(RuntimeError, match=f"accelerator={accelerator}"):
        keras_trainer.choose_strategy(accelerator)


def test_cpu_placement_uses_the_container_cores():
    import os

    import torch

    assert torch_trainer.choose_device("auto") == (torch.device("cpu"), "cpu")
    assert torch_trainer.use_container_cores() == len(os.sched_getaffinity(0)) == torch.get_num_threads()
    assert keras_trainer.choose_strategy("cpu")[1] == "cpu"


@pytest.mark.parametrize("schedule", ["one_cycle", "constant"])
def test_both_frameworks_follow_the_same_learning_rate_schedule(schedule):
    import torch

    total, peak = 200, 3e-3
    keras_schedule = keras_trainer.LearningRate(common.learning_rates(total, peak, schedule))
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=peak)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: common.learning_rate_at(step, total, peak, schedule) / peak)
    torch_rates = []
    for _ in range(total):
        torch_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    keras_rates = [float(keras_schedule(step)) for step in range(total)]
    np.testing.assert_allclose(keras_rates, torch_rates, rtol=1e-5, atol=peak * 1e-6)  # float32 in Keras
    if schedule == "one_cycle":  # warm-up to the peak over 15 % of the steps, then down to ~0
        assert max(torch_rates) == pytest.approx(peak) and torch_rates.index(max(torch_rates)) == 29
        assert torch_rates[0] < peak / 10 and torch_rates[-1] < peak / 1000
    else:
        assert set(torch_rates) == {peak}


def test_pipeline_defaults_are_the_trainers_defaults():
    import dataclasses

    from pipelines.config import PipelineConfig, load_config

    assert PipelineConfig().trainer_config() == common.TrainConfig().as_custom_config()
    # width at 1 is left out of custom_config (a trainer reads it as 1): every other setting is there.
    assert set(dataclasses.asdict(common.TrainConfig())) - set(PipelineConfig().trainer_config()) == {"width"}
    assert common.TrainConfig.from_custom_config(PipelineConfig().trainer_config()) == common.TrainConfig()
    assert common.TrainConfig().model == "bn_cnn"
    with pytest.raises(ValueError, match="lr_schedule"):
        load_config(lr_schedule="cosine-ish")
    with pytest.raises(ValueError, match="model 'resnet'"):
        common.TrainConfig.from_custom_config({"model": "resnet"})
    with pytest.raises(ValueError, match="augment_shift must be 0..8 pixels, got 9"):
        load_config(augment_shift=9)


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "150000 100000\n"}, 2),  # a 1.5-CPU Kubernetes limit: 2 threads
    ({"cpu.max": "max 100000\n"}, None),  # no limit: every core of the affinity mask
    ({"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 1),  # cgroup v1, 1 CPU
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({}, None),  # no cgroup files at all
])
def test_thread_count_follows_the_container_cpu_limit(tmp_path, files, expected):
    import os

    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    affinity = len(os.sched_getaffinity(0))
    assert common.container_cores(str(tmp_path)) == min(affinity, expected or affinity)


def _computes_in_bfloat16(saved_model_dir) -> bool:
    """Whether a Keras export casts anything to bfloat16 (mixed_bfloat16 compute)."""
    from tensorflow.core.framework import types_pb2

    from trainers import savedmodel_ops

    saved_model = savedmodel_ops.read_saved_model(str(saved_model_dir))
    return any(node.op == "Cast" and node.attr["DstT"].type == types_pb2.DT_BFLOAT16
               for meta_graph in saved_model.meta_graphs for function in meta_graph.graph_def.library.function
               for node in function.node_def)


@pytest.mark.parametrize("framework", ["keras", "pytorch"])
def test_cpu_bfloat16_on_and_off_decide_the_cpu_compute_and_the_metadata_says_which(
        framework, small_examples, tmp_path, caplog):
    """Forced both ways on whatever CPU runs the test ("auto" follows the CPU: test_cpu_precision_*).
    mixed_precision (a GPU/TPU setting) does not switch bfloat16 on for a CPU, and says so."""
    from conftest import train

    run_fn = keras_trainer.run_fn if framework == "keras" else torch_trainer.run_fn
    metas, accuracies = {}, {}
    for setting in ("on", "off"):
        out = train(run_fn, small_examples, tmp_path / setting, cpu_bfloat16=setting, mixed_precision=True)
        metas[setting] = json.loads((out / "Format-Serving" / common.MODEL_META_FILE).read_text())
        accuracies[setting] = json.loads((out / "Format-Serving" / common.HISTORY_FILE).read_text())["accuracy"]
    assert metas["on"]["mixed_precision"] is True and metas["off"]["mixed_precision"] is False
    assert metas["on"]["config"]["cpu_bfloat16"] == "on" and metas["off"]["config"]["mixed_precision"] is True
    assert accuracies["on"] != accuracies["off"]  # another arithmetic, not the same run twice
    if framework == "keras":
        assert _computes_in_bfloat16(tmp_path / "on" / "Format-Serving")
        assert not _computes_in_bfloat16(tmp_path / "off" / "Format-Serving")
    assert "mixed_precision is for a GPU or TPU; on the CPU cpu_bfloat16=off decides: float32" in caplog.text


def test_cpu_precision_is_bfloat16_where_the_cpu_has_it_in_hardware(tmp_path):
    cpus = {"amx": "avx2 fma avx512f amx_tile amx_bf16", "zen4": "avx2 fma avx512f avx512_bf16 avx512_vnni",
            "avx512": "avx2 fma avx512f avx512_vnni", "avx2": "avx2 fma"}
    for name, flags in cpus.items():
        (tmp_path / name).write_text(f"model name\t: {name}\nflags\t\t: fpu sse2 {flags}\n")
    auto = {name: machine.cpu_precision("auto", str(tmp_path / name)) for name in cpus}
    assert auto == {"amx": "bfloat16", "zen4": "bfloat16", "avx512": "float32", "avx2": "float32"}
    assert machine.cpu_precision("on", str(tmp_path / "avx2")) == "bfloat16"
    assert machine.cpu_precision("off", str(tmp_path / "amx")) == "float32"
    with pytest.raises(ValueError, match="cpu_bfloat16 'yes' is not one of"):
        machine.cpu_precision("yes")
    with pytest.raises(ValueError, match="cpu_bfloat16 'yes' is not one of"):
        common.TrainConfig(cpu_bfloat16="yes")


def test_local_runs_key_the_trainers_cache_on_the_cpu_precision(tmp_path):
    """A store trained in float32 is not reused where the trainers would now compute in bfloat16."""
    from pipelines.config import load_config
    from pipelines.local_runner import local_pipeline

    def trainer_configs(setting: str) -> list[dict]:
        cfg = load_config(output_root=str(tmp_path)).replace(cpu_bfloat16=setting)
        return [json.loads(c.exec_properties["custom_config"]) if isinstance(c.exec_properties["custom_config"], str)
                else c.exec_properties["custom_config"]
                for c in local_pipeline(cfg).components if c.id.endswith("_trainer")]

    for setting, precision in (("on", "bfloat16"), ("off", "float32"), ("auto", machine.cpu_precision("auto"))):
        configs = trainer_configs(setting)
        assert len(configs) == 2 and all(c["cpu_precision"] == precision for c in configs), configs


def test_the_feature_spec_comes_from_the_schema(small_examples, tmp_path):
    import tensorflow as tf

    spec = common.feature_spec()
    assert spec == {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64),
                    "ink_fraction": tf.io.FixedLenFeature([], tf.float32),
                    "pixel_mean": tf.io.FixedLenFeature([], tf.float32)}
    assert common.feature_spec(common.CURATED_SCHEMA) == spec
    [record] = common.records([str(small_examples.uri) + "/Split-test/*"]).take(1).as_numpy_iterator()
    parsed = tf.io.parse_example([record], spec)
    assert parsed["image"].shape == (1,) and len(parsed["image"].numpy()[0]) == 28 * 28
    # A schema where the label may be missing or repeat: parsed as TFT says (VarLen), which the
    # trainers refuse to read as one label per record.
    text = open(common.CURATED_SCHEMA).read()
    loose = tmp_path / "schema.pbtxt"
    loose.write_text(text.replace('name: "label"\n  value_count {\n    min: 1\n    max: 1',
                                  'name: "label"\n  value_count {\n    min: 1\n    max: 3'))
    assert common.feature_spec(str(loose))["label"] == tf.io.VarLenFeature(tf.int64)
    with pytest.raises(ValueError, match=r"schema .*schema\.pbtxt: the trainers read 'label' as one int64 value"):
        common.make_dataset([str(small_examples.uri) + "/Split-test/*"], 10, shuffle=False, seed=0,
                            schema_path=str(loose))


@pytest.mark.parametrize("name", common.MODEL_NAMES)
def test_the_loaded_pytorch_model_predicts_as_the_trained_one(small_examples, tmp_path, name):
    """The state dict loaded into the architecture (trainers/torch_model.py) is the trained model:
    the same probabilities on real test digits."""
    import itertools

    import torch

    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = torch_model.placed(torch_model.build_model(name), cpu)  # channels-last, as run_fn trains on a CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    train = torch_trainer.split_batches([str(small_examples.uri) + "/Split-train/*"], 64, shuffle=True, seed=0)
    torch_model.train_epoch(model, itertools.islice(torch_trainer.batches(train, cpu), 20), optimizer, scheduler,
                            mixed=False)
    out = tmp_path / "export"
    torch_trainer.export(model, str(out))
    common.write_json(str(out / common.MODEL_META_FILE),
                      torch_trainer.architecture_meta(name, list(model_format.DEFAULT_CLASS_NAMES)))
    images, _ = next(common.make_dataset([str(small_examples.uri) + "/Split-test/*"], 1000, shuffle=False,
                                         seed=0).as_numpy_iterator())
    with torch.inference_mode():
        trained = torch_model.Probabilities(model).eval()(torch.from_numpy(images)).numpy()
    predict, meta = loader.load_predictor(str(out))
    assert meta["format"] == "state_dict" and sorted(p.name for p in out.iterdir()) == [
        common.MODEL_META_FILE, "state_dict.pt"]
    np.testing.assert_allclose(predict(images), trained, rtol=0, atol=1e-6)
    assert (trained.argmax(1) == predict(images).argmax(1)).all()


@pytest.fixture(scope="module")
def five_class_examples(mnist_cache, tmp_path_factory):
    """A dataset of 5 classes made from real MNIST records: the digits 0-4 only, named."""
    from components.mnist_example_gen import idx
    from components.mnist_example_gen.sources import MNIST_FILES
    from conftest import run_example_gen, write_idx

    folder = tmp_path_factory.mktemp("five-classes")
    for part, prefix, n in (("train", "train", 6000), ("test", "t10k", 2000)):
        images = idx.read_records(idx.read_header(str(mnist_cache / f"{prefix}-images-idx3-ubyte"), "images"), 0, n)
        labels = idx.read_records(idx.read_header(str(mnist_cache / f"{prefix}-labels-idx1-ubyte"), "labels"), 0, n)
        kept = labels < 5
        write_idx(str(folder / (MNIST_FILES[f"{part}_images"].name + ".gz")), images[kept])
        write_idx(str(folder / (MNIST_FILES[f"{part}_labels"].name + ".gz")), labels[kept])
    return run_example_gen(tmp_path_factory.mktemp("five-class-examples"), tmp_path_factory.mktemp("cache"),
                           source=str(folder), verify_checksums=0, class_names=json.dumps(FIVE_CLASSES))


@pytest.mark.parametrize("run_fn, framework", [(keras_trainer.run_fn, "keras"), (torch_trainer.run_fn, "pytorch")])
def test_a_five_class_dataset_trains_five_way_models(five_class_examples, tmp_path, run_fn, framework):
    from tfx.components.trainer.fn_args_utils import FnArgs

    from conftest import FAST_TRAINING

    uri = five_class_examples.uri
    run_fn(FnArgs(train_files=[f"{uri}/Split-train/*"], eval_files=[f"{uri}/Split-eval/*"],
                  serving_model_dir=str(tmp_path / "Format-Serving"), model_run_dir=str(tmp_path / "run"),
                  schema_path=common.CURATED_SCHEMA,
                  custom_config={**FAST_TRAINING, "epochs": 1, "seed": 1, "accelerator": "cpu",
                                 "class_names": FIVE_CLASSES}))
    predict, meta = loader.load_predictor(str(tmp_path / "Format-Serving"))
    assert meta["framework"] == framework and meta["class_names"] == FIVE_CLASSES and meta["num_classes"] == 5
    assert meta["parameters"] == 54_410 - 5 * (5408 + 1)
    images, labels = next(common.make_dataset([f"{uri}/Split-test/*"], 1000, shuffle=False,
                                              seed=0).as_numpy_iterator())
    assert set(labels) == {0, 1, 2, 3, 4}
    probs = predict(images)
    assert probs.shape == (len(images), 5) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert (probs.argmax(axis=1) == labels).mean() > 0.8  # 1 epoch on ~2,700 images of 5 classes


def test_class_names_come_from_the_custom_config():
    assert common.class_names_from_custom_config({}) == [str(d) for d in range(10)]
    assert common.class_names_from_custom_config({"class_names": ["cat", "dog"], "epochs": 2}) == ["cat", "dog"]
    for bad in (["one"], [str(i) for i in range(11)], "0123", [1, 2]):
        with pytest.raises(ValueError, match="class_names must be a list of 2 to 10 strings"):
            common.class_names_from_custom_config({"class_names": bad})


def test_the_cpu_description_names_the_model_and_the_flags_that_pick_the_kernels(tmp_path):
    amx = tmp_path / "amx"
    amx.write_text("model name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                   "flags\t\t: fpu sse2 avx2 fma avx512f amx_bf16 amx_tile\n")
    described = machine.cpu_description(str(amx))
    assert described.startswith("Intel(R) Xeon(R) Platinum 8481C, ") and described.endswith(
        "flags: avx2 fma avx512f amx_tile amx_bf16")
    old = tmp_path / "old"
    old.write_text("model name\t: AMD EPYC\nflags\t\t: fpu sse2\n")
    assert machine.cpu_description(str(old)).endswith("flags: none of " + " ".join(machine.FLAGS))


def _where_malloc_puts_feature_maps(keep_freed_memory: bool) -> dict[str, int]:
    """In a fresh process with torch loaded, glibc's own account (mallinfo2) of three seed-model
    feature maps (128 x 32 x 26 x 26 floats, 11 MB: a step's output and gradients) malloc'ed, written
    and freed, as PyTorch's CPU allocator does: bytes in blocks of their own mmap while held, and
    free bytes the heap keeps after they are freed."""
    import os
    import subprocess
    import sys

    script = f"""
import ctypes, torch
from trainers import machine
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                     "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype, libc.malloc.restype, libc.free.argtypes = MallInfo2, ctypes.c_void_p, [ctypes.c_void_p]
assert {keep_freed_memory} is False or machine.keep_freed_memory()
size = 128 * 32 * 26 * 26 * 4
mapped_before = libc.mallinfo2().hblkhd
blocks = [libc.malloc(size) for _ in range(3)]
for block in blocks:
    ctypes.memset(block, 1, size)
mapped = libc.mallinfo2().hblkhd - mapped_before
for block in blocks:
    libc.free(block)
print(mapped, libc.mallinfo2().fordblks)
"""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=repo,
                          env={**os.environ, "PYTHONPATH": repo}, timeout=300)
    mapped, kept_free = done.stdout.split()[-2:]
    return {"own_mmap_bytes": int(mapped), "heap_free_bytes": int(kept_free)}


def test_the_pytorch_trainer_keeps_freed_memory_for_the_next_step():
    """By default glibc gives an 11 MB block its own mmap, handed back to the OS when freed, so the
    next step's block is fresh pages, one fault each (4,000-5,000 a step, bench/README.md); after
    keep_freed_memory the blocks come from the heap, and the heap keeps them when freed (the mmap
    threshold alone: heap blocks, trimmed back to the OS at each free, 5.6 million faults a run)."""
    feature_maps = 3 * 128 * 32 * 26 * 26 * 4
    default = _where_malloc_puts_feature_maps(keep_freed_memory=False)
    assert default["own_mmap_bytes"] >= feature_maps and default["heap_free_bytes"] < feature_maps
    kept = _where_malloc_puts_feature_maps(keep_freed_memory=True)
    assert kept["own_mmap_bytes"] == 0 and kept["heap_free_bytes"] >= feature_maps
