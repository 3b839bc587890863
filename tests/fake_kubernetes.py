"""A small Kubernetes API server for the tests of the steps that create custom objects (a trainer's
TrainJob or TFJob, KServeDeployer's InferenceService): a real HTTP server on 127.0.0.1, in a
thread, speaking the REST paths the `kubernetes` client sends for namespaced custom objects,

    POST   /apis/{group}/{version}/namespaces/{namespace}/{plural}
    GET | PATCH | DELETE   /apis/{group}/{version}/namespaces/{namespace}/{plural}/{name}

with Kubernetes' answers: the stored object (create fills in uid, resourceVersion and
creationTimestamp; PATCH applies a JSON merge patch), or a Status body: 404 for a resource type it
does not serve (a CRD not installed), a namespace it does not have, or an object it does not hold;
403 for a namespace or verb made forbidden, or a test's admission webhook refusing a create; 409 for
a create of a name it holds. A test makes objects advance (`after`: run an action once the N-th
request of a kind was answered, e.g. set a job's conditions), makes the next answers fail
(`fail_next`), and reads every request it received (`requests`).

The code under test reaches it through the real client: `api_client()`, or `write_kubeconfig()`
for $KUBECONFIG (components/cluster.py).
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import json
import re
import threading
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

TOKEN = "fake-service-account-token"
VERBS = {"POST": "create", "GET": "get", "PATCH": "patch", "DELETE": "delete"}
REASONS = {403: "Forbidden", 404: "NotFound", 409: "AlreadyExists", 500: "InternalError", 503: "ServiceUnavailable"}
PATH = re.compile(r"^/apis/(?P<group>[^/]+)/(?P<version>[^/]+)/namespaces/(?P<namespace>[^/]+)/(?P<plural>[^/]+)"
                  r"(?:/(?P<name>[^/]+))?$")


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str
    namespace: str
    plural: str
    name: str  # the object's (for a create, the body's)
    body: Any
    content_type: str
    authorization: str

    @property
    def verb(self) -> str:
        return VERBS[self.method]


def status(code: int, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Kubernetes Status object, as the API server answers a refused request."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": REASONS.get(code, ""), "details": details or {}, "code": code}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: what PATCH with application/merge-patch+json does."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


class FakeKubernetes:
    """The fake API server; `with FakeKubernetes(...) as fake:` serves until the block ends."""

    def __init__(self, resources: Iterable[tuple[str, str, str]], namespaces: Iterable[str] = ("default",)) -> None:
        self.resources = set(resources)  # (group, version, plural) it serves, as if their CRDs were installed
        self.namespaces = set(namespaces)
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}  # (namespace, plural, name) -> object
        self.requests: list[Request] = []
        self.forbidden: list[tuple[str | None, str | None]] = []  # (namespace, verb); None: any
        # plural -> a webhook on each create: it may change the object (a mutating or pruning one) and
        # returns why it refuses it, or None
        self.admission: dict[str, Callable[[dict[str, Any]], str | None]] = {}
        self._actions: list[tuple[str, str, int, Callable[[FakeKubernetes], None]]] = []
        self._failures: list[tuple[str, int]] = []  # (method, status) of the next answers to fail
        self._uids = itertools.count(1)
        self._lock = threading.RLock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # --- the test's side ---------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeKubernetes:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def api_client(self) -> Any:
        from kubernetes import client

        configuration = client.Configuration(host=self.url, api_key={"authorization": TOKEN},
                                             api_key_prefix={"authorization": "Bearer"})
        return client.ApiClient(configuration)

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """A kubeconfig whose one context is this server, with a service account's bearer token."""
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": TOKEN}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}],
        }))
        return path

    def forbid(self, namespace: str | None = None, verb: str | None = None) -> None:
        """Answer 403 to `verb` (create, get, patch, delete; None: all) in `namespace` (None: all)."""
        self.forbidden.append((namespace, verb))

    def after(self, method: str, plural: str, count: int, action: Callable[[FakeKubernetes], None]) -> None:
        """Run `action(self)` at the `count`-th `method` request on `plural`, its answer already taken."""
        self._actions.append((method, plural, count, action))

    def fail_next(self, method: str, code: int, times: int = 1) -> None:
        self._failures += [(method, code)] * times

    def put(self, obj: dict[str, Any]) -> None:
        """Hold `obj` as if created earlier (its plural is its kind's, lower case, plus "s")."""
        metadata = obj["metadata"]
        with self._lock:
            self.objects[(metadata["namespace"], obj["kind"].lower() + "s", metadata["name"])] = copy.deepcopy(obj)

    def only(self, plural: str) -> dict[str, Any]:
        """The one object of `plural` it holds (a test does not know a job's fresh name)."""
        found = [obj for (_, kind, _), obj in self.objects.items() if kind == plural]
        assert len(found) == 1, f"{len(found)} {plural} held"
        return found[0]

    def set_conditions(self, plural: str, *conditions: tuple[str, str]) -> None:
        """Give the one object of `plural` the conditions (type, reason), all True, as its operator would."""
        with self._lock:
            self.only(plural)["status"] = {"conditions": [
                {"type": kind, "status": "True", "reason": reason, "message": f"{kind}: {reason}"}
                for kind, reason in conditions]}

    def seen(self, method: str, plural: str | None = None) -> list[Request]:
        return [r for r in self.requests if r.method == method and plural in (None, r.plural)]

    # --- the server's side ---------------------------------------------------------------------
    def _answer(self, request: Request, group: str, version: str) -> tuple[int, dict[str, Any]]:
        resource = f"{request.plural}.{group}"
        if (group, version, request.plural) not in self.resources:
            return 404, status(404, "the server could not find the requested resource")
        for namespace, verb in self.forbidden:
            if namespace in (None, request.namespace) and verb in (None, request.verb):
                return 403, status(403, f'{resource} is forbidden: User "system:serviceaccount:{request.namespace}:'
                                        f'default-editor" cannot {request.verb} resource "{request.plural}" in API '
                                        f'group "{group}" in the namespace "{request.namespace}"',
                                   {"group": group, "kind": request.plural})
        if self._failures and self._failures[0][0] == request.method:
            code = self._failures.pop(0)[1]
            return code, status(code, f"injected failure {code}")
        key = (request.namespace, request.plural, request.name)
        not_found = status(404, f'{resource} "{request.name}" not found',
                           {"name": request.name, "group": group, "kind": request.plural})
        if request.method == "POST":
            if request.namespace not in self.namespaces:
                return 404, status(404, f'namespaces "{request.namespace}" not found',
                                   {"name": request.namespace, "kind": "namespaces"})
            if key in self.objects:
                return 409, status(409, f'{resource} "{request.name}" already exists',
                                   {"name": request.name, "group": group, "kind": request.plural})
            refusal = self.admission.get(request.plural, lambda obj: None)(request.body)
            if refusal:
                return 403, status(403, f'admission webhook "validator.{request.plural}" denied the request: {refusal}')
            obj = copy.deepcopy(request.body)
            obj["metadata"].update(uid=f"uid-{next(self._uids)}", resourceVersion="1",
                                   creationTimestamp="2026-01-01T00:00:00Z")
            self.objects[key] = obj
            return 201, obj
        if key not in self.objects:
            return 404, not_found
        if request.method == "GET":
            return 200, self.objects[key]
        if request.method == "PATCH":
            self.objects[key] = merge_patch(self.objects[key], request.body)
            return 200, self.objects[key]
        del self.objects[key]
        return 200, status(200, "deleted") | {"status": "Success"}

    def _handle(self, method: str, path: str, body: Any, headers: Any) -> tuple[int, str, list[Callable]]:
        """The answer's status and JSON (taken before any action changes the objects), and the actions due."""
        match = PATH.match(path.split("?")[0])
        if not match:  # recorded too: a test asserts nothing but the Kubernetes API was asked
            with self._lock:
                self.requests.append(Request(method, path, "", "", "", body, headers.get("Content-Type", ""),
                                             headers.get("Authorization", "")))
            return 404, json.dumps(status(404, "the server could not find the requested resource")), []
        name = match["name"] or (body or {}).get("metadata", {}).get("name", "")
        request = Request(method, path, match["namespace"], match["plural"], name, body,
                          headers.get("Content-Type", ""), headers.get("Authorization", ""))
        with self._lock:
            self.requests.append(request)
            code, answer = self._answer(request, match["group"], match["version"])
            count = len(self.seen(method, request.plural))
            due = [action for m, plural, n, action in self._actions
                   if (m, plural, n) == (method, request.plural, count)]
            return code, json.dumps(answer), due

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                code, answer, due = fake._handle(self.command, self.path, body, self.headers)
                # Before the answer goes out: the next request sees what the action did (what an operator
                # does between two polls), and a signal it sends lands while the client waits.
                for action in due:
                    action(fake)
                data = answer.encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()

            do_GET = do_POST = do_PATCH = do_DELETE = _serve

            def log_message(self, *args: Any) -> None:  # quiet: the tests read `requests` instead
                pass

        return Handler
