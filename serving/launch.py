"""`mlserver start FOLDER` behind the project's guard (run in the serving environment).

MLServer 1.7 has a size limit for gRPC messages only, and no switch for its model-repository API
or for request deadlines. Tried on 127.0.0.1 without a guard: a 95 KB body of two gzip members
inflated to 96 MiB and was accepted (MLServer inflates every member; a check of the first one
sees a small body), as was one under two Content-Encoding headers; a 6 KB request nested about
900 deep was never answered (the hand-off to the inference worker pickles it, fails with
RecursionError in the queue's feeder thread, and the request waits forever); and anyone reaching
the port could `POST /v2/repository/models/<name>/unload`, after which every inference got 404.

So this starts MLServer's own CLI after putting two guards in front of it:

REST (`Guard`, pure ASGI, outermost middleware of the app MLServer creates), per request:
  - the whole request (body included) is answered within `deadline_s`, else 504;
  - a body over `max_body_bytes` (by Content-Length, as it streams, or once inflated) gets 413;
  - the guard inflates a gzip body itself (every member, bounded by `max_body_bytes`) and passes
    it on without Content-Encoding; two Content-Encoding headers or codings get 400, an encoding
    other than gzip or identity 415, a body that is not gzip data 400;
  - a body nested deeper than `max_json_depth` arrays/objects gets 400 before anything parses it;
  - `/v2/repository/*` gets 403 unless a repository token is configured and the request carries
    `Authorization: Bearer <token>` (401 if it is wrong). A repository call that has the token is
    answered within `repository_deadline_s` (600 s) instead: loading a model (torch, its signature check)
    took over 30 s on a busy 2-core CI machine, and a load cut off by the inference deadline
    answered 504 while MLServer went on loading it.
gRPC (`GrpcGuard`, a server interceptor): the repository methods (of both
`inference.GRPCInferenceService` and the deprecated `inference.model_repository.ModelRepositoryService`)
get PERMISSION_DENIED / UNAUTHENTICATED the same way, and unary calls get DEADLINE_EXCEEDED
after `deadline_s`.
Every refusal is one line: {"error": "..."} over REST, the status details over gRPC.

    python -m serving.launch FOLDER --max-body-bytes N [--max-json-depth 32] [--deadline-s 30]
    # the repository API: token in $MNIST_REPOSITORY_TOKEN or in the file --repository-token-file names
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hmac
import json
import os
import sys
import zlib
from typing import Any, Awaitable, Callable

import numpy as np

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# A client that goes on sending past the limit is read (and dropped) up to this many bytes more, so
# that it gets the 413 instead of a reset connection; past that the connection is closed.
DRAIN_BYTES = 64 * 1024 * 1024
REPOSITORY_PREFIX = "/v2/repository"
REPOSITORY_TOKEN_VARIABLE = "MNIST_REPOSITORY_TOKEN"
DEFAULT_MAX_JSON_DEPTH = 32
DEFAULT_DEADLINE_S = 30.0
REPOSITORY_DEADLINE_S = 600.0
# The gRPC repository methods: on the inference service and on the deprecated repository service.
GRPC_REPOSITORY_SERVICE = "inference.model_repository.ModelRepositoryService"
GRPC_REPOSITORY_METHODS = ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload")


@dataclasses.dataclass(frozen=True)
class GuardSettings:
    max_body_bytes: int
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    deadline_s: float = DEFAULT_DEADLINE_S
    repository_token: str = ""  # empty: the repository API is off
    repository_deadline_s: float = REPOSITORY_DEADLINE_S


class Refused(Exception):
    """A request the guard answers itself: HTTP `status` and a one-line `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ClientGone(Exception):
    """The client disconnected before its request was read: nothing to answer."""


# --- what the guard checks, as plain functions --------------------------------------------------
def content_coding(values: list[bytes]) -> str:
    """The one content coding of a request ("" for none) from its Content-Encoding header values."""
    if len(values) > 1:
        raise Refused(400, f"{len(values)} Content-Encoding headers; send at most one (gzip)")
    codings = [c.strip().lower() for c in values[0].decode("latin-1").split(",") if c.strip()] if values else []
    if len(codings) > 1:
        raise Refused(400, f"Content-Encoding {', '.join(codings)}: more than one coding; send at most one (gzip)")
    coding = codings[0] if codings else ""
    if coding in ("", "identity"):
        return ""
    if coding in ("gzip", "x-gzip"):
        return "gzip"
    raise Refused(415, f"Content-Encoding {coding[:40]!r} is not supported; send gzip or no encoding")


def inflate_gzip(body: bytes, max_bytes: int) -> bytes:
    """Every gzip member of `body`, inflated, at most `max_bytes` in all (Refused 413 past that,
    400 if it is not gzip data)."""
    out, data = bytearray(), body
    if not data:
        raise Refused(400, "Content-Encoding gzip, but the body is empty")
    while data:
        inflater = zlib.decompressobj(wbits=31)
        try:
            out += inflater.decompress(data, max_bytes + 1 - len(out))
        except zlib.error as e:
            raise Refused(400, f"Content-Encoding gzip, but the body is not gzip data ({e})") from None
        if len(out) > max_bytes:
            raise Refused(413, f"request body too large: a gzip body that inflates to more than {max_bytes} bytes, "
                               "over this server's limit; send fewer images per request")
        if not inflater.eof:
            raise Refused(400, "Content-Encoding gzip, but the gzip data ends early (truncated)")
        data = inflater.unused_data  # the next member, if any
    return bytes(out)


_JSON_SPECIAL = np.zeros(256, dtype=bool)
_JSON_SPECIAL[[ord(c) for c in '"\\[]{}']] = True
_JSON_STEP = np.zeros(256, dtype=np.int32)
_JSON_STEP[[ord("["), ord("{")]] = 1
_JSON_STEP[[ord("]"), ord("}")]] = -1
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def _unescaped_quotes(found: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Which of the special characters `found` (at `positions`) are quotes no backslash escapes:
    those after an even run of backslashes (a backslash always stands inside a string in JSON)."""
    quote = found == _QUOTE
    backslash = found == _BACKSLASH
    if not backslash.any():
        return quote
    adjacent = np.zeros_like(backslash)
    adjacent[1:] = positions[1:] == positions[:-1] + 1
    continues = np.zeros_like(backslash)
    continues[1:] = backslash[1:] & backslash[:-1] & adjacent[1:]
    index = np.arange(found.size, dtype=np.int64)
    run_length = index - np.maximum.accumulate(np.where(continues, 0, index)) + 1
    escaped = np.zeros_like(backslash)
    escaped[1:] = backslash[:-1] & adjacent[1:] & (run_length[:-1] % 2 == 1)
    return quote & ~escaped


def json_depth(body: bytes) -> int:
    """How deep arrays and objects nest in the JSON text `body` (brackets inside strings do not
    count). Vectorised: linear in the body, quick for 8 MiB of brackets, and it never recurses."""
    chars = np.frombuffer(body, dtype=np.uint8)
    positions = np.flatnonzero(_JSON_SPECIAL[chars])
    if positions.size == 0:
        return 0
    found = chars[positions]
    in_string = np.bitwise_xor.accumulate(_unescaped_quotes(found, positions).view(np.uint8)).view(bool)
    step = np.where(in_string, 0, _JSON_STEP[found])  # a bracket is never a quote: its parity is the one before
    return int(np.cumsum(step, dtype=np.int32).max(initial=0))


def check_repository_access(headers: list[tuple[bytes, bytes]], token: str) -> None:
    if not token:
        raise Refused(403, "the model repository API (index, load, unload) is off on this server")
    given = b"".join(v for k, v in headers if k == b"authorization").decode("latin-1")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        raise Refused(401, "the model repository API needs this server's repository token "
                           "(Authorization: Bearer <token>)")


def is_repository_path(path: str) -> bool:
    return path == REPOSITORY_PREFIX or path.startswith(REPOSITORY_PREFIX + "/")


def deadline_of(settings: GuardSettings, repository_call: bool) -> float:
    """How long a request may take: a repository call (it has passed the token check) may load a model."""
    return max(settings.deadline_s, settings.repository_deadline_s) if repository_call else settings.deadline_s


# --- REST -----------------------------------------------------------------------------------------
class Guard:
    """Pure ASGI middleware in front of MLServer's REST app (see the module's docstring)."""

    def __init__(self, app: Any, settings: GuardSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        deadline_s = deadline_of(self.settings, is_repository_path(scope.get("path", "")))

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await asyncio.wait_for(self._guarded(scope, receive, tracking_send), deadline_s)
        except Refused as refusal:
            await _answer(send, refusal.status, refusal.message)
        except ClientGone:
            pass
        except asyncio.TimeoutError:
            if not started:  # else the client sees the connection close mid-answer
                await _answer(send, 504, f"request not answered within this server's deadline of {deadline_s:g} s")

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = list(scope.get("headers") or [])
        path = scope.get("path", "")
        if is_repository_path(path):
            check_repository_access(headers, self.settings.repository_token)
        coding = content_coding([v for k, v in headers if k == b"content-encoding"])
        body = await self._read_body(headers, receive)
        if coding == "gzip":
            body = inflate_gzip(body, self.settings.max_body_bytes)
        if body.count(b"[") + body.count(b"{") > self.settings.max_json_depth:  # else it cannot nest deeper
            depth = await asyncio.to_thread(json_depth, body)  # numpy, off the event loop
            if depth > self.settings.max_json_depth:
                raise Refused(400, f"request JSON nests {depth} levels deep, over this server's limit of "
                                   f"{self.settings.max_json_depth}")
        passed_headers = [(k, v) for k, v in headers if k not in (b"content-encoding", b"content-length")]
        passed_headers.append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # http.disconnect, when the client goes

        await self.app({**scope, "headers": passed_headers}, replay, send)

    async def _read_body(self, headers: list[tuple[bytes, bytes]], receive: Receive) -> bytes:
        limit = self.settings.max_body_bytes
        declared = dict(headers).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _drain(receive, 0, True, limit)
            raise Refused(413, f"request body too large: Content-Length {int(declared)} bytes, over this server's "
                               f"limit of {limit} bytes; send fewer images per request")
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > limit:
                await _drain(receive, size, more, limit)
                raise Refused(413, f"request body too large: more than {limit} bytes sent, over this server's "
                                   f"limit of {limit} bytes; send fewer images per request")
            chunks.append(chunk)
        return b"".join(chunks)


async def _drain(receive: Receive, seen: int, more: bool, limit: int) -> None:
    while more and seen < limit + DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        more = message.get("more_body", False)


async def _answer(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# --- gRPC -----------------------------------------------------------------------------------------
def is_grpc_repository_method(method: str) -> bool:
    service, _, name = method.lstrip("/").rpartition("/")
    return service == GRPC_REPOSITORY_SERVICE or name in GRPC_REPOSITORY_METHODS


def grpc_guard(settings: GuardSettings) -> Any:
    """A grpc.aio server interceptor: the repository methods need the token; unary calls a deadline."""
    import grpc

    def refusing(handler: Any, code: Any, message: str) -> Any:
        async def refuse(request: Any, context: Any) -> Any:
            await context.abort(code, message)

        return grpc.unary_unary_rpc_method_handler(refuse, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    def with_deadline(handler: Any, deadline_s: float) -> Any:
        async def call(request: Any, context: Any) -> Any:
            try:
                return await asyncio.wait_for(handler.unary_unary(request, context), deadline_s)
            except asyncio.TimeoutError:
                await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                    f"request not answered within this server's deadline of {deadline_s:g} s")

        return grpc.unary_unary_rpc_method_handler(call, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    class GrpcGuard(grpc.aio.ServerInterceptor):
        async def intercept_service(self, continuation: Any, details: Any) -> Any:
            handler = await continuation(details)
            if handler is None:
                return handler
            repository_call = is_grpc_repository_method(details.method)
            if repository_call:
                try:
                    metadata = [(k.encode(), v.encode() if isinstance(v, str) else v)
                                for k, v in (details.invocation_metadata or ())]
                    check_repository_access(metadata, settings.repository_token)
                except Refused as refusal:
                    code = grpc.StatusCode.PERMISSION_DENIED
                    if refusal.status == 401:
                        code = grpc.StatusCode.UNAUTHENTICATED
                    return refusing(handler, code, refusal.message)
            if handler.unary_unary is not None and asyncio.iscoroutinefunction(handler.unary_unary):
                return with_deadline(handler, deadline_of(settings, repository_call))
            return handler

    return GrpcGuard()


# --- wiring into MLServer ------------------------------------------------------------------------
def install_guard(settings: GuardSettings) -> None:
    """Puts the guards in front of every REST app and gRPC server MLServer creates from now on.
    MLServer builds both inside its own classes with no hook: the REST app is wrapped where
    mlserver.rest.server calls create_app, and the gRPC server gets the interceptor first where
    mlserver.grpc.server calls grpc.aio.server."""
    import types

    import grpc
    import mlserver.grpc.server as grpc_server
    import mlserver.rest.server as rest_server

    create_app = rest_server.create_app

    def create_guarded_app(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_middleware(Guard, settings=settings)  # added last: the outermost of the app's middleware
        return app

    def guarded_server(*args: Any, interceptors: Any = (), **kwargs: Any) -> Any:
        return grpc.aio.server(*args, interceptors=[grpc_guard(settings), *interceptors], **kwargs)

    rest_server.create_app = create_guarded_app
    grpc_server.aio = types.SimpleNamespace(**{**vars(grpc.aio), "server": guarded_server})


def failed_start_detector() -> Callable[[], bool]:
    """Whether MLServer stopped because a model failed to load at start. It then stops itself
    without a signal (MLServer.start calls stop()) and exits 0; `main` exits 1 instead, so that
    the model's refusal (logged in one line by serving/runtime.py) is a failure to whoever started it."""
    import mlserver.server

    stops: list[Any] = []
    stop = mlserver.server.MLServer.stop

    async def recording_stop(self: Any, sig: Any = None) -> None:
        stops.append(sig)
        await stop(self, sig)

    mlserver.server.MLServer.stop = recording_stop
    return lambda: bool(stops) and stops[0] is None


def repository_token(token_file: str, environ: dict[str, str] | None = None) -> str:
    environ = os.environ if environ is None else environ
    if token_file:
        with open(token_file, encoding="utf-8") as f:
            return f.read().strip()
    return environ.get(REPOSITORY_TOKEN_VARIABLE, "").strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.launch", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="MLServer folder: settings.json and the model's model-settings.json")
    parser.add_argument("--max-body-bytes", type=int, required=True, help="largest REST request body accepted")
    parser.add_argument("--max-json-depth", type=int, default=DEFAULT_MAX_JSON_DEPTH,
                        help="deepest nesting of arrays/objects accepted in a REST body")
    parser.add_argument("--deadline-s", type=float, default=DEFAULT_DEADLINE_S,
                        help="every request is answered within this (504 / DEADLINE_EXCEEDED)")
    parser.add_argument("--repository-token-file", default="",
                        help=f"enables the model-repository API for this token (else ${REPOSITORY_TOKEN_VARIABLE}; "
                             "neither: off)")
    args = parser.parse_args(argv)
    install_guard(GuardSettings(args.max_body_bytes, args.max_json_depth, args.deadline_s,
                                repository_token(args.repository_token_file)))
    failed_start = failed_start_detector()
    from mlserver.cli.main import main as mlserver_main

    sys.argv = ["mlserver", "start", args.folder]
    try:
        mlserver_main()
        status: Any = 0
    except SystemExit as e:  # click's way of returning
        status = e.code
    sys.exit(1 if failed_start() else status)


if __name__ == "__main__":
    main()
