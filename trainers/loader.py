"""Loading an exported model without knowing its framework: uint8 [N, 28, 28] -> probabilities
[N, classes].

The evaluator, the registry's pyfunc and the server all go through `load_predictor`, so the model
that is scored is loaded exactly as the model that is served. Nothing a model file's author wrote
as code is run:
- Keras: a TF SavedModel is a program, so before TensorFlow sees it every op of its graph and
  function library is checked against the ops the project's own exports use
  (trainers/savedmodel_ops.py); the bytes checked are the bytes loaded.
- PyTorch: a state dict, tensors only, read with `torch.load(..., weights_only=True)` into the
  architecture that the installed trainers/torch_model.py builds under the name the metadata
  gives; its keys and shapes must be that architecture's. TorchScript (an archive that carries
  code, deprecated in torch 2.14) is never loaded: an older export's model.pt is ignored and its
  state_dict.pt loaded.
A Python pickle or a `torch.save` archive put where a SavedModel is expected is refused with
`UntrustedModelError` without being unpickled.
"""

from __future__ import annotations

import io
import os
import tempfile
import warnings
import zipfile
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from trainers import savedmodel_ops
from trainers.model_format import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    copy_tree,
    file_exists,
    read_bytes,
    read_model_meta,
)

if TYPE_CHECKING:
    from tensorflow.core.protobuf import saved_model_pb2

Predictor = Callable[[np.ndarray], np.ndarray]
SAVED_MODEL_FILE = "saved_model.pb"
_ZIP_MAGIC = b"PK\x03\x04"
_MAX_OPS_SHOWN = 8  # a hostile graph may hold many: the error line names the first ones


class UntrustedModelError(ValueError):
    """A file where a model is expected is not in a format that runs no code when loaded."""


def _refuse_pickle(path: str, data: bytes, expected: str) -> None:
    """A binary pickle (PROTO opcode 0x80, protocols 2-5) is never loaded as a model."""
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        raise UntrustedModelError(
            f"{path}: is a Python pickle (protocol {data[1]}), not a {expected}; pickles can "
            "run arbitrary code when loaded and are never loaded as models")


def _zip_names(data: bytes) -> list[str] | None:
    if not data.startswith(_ZIP_MAGIC):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return z.namelist()
    except zipfile.BadZipFile:
        return None


def _is_torchscript(names: list[str]) -> bool:
    # torch.jit.save writes the model's TorchScript source under code/ and constants.pkl beside
    # data.pkl; a torch.save archive has data.pkl (and data/) only.
    return any("/code/" in n or n.endswith("/constants.pkl") for n in names)


def _torch_save_hint(names: list[str]) -> str:
    if _is_torchscript(names):
        return "a TorchScript archive (it carries code)"
    if any(n.endswith("/data.pkl") for n in names):
        return "a torch.save archive (a pickle of Python objects, which can run code when loaded)"
    return "a zip archive"


# --- Keras: a SavedModel whose ops are all the project's own ------------------------------------
def check_saved_model(path: str, data: bytes) -> saved_model_pb2.SavedModel:
    """The SavedModel protobuf in `data` (the file at `path`); UntrustedModelError unless it is one."""
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    _refuse_pickle(path, data, "SavedModel protobuf")
    names = _zip_names(data)
    if names is not None:
        raise UntrustedModelError(f"{path}: is {_torch_save_hint(names)}, not a SavedModel protobuf")
    saved_model = saved_model_pb2.SavedModel()
    try:
        with warnings.catch_warnings(record=True) as warned:  # protobuf warns, and goes on, on some bad input
            warnings.simplefilter("always")
            saved_model.ParseFromString(data)
    except DecodeError as e:
        raise UntrustedModelError(f"{path}: is not a SavedModel protobuf ({e})") from e
    malformed = [str(w.message) for w in warned if issubclass(w.category, RuntimeWarning)]
    if malformed:
        raise UntrustedModelError(f"{path}: is not a SavedModel protobuf ({malformed[0]})")
    if not saved_model.meta_graphs or not saved_model.meta_graphs[0].graph_def.node:
        raise UntrustedModelError(f"{path}: is not a SavedModel protobuf (no meta graph with a graph)")
    return saved_model


def check_ops(path: str, saved_model: saved_model_pb2.SavedModel) -> None:
    """UntrustedModelError naming the ops, and where they are, that the project's exports never use."""
    refused = savedmodel_ops.refused_ops(saved_model)
    if refused:
        shown = "; ".join(refused[:_MAX_OPS_SHOWN]) + (f"; and {len(refused) - _MAX_OPS_SHOWN} more"
                                                       if len(refused) > _MAX_OPS_SHOWN else "")
        raise UntrustedModelError(f"{path}: holds TensorFlow ops that this project's exports never use, refused "
                                  f"before loading: {shown} (allowed: trainers/savedmodel_allowlist.py)")


def _load_keras(model_dir: str) -> Predictor:
    import tensorflow as tf

    path = os.path.join(model_dir, SAVED_MODEL_FILE)
    if not file_exists(path):
        raise FileNotFoundError(f"{path}: missing; {model_dir} holds no binary SavedModel")
    # A private copy is checked and loaded: the saved_model.pb checked is the one TensorFlow reads,
    # whatever happens to `model_dir` meanwhile (and a remote folder is read once, not through
    # TensorFlow's checkpoint reader on the store, which can crash the process).
    with tempfile.TemporaryDirectory(prefix="model-") as private:
        copy_tree(model_dir, private)
        saved_model = check_saved_model(path, read_bytes(os.path.join(private, SAVED_MODEL_FILE)))
        check_ops(path, saved_model)
        loaded = tf.saved_model.load(private)  # everything is in memory once loaded

    def predict(images: np.ndarray) -> np.ndarray:
        return loaded.serve(tf.constant(_check_input(images))).numpy()

    return predict


# --- PyTorch: a state dict into the project's own architecture ----------------------------------
def load_state_dict(path: str) -> dict[str, Any]:
    """A PyTorch state dict saved with torch.save, read with weights_only=True: tensors and plain
    containers only; a file holding any other Python object is refused without running it."""
    import pickle

    import torch

    data = read_bytes(path)
    _refuse_pickle(path, data, "state dict")
    names = _zip_names(data)
    if names is None:
        raise UntrustedModelError(f"{path}: is not a state dict (torch.save writes a zip archive)")
    if _is_torchscript(names):
        raise UntrustedModelError(f"{path}: is a TorchScript archive (it carries code), not a state dict; "
                                  "TorchScript is never loaded")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0] if lines else "")
        raise UntrustedModelError(f"{path}: holds Python objects other than tensors, refused without running "
                                  f"them (torch.load weights_only=True): {detail.strip()}") from e
    except RuntimeError as e:  # a zip, but not one torch.save wrote
        raise UntrustedModelError(f"{path}: is not a state dict ({str(e).strip().splitlines()[0][:300]})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UntrustedModelError(f"{path}: is not a state dict of tensors (holds a {type(state).__name__})")
    return state


def check_fits(path: str, state: dict[str, Any], expected: dict[str, Any], architecture: str) -> None:
    """UntrustedModelError unless `state` has exactly the keys and shapes of `expected`."""
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    shapes = [f"{k} {list(state[k].shape)} (architecture {list(expected[k].shape)})"
              for k in sorted(expected.keys() & state.keys()) if state[k].shape != expected[k].shape]
    problems = [f"{label}: {', '.join(items[:5])}{' ...' if len(items) > 5 else ''}"
                for label, items in (("missing", missing), ("unexpected", unexpected), ("other shapes", shapes))
                if items]
    if problems:
        raise UntrustedModelError(f"{path}: does not fit {architecture} (trainers/torch_model.py): "
                                  + "; ".join(problems))


def _state_dict_name(model_dir: str, meta: dict) -> Any:
    """The state dict's file name: `file` in this format; an older TorchScript export names it
    `state_dict` beside its model.pt, which is never loaded."""
    if meta.get("format") != "torchscript":
        return meta.get("file")
    if not meta.get("state_dict"):
        raise UntrustedModelError(f"{model_dir}: a TorchScript export without a state dict; TorchScript is never "
                                  "loaded (its archive carries code): retrain it to export a state dict")
    return meta["state_dict"]


def _architecture(model_dir: str, meta: dict) -> tuple[str, int, float]:
    """(model name, number of classes, width) from the metadata; older exports have ten classes
    and width 1."""
    from trainers.config import MODEL_NAMES, WIDTH_RANGE

    name, classes = meta.get("model"), meta.get("num_classes", NUM_CLASSES)
    if name not in MODEL_NAMES:
        raise UntrustedModelError(f"{model_dir}: model metadata names the architecture {name!r}, "
                                  f"not one of {MODEL_NAMES}")
    if not isinstance(classes, int) or isinstance(classes, bool) or not 2 <= classes <= NUM_CLASSES:
        raise UntrustedModelError(f"{model_dir}: model metadata gives {classes!r} classes, not 2 to {NUM_CLASSES}")
    if len(meta.get("class_names", [None] * classes)) != classes:
        raise UntrustedModelError(f"{model_dir}: model metadata gives {classes} classes but names "
                                  f"{len(meta['class_names'])}")
    width = meta.get("width", 1.0)
    if not isinstance(width, (int, float)) or isinstance(width, bool) or not WIDTH_RANGE[0] <= width <= WIDTH_RANGE[1]:
        raise UntrustedModelError(f"{model_dir}: model metadata gives width {width!r}, not "
                                  f"{WIDTH_RANGE[0]} to {WIDTH_RANGE[1]}")
    return name, classes, float(width)


def _load_pytorch(model_dir: str, meta: dict) -> Predictor:
    import torch

    from trainers import torch_model

    path = _model_file(model_dir, _state_dict_name(model_dir, meta))
    name, classes, width = _architecture(model_dir, meta)
    state = load_state_dict(path)
    model = torch_model.build_model(name, classes, width)
    architecture = f"{name} with {classes} classes" + (f", width {width}" if width != 1 else "")
    check_fits(path, state, model.state_dict(), architecture)
    model.load_state_dict(state)
    served = torch_model.Probabilities(model).eval()

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return served(torch.from_numpy(np.ascontiguousarray(_check_input(images)))).numpy()

    return predict


# --- either framework ------------------------------------------------------------------------
def _check_input(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"expected uint8 images of shape [N, 28, 28], got {images.dtype} {images.shape}")
    return images


def _model_file(model_dir: str, name: Any) -> str:
    """The model file named in the metadata: a plain file name inside `model_dir`, nothing else."""
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or os.path.isabs(name)):
        raise UntrustedModelError(f"{model_dir}: model metadata names the model file {name!r}; "
                                  "only a plain file name inside the model folder is loaded")
    return os.path.join(model_dir, name)


def load_predictor(model_dir: str) -> tuple[Predictor, dict]:
    """The model in `model_dir` as a predict function, with its metadata."""
    meta = read_model_meta(model_dir)
    framework = meta.get("framework")
    if framework == "keras":
        return _load_keras(model_dir), meta
    if framework == "pytorch":
        return _load_pytorch(model_dir, meta), meta
    raise ValueError(f"{model_dir}: unknown framework {framework!r} in model metadata")


def predict_in_batches(predict: Predictor, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate([predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
