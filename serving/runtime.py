"""The MNIST runtime for MLServer: a registered version's signed files, loaded with this project's
own loader, never with code stored in the registry.

Runs in the serving environment (serving/bootstrap.sh, or the image of serving/Dockerfile),
inside MLServer's inference workers. MLServer's MLflow runtime would call
`mlflow.pyfunc.load_model`, which unpickles `python_model.pkl` or imports the pyfunc's stored
Python (`registry_pyfunc.py`, `code/trainers/`): whoever can write to the registry runs code in
the server. This runtime reads no pyfunc: load() (1) copies the version's `signed/` folder and
`manifest.sig` beside it into a private folder, (2) checks every file there against the pusher's
signed manifest (trainers/manifest.py; one line naming the first file that does not match, and
the model is not loaded, so MLServer marks it not ready or exits at start), then (3) loads the
export `signed/model/artifacts/model_dir/` with `trainers.loader.load_predictor`, the one the
evaluator scored with, imported from the serving process's own PYTHONPATH (the checkout or the
image), never from the registry's copy.

Its model-settings.json (serving/server.py:write_settings writes it):
  parameters.uri             the version's `signed/` folder, or the folder holding `signed/` and
                             `manifest.sig` (KServe mounts the storageUri at /mnt/models)
  parameters.extra.public_key       the pusher's public key, PEM text, or
  parameters.extra.public_key_file  a file holding it (a mounted Kubernetes secret)
  parameters.extra.what      how messages name the model, e.g. "mnist-digits version 3"
                             (default: "<name> version <version>")
  parameters.extra.max_batch largest N accepted per request (default 1024)

Requests are refused first, with a message that says what is wrong: MLServer answers an
`InferenceError` with HTTP 400 (gRPC INVALID_ARGUMENT) and keeps serving. Without the checks a
float or out-of-range tensor would fail inside the model as a 500, or (numpy < 2) wrap around
silently.

A good request: one input tensor, datatype UINT8, shape [N, 28, 28] with 1 <= N <= max_batch,
N * 784 integer values 0-255 (flat or nested). The answer: one FP32 tensor [N, K] of
probabilities.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, Callable

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError, MLServerError
from mlserver.logging import logger
from mlserver.types import InferenceRequest, InferenceResponse, MetadataTensor, Parameters

from trainers.model_format import EXPORT_IN_SIGNED, SIGNED_DIR

IMAGE_SHAPE = [28, 28]
DIGITS = [str(d) for d in range(10)]  # the class names of exports that do not record theirs
PIXELS = 28 * 28
DEFAULT_MAX_BATCH = 1024
# The content types that decode to the numpy array the pyfunc takes ("np": MLServer's NumpyCodec).
NUMPY_CONTENT_TYPES = (None, "", "np")


def _content_type(parameters: Any) -> str | None:
    return getattr(parameters, "content_type", None) if parameters is not None else None


def check_request(payload: InferenceRequest, max_batch: int = DEFAULT_MAX_BATCH) -> None:
    """Raises InferenceError (HTTP 400) naming what is wrong with `payload`; returns if it is good."""
    expected = "one UINT8 tensor of shape [N, 28, 28]: N images of raw pixel values 0-255"
    if len(payload.inputs) != 1:
        names = ", ".join(repr(i.name) for i in payload.inputs) or "none"
        raise InferenceError(f"expected {expected}; got {len(payload.inputs)} input tensors ({names})")
    if _content_type(payload.parameters) not in NUMPY_CONTENT_TYPES:
        raise InferenceError(f"request content_type {_content_type(payload.parameters)!r} is not supported; "
                             f"send {expected} (content_type 'np' or none)")
    tensor = payload.inputs[0]
    if _content_type(tensor.parameters) not in NUMPY_CONTENT_TYPES:
        raise InferenceError(f"input {tensor.name!r} content_type {_content_type(tensor.parameters)!r} is not "
                             f"supported; send {expected} (content_type 'np' or none)")
    datatype = getattr(tensor.datatype, "value", tensor.datatype)
    if datatype != "UINT8":
        raise InferenceError(f"input {tensor.name!r} has datatype {datatype}; this model takes UINT8 "
                             f"(raw pixel values 0-255, not normalized floats): send {expected}")
    shape = list(tensor.shape)
    if len(shape) != 3 or shape[1:] != IMAGE_SHAPE:
        raise InferenceError(f"input {tensor.name!r} has shape {shape}; expected [N, 28, 28] "
                             f"(N images of 28x28 pixels)")
    count = shape[0]
    if count == 0:
        raise InferenceError(f"empty batch: input {tensor.name!r} has shape {shape}, no image to classify; "
                             "send at least one")
    if count < 0:
        raise InferenceError(f"input {tensor.name!r} has shape {shape}: a negative batch size")
    if count > max_batch:
        raise InferenceError(f"batch of {count} images is over this server's limit of {max_batch} per "
                             "request; split it")
    data = getattr(tensor.data, "root", tensor.data)
    try:
        values = np.asarray(data)
    except (ValueError, TypeError) as e:
        raise InferenceError(f"input {tensor.name!r} data is not a regular array of numbers ({e})") from e
    if values.dtype.kind not in "iu":
        found = {"f": "non-integer numbers", "b": "booleans", "U": "strings", "S": "bytes"}.get(
            values.dtype.kind, "values that are not integers (or numbers too large)")
        raise InferenceError(f"input {tensor.name!r} data holds {found}; UINT8 data must be integers 0-255")
    if values.size != count * PIXELS:
        raise InferenceError(f"input {tensor.name!r} has {values.size} values, but its shape {shape} needs "
                             f"{count * PIXELS} ({count} x 28 x 28)")
    low, high = int(values.min()), int(values.max())
    if low < 0 or high > 255:
        raise InferenceError(f"input {tensor.name!r} values out of range: min {low}, max {high}; UINT8 pixel "
                             "values are 0-255")


class ModelRefused(MLServerError):
    """The version's files cannot be served; the message is one line saying why (an MLServerError:
    the repository API answers it as it is, and it crosses from the inference worker intact)."""


def signed_folder(uri: str) -> str:
    """The version's `signed/` folder: `uri` itself, or `uri`/signed (the run's artifact root)."""
    nested = os.path.join(uri, SIGNED_DIR)
    return nested if os.path.isdir(nested) else uri


def public_key(extra: dict[str, Any], what: str) -> str:
    """The pusher's public key from the model settings (PEM text, or a file holding it)."""
    if extra.get("public_key"):
        return str(extra["public_key"])
    if extra.get("public_key_file"):
        try:
            with open(extra["public_key_file"], encoding="utf-8") as f:
                return f.read()
        except OSError as e:
            raise ModelRefused(f"{what}: cannot read the public key file {extra['public_key_file']} ({e}); "
                               "it is not loaded") from None
    raise ModelRefused(f"{what}: no public key to verify its signed manifest with (model-settings "
                       "parameters.extra.public_key or public_key_file); it is not loaded")


def copy_signed(signed_dir: str, dst: str) -> str:
    """`signed_dir` and the manifest.sig beside it, copied into `dst`: the files that are verified
    are the files that are loaded, whatever happens to the originals meanwhile. Returns the copy of
    `signed_dir`."""
    from trainers.manifest import SIGNATURE_FILE

    copy = os.path.join(dst, SIGNED_DIR)
    shutil.copytree(signed_dir, copy)  # links are followed: their targets are hashed as files
    signature = os.path.join(os.path.dirname(os.path.abspath(signed_dir)), SIGNATURE_FILE)
    if os.path.isfile(signature):
        shutil.copyfile(signature, os.path.join(dst, SIGNATURE_FILE))
    return copy


def load_verified(uri: str, public_pem: str, what: str) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    """The export of the version at `uri`, loaded by this checkout's loader once every signed file
    checks out: (predict, model metadata). Raises ModelRefused (one line) otherwise."""
    import trainers
    from trainers.loader import UntrustedModelError, load_predictor
    from trainers.manifest import ManifestError, verify

    signed_dir = signed_folder(uri)
    code = os.path.realpath(os.path.dirname(trainers.__file__))
    if code.startswith(os.path.realpath(uri) + os.sep):  # MLServer puts its model folder on sys.path
        raise ModelRefused(f"{what}: the loader would be imported from the model's own folder ({code}); "
                           "start MLServer on a settings folder apart from the model's files; it is not loaded")
    if not os.path.isdir(signed_dir):
        raise ModelRefused(f"{what}: {uri} is not a folder holding the version's signed files; it is not loaded")
    with tempfile.TemporaryDirectory(prefix="mnist-verified-") as private:  # mode 0700
        try:
            verify(copy_signed(signed_dir, private), public_pem, what)
        except ManifestError as e:
            raise ModelRefused(str(e)) from None
        export = os.path.join(private, SIGNED_DIR, EXPORT_IN_SIGNED)
        if not os.path.isdir(export):
            raise ModelRefused(f"{what}: its signed files hold no exported model ({SIGNED_DIR}/{EXPORT_IN_SIGNED}); "
                               "it is not loaded")
        try:  # both formats are read into memory: the private copy can go once loaded
            return load_predictor(export)
        except (UntrustedModelError, ValueError, OSError) as e:
            raise ModelRefused(f"{what}: {str(e).splitlines()[0] if str(e) else type(e).__name__}; "
                               "it is not loaded") from None


class MnistRuntime(MLModel):
    """A signed version's export behind the request checks (see the module's docstring)."""

    def _extra(self) -> dict[str, Any]:
        return (self.settings.parameters.extra if self.settings.parameters else None) or {}

    def _what(self) -> str:
        return str(self._extra().get("what") or f"{self.name} version {self.version}")

    async def load(self) -> bool:
        what = self._what()
        try:
            uri = self.settings.parameters.uri if self.settings.parameters else None
            if not uri:
                raise ModelRefused(f"{what}: no parameters.uri in its model settings; it is not loaded")
            self._predict, self._meta = load_verified(uri, public_key(self._extra(), what), what)
        except ModelRefused as e:
            logger.error(str(e))  # the one line, before MLServer's own account of the failure
            raise
        self._max_batch = int(self._extra().get("max_batch", DEFAULT_MAX_BATCH))
        import trainers

        logger.info(f"{what}: signed files verified; {self._meta.get('framework')} export loaded with "
                    f"{os.path.dirname(trainers.__file__)}/loader.py")
        if not self.inputs:
            self.inputs = [MetadataTensor(name="images", datatype="UINT8", shape=[-1, *IMAGE_SHAPE])]
        # The classes the model was trained on, by name (label i is class_names[i]): in the model's
        # metadata (GET /v2/models/NAME) and in every answer's parameters.
        self._class_names = list(self._meta.get("class_names") or DIGITS)
        if not self.outputs:
            self.outputs = [MetadataTensor(name="probabilities", datatype="FP32", shape=[-1, len(self._class_names)],
                                           parameters=Parameters(class_names=self._class_names))]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        check_request(payload, self._max_batch)
        images = NumpyCodec.decode_input(payload.inputs[0]).astype(np.uint8, copy=False).reshape(-1, *IMAGE_SHAPE)
        probabilities = np.asarray(self._predict(images), dtype=np.float32)
        return InferenceResponse(model_name=self.name, model_version=self.version, id=payload.id,
                                 parameters=Parameters(class_names=self._class_names),
                                 outputs=[NumpyCodec.encode_output("probabilities", probabilities)])
