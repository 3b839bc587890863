"""`mlserver start FOLDER`, with a limit on the size of a request body (run in the serving environment).

MLServer has a limit for gRPC messages (`grpc_max_message_length`) but none for REST bodies:
uvicorn reads whatever arrives. This starts MLServer's own CLI after adding a small ASGI middleware
to its REST app that answers a body over the limit (by Content-Length, as it streams, or once
gzip-decompressed) with HTTP 413 and a JSON error, before anything parses it.

    python -m serving.launch FOLDER --max-body-bytes N
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
# A client that goes on sending past the limit is read (and dropped) up to this many bytes more, so
# that it gets the 413 instead of a reset connection; past that the connection is closed.
DRAIN_BYTES = 64 * 1024 * 1024


class BodyLimit:
    """Pure ASGI middleware: HTTP request bodies over `max_bytes` get a 413 and never reach the app."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send: Send, what: str) -> None:
        body = json.dumps({"error": f"request body too large: {what}, over this server's limit of "
                                    f"{self.max_bytes} bytes; send fewer images per request"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _drain(self, receive: Receive, seen: int, more: bool) -> None:
        while more and seen < self.max_bytes + DRAIN_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            more = message.get("more_body", False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._drain(receive, 0, True)
            await self._refuse(send, f"Content-Length {int(declared)} bytes")
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            more = message.get("more_body", False)
            if size > self.max_bytes:
                await self._drain(receive, size, more)
                await self._refuse(send, f"more than {self.max_bytes} bytes sent")
                return
            chunks.append(chunk)
        body = b"".join(chunks)
        if b"gzip" in headers.get(b"content-encoding", b""):  # MLServer decompresses gzip bodies itself
            try:
                inflater = zlib.decompressobj(wbits=31)
                inflated = len(inflater.decompress(body, self.max_bytes + 1))
            except zlib.error as e:
                body_error = json.dumps({"error": f"Content-Encoding gzip, but the body is not gzip data ({e})"})
                await send({"type": "http.response.start", "status": 400,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": body_error.encode()})
                return
            if inflated > self.max_bytes:
                await self._refuse(send, f"a gzip body that inflates to more than {self.max_bytes} bytes")
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def install_body_limit(max_bytes: int) -> None:
    """Makes every REST app MLServer creates from now on check body sizes first."""
    import mlserver.rest.server as rest_server

    create_app = rest_server.create_app

    def create_app_with_limit(*args: Any, **kwargs: Any) -> Any:
        app = create_app(*args, **kwargs)
        app.add_middleware(BodyLimit, max_bytes=max_bytes)
        return app

    rest_server.create_app = create_app_with_limit


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m serving.launch", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="MLServer folder: settings.json and the model's model-settings.json")
    parser.add_argument("--max-body-bytes", type=int, required=True, help="largest REST request body accepted")
    args = parser.parse_args(argv)
    install_body_limit(args.max_body_bytes)
    from mlserver.cli.main import main as mlserver_main

    sys.argv = ["mlserver", "start", args.folder]
    mlserver_main()


if __name__ == "__main__":
    main()
