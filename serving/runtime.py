"""MLServer's MLflow runtime, with the requests checked before the model sees them.

Runs in the serving environment (serving/bootstrap.sh), inside MLServer's inference workers.
The model is loaded and called exactly as `mlserver_mlflow.MLflowRuntime` does it
(`mlflow.pyfunc.load_model`, then the registered pyfunc, which loads the export with
trainers/loader.py:load_predictor, the evaluator's loader); this class only refuses bad
requests first, with a message that says what is wrong: MLServer answers an `InferenceError`
with HTTP 400 (gRPC INVALID_ARGUMENT) and keeps serving. Without the checks a float or
out-of-range tensor would fail inside the model as a 500, or (numpy < 2) wrap around silently.

A good request: one input tensor, datatype UINT8, shape [N, 28, 28] with 1 <= N <= max_batch,
N * 784 integer values 0-255 (flat or nested). The answer: one FP32 tensor [N, 10] of
probabilities.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlserver.errors import InferenceError
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver_mlflow import MLflowRuntime

IMAGE_SHAPE = [28, 28]
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


class MnistRuntime(MLflowRuntime):
    """The MLflow runtime, refusing requests the MNIST model cannot answer (see check_request)."""

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        extra = (self.settings.parameters.extra if self.settings.parameters else None) or {}
        check_request(payload, int(extra.get("max_batch", DEFAULT_MAX_BATCH)))
        return await super().predict(payload)
