"""Loading an exported model without knowing its framework: uint8 [N, 28, 28] -> probabilities.

The evaluator and the registry's pyfunc both go through `load_predictor`, so the model that is
scored is loaded exactly as the model that is served. Only formats that run no pickled code are
read: TF SavedModel and TorchScript (whose archives are read by TorchScript's own restricted
unpickler, never Python's). Before loading, the file where the model is expected is checked to
be of that format: a Python pickle, or a `torch.save` archive (a zip holding a pickle), put in
its place is refused with `UntrustedModelError`, without being unpickled. State dicts are read
with `torch.load(..., weights_only=True)` only (`load_state_dict`). A SavedModel is a program:
before TensorFlow sees it, every op of its graph and function library is checked against the ops
the project's own exports use (trainers/savedmodel_ops.py), on the bytes that are then loaded.
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
from trainers.model_format import IMAGE_SHAPE, copy_tree, file_exists, read_bytes, read_model_meta

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


def _torch_save_hint(names: list[str]) -> str:
    if any(n.endswith("/data.pkl") for n in names) and not any("/code/" in n for n in names):
        return "a torch.save archive (a pickle of Python objects, which can run code when loaded)"
    return "a zip archive"


def check_torchscript(path: str, data: bytes) -> None:
    """Raises UntrustedModelError unless `data` (the file at `path`) is a TorchScript archive.

    torch.jit.save writes a zip whose entries all sit under one folder holding `data.pkl`,
    `constants.pkl` and the model's TorchScript source under `code/`; a torch.save archive has
    `data.pkl` (and `data/`) but never `code/` nor `constants.pkl`.
    """
    _refuse_pickle(path, data, "TorchScript archive")
    names = _zip_names(data)
    if names is None:
        raise UntrustedModelError(f"{path}: is not a TorchScript archive (not a zip file)")
    prefixes = {n.split("/", 1)[0] for n in names}
    prefix = next(iter(prefixes)) if len(prefixes) == 1 else ""
    required = {f"{prefix}/data.pkl", f"{prefix}/constants.pkl"}
    if not prefix or not required <= set(names) or not any(n.startswith(f"{prefix}/code/") for n in names):
        raise UntrustedModelError(
            f"{path}: is {_torch_save_hint(names)}, not a TorchScript archive (torch.jit.save: "
            "data.pkl, constants.pkl and code/ under one folder); it is not loaded")


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


def _check_input(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(f"expected uint8 images of shape [N, 28, 28], got {images.dtype} {images.shape}")
    return images


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


def _load_torchscript(path: str) -> Predictor:
    import torch

    data = read_bytes(path)
    check_torchscript(path, data)
    try:  # the bytes that were checked are the bytes that are loaded
        module = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    except RuntimeError as e:
        raise UntrustedModelError(f"{path}: TorchScript refused to load it: {str(e).strip()[:500]}") from e

    def predict(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(_check_input(images)))).numpy()

    return predict


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
        return _load_torchscript(_model_file(model_dir, meta.get("file"))), meta
    raise ValueError(f"{model_dir}: unknown framework {framework!r} in model metadata")


def load_state_dict(path: str) -> dict[str, Any]:
    """A PyTorch state dict saved with torch.save, read with weights_only=True: tensors and plain
    containers only; a file holding any other Python object is refused without running it."""
    import pickle

    import torch

    try:
        state = torch.load(io.BytesIO(read_bytes(path)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [line for line in str(e).splitlines() if line.strip()]
        detail = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0] if lines else "")
        raise UntrustedModelError(f"{path}: holds Python objects other than tensors, refused without running "
                                  f"them (torch.load weights_only=True): {detail.strip()}") from e
    if not isinstance(state, dict):
        raise UntrustedModelError(f"{path}: is not a state dict (holds a {type(state).__name__})")
    return state


def predict_in_batches(predict: Predictor, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    return np.concatenate([predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])
