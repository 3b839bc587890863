"""A v2 (Open Inference Protocol) client for the served model: REST with the standard library only
(any environment), gRPC with MLServer's generated stubs (the serving environment).

    python -m serving.client grpc 127.0.0.1:8081 mnist-digits images.npy probs.npy   # serving venv
    python -m serving.client grpc-unload 127.0.0.1:8081 mnist-digits [inference|model_repository] [TOKEN]
        # the model-repository unload call; prints the gRPC status code (OK, PERMISSION_DENIED, ...)
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any

import numpy as np


def v2_request(images: np.ndarray, name: str = "images") -> dict[str, Any]:
    """The v2 inference request for uint8 images [N, 28, 28]."""
    images = np.asarray(images)
    return {"inputs": [{"name": name, "datatype": "UINT8", "shape": list(images.shape),
                        "data": images.reshape(-1).tolist()}]}


def post(url: str, body: bytes, content_type: str = "application/json", timeout_s: float = 60.0,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any] | str]:
    """POSTs `body`; returns (HTTP status, the JSON answer or its text), for good and bad answers alike."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        status, text = e.code, e.read().decode(errors="replace")
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def probabilities(answer: dict[str, Any]) -> np.ndarray:
    """The [N, K] probabilities of a v2 inference response."""
    outputs = answer["outputs"]
    if len(outputs) != 1:
        raise ValueError(f"expected one output tensor, got {len(outputs)}")
    return np.asarray(outputs[0]["data"], dtype=np.float32).reshape(outputs[0]["shape"])


def infer_rest(infer_url: str, images: np.ndarray, timeout_s: float = 60.0) -> np.ndarray:
    status, answer = post(infer_url, json.dumps(v2_request(images)).encode(), timeout_s=timeout_s)
    if status != 200 or not isinstance(answer, dict):
        raise RuntimeError(f"{infer_url} answered HTTP {status}: {answer}")
    return probabilities(answer)


def infer_grpc(address: str, model_name: str, images: np.ndarray, timeout_s: float = 60.0) -> np.ndarray:
    """ModelInfer over gRPC (v2 protocol); needs MLServer's stubs (the serving environment)."""
    import grpc
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc import dataplane_pb2_grpc

    images = np.asarray(images, dtype=np.uint8)
    request = pb.ModelInferRequest(model_name=model_name, inputs=[pb.ModelInferRequest.InferInputTensor(
        name="images", datatype="UINT8", shape=list(images.shape),
        contents=pb.InferTensorContents(uint_contents=images.reshape(-1).tolist()))])
    with grpc.insecure_channel(address) as channel:
        response = dataplane_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=timeout_s)
    output = response.outputs[0]
    if response.raw_output_contents:
        values = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
    else:
        values = np.asarray(output.contents.fp32_contents, dtype=np.float32)
    return values.reshape(list(output.shape))


def unload_grpc(address: str, model_name: str, service: str = "inference", token: str = "",
                timeout_s: float = 30.0) -> tuple[str, str]:
    """RepositoryModelUnload over gRPC, on `service` "inference" (inference.GRPCInferenceService) or
    "model_repository" (the deprecated inference.model_repository.ModelRepositoryService), with
    `token` as a bearer token when given. Returns (status code name, details)."""
    import grpc
    from mlserver.grpc import dataplane_pb2, dataplane_pb2_grpc, model_repository_pb2, model_repository_pb2_grpc

    metadata = [("authorization", f"Bearer {token}")] if token else []
    with grpc.insecure_channel(address) as channel:
        try:
            if service == "inference":
                dataplane_pb2_grpc.GRPCInferenceServiceStub(channel).RepositoryModelUnload(
                    dataplane_pb2.RepositoryModelUnloadRequest(model_name=model_name), timeout=timeout_s,
                    metadata=metadata)
            else:
                model_repository_pb2_grpc.ModelRepositoryServiceStub(channel).RepositoryModelUnload(
                    model_repository_pb2.RepositoryModelUnloadRequest(model_name=model_name), timeout=timeout_s,
                    metadata=metadata)
        except grpc.RpcError as e:
            return e.code().name, e.details() or ""
    return "OK", ""


def main(argv: list[str]) -> None:
    if len(argv) == 5 and argv[0] == "grpc":
        _, address, model_name, images_path, out_path = argv
        np.save(out_path, infer_grpc(address, model_name, np.load(images_path)))
    elif 3 <= len(argv) <= 5 and argv[0] == "grpc-unload":
        code, details = unload_grpc(*argv[1:])
        print(json.dumps({"code": code, "details": details}))
    else:
        sys.exit("usage: python -m serving.client grpc ADDRESS MODEL_NAME IMAGES.npy OUT.npy\n"
                 "       python -m serving.client grpc-unload ADDRESS MODEL_NAME [inference|model_repository] [TOKEN]")


if __name__ == "__main__":
    main(sys.argv[1:])
