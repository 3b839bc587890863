"""The guard in front of MLServer (serving/launch.py), tried with real hostile requests.

Two real MLServer processes serve the same signed PyTorch export with the project's runtime: one
started as stock `mlserver start` (no guard), one through serving/launch.py (the guard, with a
repository token). Every hostile request is first sent to the unguarded server, to show that it
does harm there (accepted past the body limit, misread, never answered, or the model unloaded),
then to the guarded one, which refuses it with one line; after each, the guarded server still
answers a valid request with the same probabilities. The default (no token: repository API off)
is tried on `serve`'s own server in tests/test_serving.py.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from serving import client, launch
from serving import server as mlserver
from tests import serving_helpers as helpers
from trainers import manifest, model_format

NAME = helpers.NAME
TOKEN = "guard-test-token"
MAX_BODY_BYTES = 1024 * 1024
DEADLINE_S = 5.0
# Bounds for "never answered" / "answered at all": generous, never timing assertions.
NO_ANSWER_S = 15.0
REPO = str(Path(mlserver.SERVING_DIR).parent)


@pytest.fixture(scope="module")
def serving_venv() -> str:
    return mlserver.serving_venv()


@pytest.fixture(scope="module")
def signed_export(small_models, tmp_path_factory) -> tuple[Path, bytes]:
    """The real PyTorch export in the pusher's signed layout (a folder passed straight to the runtime)."""
    private, public = manifest.generate_key_pair()
    root = tmp_path_factory.mktemp("guard-version")
    export = root / model_format.SIGNED_DIR / model_format.EXPORT_IN_SIGNED
    shutil.copytree(small_models["pytorch_model"] / "Format-Serving", export)
    (root / model_format.SIGNED_DIR / "identity.json").write_text(json.dumps({"name": NAME, "version": "1"}))
    helpers.sign(str(root / model_format.SIGNED_DIR), private)
    return root / model_format.SIGNED_DIR, public


def _start(serving_venv: str, signed_export, root: Path, guarded: bool) -> helpers.Process:
    signed, public = signed_export
    folder, http_port, grpc_port, _ = helpers.server_folder(
        root, {NAME: helpers.runtime_settings(str(signed), public, f"{NAME} version 1")})
    guard = None
    if guarded:
        (root / "token").write_text(TOKEN + "\n")
        guard = mlserver.GuardOptions(MAX_BODY_BYTES, deadline_s=DEADLINE_S, repository_token_file=str(root / "token"))
    return helpers.spawn(serving_venv, folder, http_port, grpc_port, guard, wait_for=f"/v2/models/{NAME}/ready")


@pytest.fixture(scope="module")
def unguarded(serving_venv, signed_export, tmp_path_factory):
    server = _start(serving_venv, signed_export, tmp_path_factory.mktemp("unguarded"), guarded=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guarded(serving_venv, signed_export, tmp_path_factory):
    server = _start(serving_venv, signed_export, tmp_path_factory.mktemp("guarded"), guarded=True)
    yield server
    assert server.stop() is not None


@pytest.fixture(scope="module")
def images(small_examples) -> np.ndarray:
    return helpers.images_of(small_examples, 8)


def _infer_url(server: helpers.Process) -> str:
    return f"{server.url}/v2/models/{NAME}/infer"


def _valid_json(images: np.ndarray) -> bytes:
    return json.dumps(client.v2_request(images)).encode()


def _send(server: helpers.Process, body: bytes, headers: list[tuple[str, str]],
          timeout_s: float = 60.0) -> tuple[int, str]:
    """POSTs `body` with exactly these headers (repeats kept); (status, text) of the answer."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=timeout_s)
    try:
        connection.putrequest("POST", f"/v2/models/{NAME}/infer", skip_accept_encoding=True)
        for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers]:
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def _refusal(text: str) -> str:
    line = json.loads(text)["error"]
    assert "\n" not in line, line
    return line


def _still_serves(server: helpers.Process, images: np.ndarray, expected: np.ndarray) -> None:
    np.testing.assert_allclose(client.infer_rest(_infer_url(server), images), expected, atol=1e-6, rtol=0)
    assert server.popen.poll() is None


def _padded(images: np.ndarray, inflated_bytes: int) -> bytes:
    """A valid request followed by whitespace (legal after JSON) up to `inflated_bytes`."""
    body = _valid_json(images)
    return body + b" " * (inflated_bytes - len(body))


def test_good_requests_pass_the_guard_gzipped_or_not(guarded, images):
    expected = client.infer_rest(_infer_url(guarded), images)
    for headers, body in (([("Content-Encoding", "gzip")], gzip.compress(_valid_json(images))),
                          ([("Content-Encoding", "identity")], _valid_json(images)),
                          ([("Content-Encoding", "gzip")], gzip.compress(_valid_json(images[:4])) +
                           gzip.compress(b"  \n"))):  # two members, whitespace after the JSON
        status, text = _send(guarded, body, headers)
        assert status == 200, text
        served = client.probabilities(json.loads(text))
        np.testing.assert_allclose(served, expected[:len(served)], atol=1e-6, rtol=0)


def test_a_body_of_two_gzip_members_is_inflated_whole_and_bounded(unguarded, guarded, images):
    # A valid request in the first member, 16 MiB of whitespace in the second: ~16 KB on the wire.
    body = gzip.compress(_valid_json(images)) + gzip.compress(b" " * (16 * 2**20))
    assert len(body) < MAX_BODY_BYTES / 8
    status, text = _send(unguarded, body, [("Content-Encoding", "gzip")])
    assert status == 200, f"unguarded: {status} {text[:300]}"  # 16 MiB inflated and parsed, over any limit
    status, text = _send(guarded, body, [("Content-Encoding", "gzip")])
    assert status == 413 and "inflates to more than" in _refusal(text), text
    _still_serves(guarded, images, client.probabilities(json.loads(_send(unguarded, _valid_json(images), [])[1])))


def test_two_content_encoding_headers_are_refused(unguarded, guarded, images):
    body = gzip.compress(_padded(images, 16 * 2**20))
    headers = [("Content-Encoding", "gzip"), ("Content-Encoding", "identity")]
    status, text = _send(unguarded, body, headers)
    assert status == 200, f"unguarded: {status} {text[:300]}"  # it inflated the body a check of the last header skips
    status, text = _send(guarded, body, headers)
    assert status == 400 and "2 Content-Encoding headers" in _refusal(text), text
    status, text = _send(guarded, body, [("Content-Encoding", "gzip, identity")])
    assert status == 400 and "more than one coding" in _refusal(text), text
    _still_serves(guarded, images, client.infer_rest(_infer_url(unguarded), images))


def test_an_unknown_content_encoding_is_refused(unguarded, guarded, images):
    status, text = _send(unguarded, _valid_json(images), [("Content-Encoding", "br")])
    assert status == 200, f"unguarded: {status} {text[:300]}"  # it read a br body as plain JSON
    status, text = _send(guarded, _valid_json(images), [("Content-Encoding", "br")])
    assert status == 415 and "'br' is not supported" in _refusal(text), text
    status, text = _send(guarded, b"not gzip at all", [("Content-Encoding", "gzip")])
    assert status == 400 and "not gzip data" in _refusal(text), text
    _still_serves(guarded, images, client.infer_rest(_infer_url(unguarded), images))


def test_deeply_nested_json_is_refused_before_mlserver_parses_it(unguarded, guarded, images):
    request = client.v2_request(images[:1])
    nested: object = 1
    for _ in range(900):
        nested = [nested]
    request["parameters"] = {"deep": nested}
    body = json.dumps(request).encode()
    assert len(body) < 8 * 1024
    with pytest.raises((TimeoutError, socket.timeout)):  # the worker hand-off fails; the request waits forever
        _send(unguarded, body, [], timeout_s=NO_ANSWER_S)
    status, text = _send(guarded, body, [])
    assert status == 400, text
    assert _refusal(text) == "request JSON nests 902 levels deep, over this server's limit of 32"
    _still_serves(guarded, images, client.infer_rest(_infer_url(unguarded), images))


def _slow_client(server: helpers.Process, body: bytes, pause_s: float) -> tuple[float, str]:
    """Sends the headers and half the body, pauses `pause_s` (reading whatever the server answers
    meanwhile), then the rest. Returns (seconds until the first answer byte, the answer)."""
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=pause_s)
    try:
        sock.sendall(f"POST /v2/models/{NAME}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:len(body) // 2])
        t0 = time.monotonic()
        try:
            first = sock.recv(65536)
        except TimeoutError:
            first = b""
        if not first:
            sock.settimeout(60)
            sock.sendall(body[len(body) // 2:])
            first = sock.recv(65536)
        waited = time.monotonic() - t0
        answer = first
        while b"\r\n\r\n" in answer and len(answer.split(b"\r\n\r\n", 1)[1]) < _content_length(answer):
            more = sock.recv(65536)
            if not more:
                break
            answer += more
        return waited, answer.decode(errors="replace")
    finally:
        sock.close()


def _content_length(answer: bytes) -> int:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def test_every_request_has_a_deadline(unguarded, guarded, images):
    """A valid request whose client stops sending half-way: the unguarded server waits as long as
    the client likes (it answers once the rest arrives, any time later); the guarded one answers
    504 at its deadline."""
    body = _valid_json(images)
    pause = DEADLINE_S + 10
    waited, answer = _slow_client(unguarded, body, pause)
    assert answer.startswith("HTTP/1.1 200"), answer[:300]
    assert waited >= pause - 1, f"unguarded answered after {waited:.1f} s, before the client sent the rest"
    waited, answer = _slow_client(guarded, body, pause)
    assert answer.startswith("HTTP/1.1 504"), answer[:300]
    assert waited < pause - 1, "the guarded server waited for the client"
    assert _refusal(answer.split("\r\n\r\n", 1)[1]) == (
        f"request not answered within this server's deadline of {DEADLINE_S:g} s")
    _still_serves(guarded, images, client.infer_rest(_infer_url(unguarded), images))


def _repository(server: helpers.Process, action: str, token: str = "") -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    path = "/v2/repository/index" if action == "index" else f"/v2/repository/models/{NAME}/{action}"
    status, answer = client.post(server.url + path, b"{}", headers=headers, timeout_s=120)
    return status, answer if isinstance(answer, str) else json.dumps(answer)


def test_the_rest_repository_api_needs_the_token(unguarded, guarded, images):
    expected = client.infer_rest(_infer_url(unguarded), images)
    # Unguarded: anyone unloads the model; every inference then gets 404.
    status, text = _repository(unguarded, "unload")
    assert status == 200, text
    status, _ = client.post(_infer_url(unguarded), _valid_json(images))
    assert status == 404
    assert _repository(unguarded, "load")[0] == 200  # put back for the other tests

    for action in ("unload", "load", "index"):
        for token in ("", "wrong-token"):
            status, text = _repository(guarded, action, token)
            assert status == 401 and "needs this server's repository token" in _refusal(text), (action, token, text)
        _still_serves(guarded, images, expected)
    # With the token the API works as MLServer's.
    status, text = _repository(guarded, "index", TOKEN)
    assert status == 200 and NAME in text, text
    assert _repository(guarded, "unload", TOKEN)[0] == 200
    assert client.post(_infer_url(guarded), _valid_json(images))[0] == 404
    assert _repository(guarded, "load", TOKEN)[0] == 200
    _still_serves(guarded, images, expected)


def _grpc_unload(serving_venv: str, server: helpers.Process, service: str, token: str = "") -> dict:
    command = [os.path.join(serving_venv, "bin", "python"), "-m", "serving.client", "grpc-unload",
               server.grpc_address, NAME, service, *([token] if token else [])]
    result = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _grpc_infer(serving_venv: str, server: helpers.Process, images: np.ndarray, tmp_path: Path) -> np.ndarray:
    np.save(tmp_path / "images.npy", images)
    subprocess.run([os.path.join(serving_venv, "bin", "python"), "-m", "serving.client", "grpc", server.grpc_address,
                    NAME, str(tmp_path / "images.npy"), str(tmp_path / "probs.npy")],
                   check=True, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, timeout=120)
    return np.load(tmp_path / "probs.npy")


def test_the_grpc_repository_service_needs_the_token(unguarded, guarded, serving_venv, images, tmp_path):
    expected = client.infer_rest(_infer_url(unguarded), images)
    # Unguarded: a gRPC unload (either service) succeeds, and the model is gone.
    assert _grpc_unload(serving_venv, unguarded, "inference")["code"] == "OK"
    status, _ = client.post(_infer_url(unguarded), _valid_json(images))
    assert status == 404
    assert _repository(unguarded, "load")[0] == 200

    for service in ("inference", "model_repository"):
        for token in ("", "wrong-token"):
            answer = _grpc_unload(serving_venv, guarded, service, token)
            assert answer["code"] == "UNAUTHENTICATED", (service, token, answer)
            assert "needs this server's repository token" in answer["details"], answer
        np.testing.assert_allclose(_grpc_infer(serving_venv, guarded, images, tmp_path), expected, atol=1e-6, rtol=0)
        _still_serves(guarded, images, expected)
    assert _grpc_unload(serving_venv, guarded, "inference", TOKEN)["code"] == "OK"
    assert client.post(_infer_url(guarded), _valid_json(images))[0] == 404
    assert _repository(guarded, "load", TOKEN)[0] == 200
    _still_serves(guarded, images, expected)


# --- the guard's checks, as functions -------------------------------------------------------------
def test_json_depth_counts_brackets_outside_strings_only():
    def depth(value: object) -> int:
        if isinstance(value, list):
            return 1 + max((depth(v) for v in value), default=0)
        if isinstance(value, dict):
            return 1 + max((depth(v) for v in value.values()), default=0)
        return 0

    rng = np.random.default_rng(0)
    texts = ["x", 'a"b', "c\\", "[{", '\\"]', '\\\\"[', "]]]}}"]

    def value(level: int) -> object:
        roll = rng.random()
        if level > 8 or roll < 0.3:
            return texts[rng.integers(len(texts))]
        if roll < 0.65:
            return [value(level + 1) for _ in range(rng.integers(0, 4))]
        return {texts[rng.integers(len(texts))] + str(i): value(level + 1) for i in range(rng.integers(0, 4))}

    for _ in range(2000):
        document = value(0)
        assert launch.json_depth(json.dumps(document).encode()) == depth(document), json.dumps(document)
    assert launch.json_depth(b"[" * 100 + b"]" * 100) == 100
    assert launch.json_depth(b'"' + b"[" * 100 + b'"') == 0


def test_inflate_gzip_reads_every_member_within_the_bound():
    assert launch.inflate_gzip(gzip.compress(b"ab") + gzip.compress(b"cd"), 4) == b"abcd"
    for body, status, words in ((gzip.compress(b"ab") + gzip.compress(b"cde"), 413, "inflates to more than 4"),
                                (gzip.compress(b"ab")[:-4], 400, "ends early"),
                                (gzip.compress(b"ab") + b"junk", 400, "not gzip data"),
                                (b"", 400, "empty")):
        with pytest.raises(launch.Refused) as refused:
            launch.inflate_gzip(body, 4)
        assert refused.value.status == status and words in refused.value.message, refused.value.message


def test_a_repository_call_with_the_token_has_the_longer_deadline():
    """The guard's deadline rule, in front of an app that takes 0.6 s to answer (as a model load
    may take longer than an inference may): with a 0.2 s deadline an inference gets 504, and so
    does a repository call if the repository deadline is as short; with the token and a longer
    repository deadline the same call is answered by the app."""

    async def slow_app(scope, receive, send) -> None:
        await receive()
        await asyncio.sleep(0.6)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    def status_of(path: str, repository_deadline_s: float) -> int:
        settings = launch.GuardSettings(MAX_BODY_BYTES, deadline_s=0.2, repository_token=TOKEN,
                                        repository_deadline_s=repository_deadline_s)
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "path": path, "headers": [(b"authorization", f"Bearer {TOKEN}".encode())]}
        asyncio.run(launch.Guard(slow_app, settings)(scope, receive, send))
        return sent[0]["status"]

    load = f"/v2/repository/models/{NAME}/load"
    assert status_of(f"/v2/models/{NAME}/infer", repository_deadline_s=5.0) == 504
    assert status_of(load, repository_deadline_s=0.2) == 504
    assert status_of(load, repository_deadline_s=5.0) == 200
