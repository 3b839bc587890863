"""The model registry client every stage and command uses: one registered model in an MLflow Model
Registry, embedded SQLite or any tracking server. It holds its own MlflowClient and never touches
MLflow's process-wide tracking or registry URI, so two registries in one process cannot mix.

What it guarantees, so that no caller has to:
- **It fails closed.** "No champion" is only a registered model that does not exist or has no
  `champion` alias (read from the registered model's aliases); any other error (permissions, 5xx,
  time-outs after MLflow's retries, a download that breaks) is a RegistryError naming the registry
  and the problem.
- **One writer of the alias at a time.** Every alias writer (the pusher's promotion, rollback,
  reinstate) holds one lock around read, compare and set: a file lock beside the embedded
  store's mlflow.db, a PostgreSQL session advisory lock on a server's backend database (released
  if its holder dies). MLflow's REST API has no conditional alias update, and a database
  transaction of ours cannot include the server's own write, hence the lock. Alias edits in the
  MLflow UI bypass it.
- **The champion's state has a revision.** Every alias writer bumps the registered model's
  `champion_revision` tag, so a run can tell "the champion I was judged against" from "the
  champion now", and a rollback or a reinstate is a new state even when the alias lands on a
  version it held before.
- **Every registered file is signed** (trainers/manifest.py): a version's files are uploaded as
  `signed/` (the pyfunc `model/`, the evaluation, the training data's baseline, identity.json)
  with `manifest.sig` beside it, and downloaded ones are verified before anything reads them; a
  version whose files lie outside the registry's own artifact root is refused.

There is one implementation and no interface class: MLflow's own client already abstracts the
store (SQLite, a server, Databricks), and nothing else is planned to stand behind this.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

from components import locks
from components.names import RULE, is_safe_name
from trainers import manifest
from trainers.model_format import (
    EXPORT_IN_SIGNED,
    MODEL_META_FILE,
    NUM_CLASSES,
    PYFUNC_IN_SIGNED,
    SIGNED_DIR,
    copy_tree,
    read_bytes,
)

CHAMPION_ALIAS = "champion"
# The exported model folder a version was registered from: one version per trained model.
SOURCE_MODEL_TAG = "source_model_uri"
# Tag holding the value of the decision rule's primary metric when the version was registered.
PRIMARY_VALUE_TAG = "primary_value"
# The registered model's tag every alias writer bumps: the champion's state, for caching and checks.
REVISION_TAG = "champion_revision"
# A version `registry rollback` moved away from: never promoted again until `registry reinstate`.
REJECTED_TAG = "rejected"
# The sha256 of the exported model's files (from the signed manifest): a new version with the files
# of a rejected one is rejected too.
MODEL_SHA_TAG = "model_sha256"
MANIFEST_SHA_TAG = "manifest_sha256"
SIGNING_KEY_TAG = "signing_key"
# Why the pusher left the alias where it was, recorded on the version it registered or adopted.
NOT_PROMOTED_TAG = "not_promoted_reason"
# The run artifacts of a version: the signed folder and the signature beside it (trainers/model_format.py).
MODEL_DIR = PYFUNC_IN_SIGNED  # the MLflow pyfunc, inside SIGNED_DIR: the version's source
BASELINE_DIR = "baseline"  # the training data's statistics and images (statistics, fingerprints), inside SIGNED_DIR
STATISTICS_DIR = "statistics"
IDENTITY_FILE = "identity.json"
PYFUNC_CODE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "registry_pyfunc.py")
TRAINERS_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trainers")
# registry_lock_uri "none": a server registry without a lock, chosen knowingly (one run at a time).
NO_LOCK = "none"
# pg_advisory_lock(key1, key2): key1 says "this project's alias lock", key2 the registered model.
_ADVISORY_LOCK_CLASS = 0x6D6E6973  # "mnis"


class RegistryError(RuntimeError):
    """The registry cannot do what was asked; the message says which registry and why."""


@dataclasses.dataclass(frozen=True)
class ModelVersion:
    name: str
    version: str
    tags: dict[str, str]
    aliases: tuple[str, ...]
    run_id: str = ""
    source: str = ""

    @property
    def primary_value(self) -> float | None:
        value = self.tags.get(PRIMARY_VALUE_TAG)
        return float(value) if value else None

    @property
    def rejected(self) -> bool:
        return self.tags.get(REJECTED_TAG) == "true"


@dataclasses.dataclass(frozen=True)
class ChampionState:
    """What the `champion` alias points at, read once: a version, or none, at a revision."""

    registry_uri: str
    model_name: str
    version: ModelVersion | None
    revision: str

    @property
    def present(self) -> bool:
        return self.version is not None

    @property
    def identity(self) -> str:
        """The state in one string: equal strings, equal champions (what a run is judged against)."""
        what = f"version {self.version.version}" if self.version else "no champion"
        return f"{self.model_name}@{CHAMPION_ALIAS}: {what}, revision {self.revision}, in {self.registry_uri}"

    def describe(self) -> str:
        return f"version {self.version.version}" if self.version else "no champion"


@dataclasses.dataclass(frozen=True)
class Promotion:
    """What the pusher's promotion did: whether `version` holds the alias now, and why (not)."""

    promoted: bool
    reason: str
    champion: ChampionState


@dataclasses.dataclass(frozen=True)
class VerifiedVersion:
    """A version's files, downloaded and checked against its signed manifest."""

    version: ModelVersion
    root: str  # holds SIGNED_DIR and the signature
    signed_files: dict[str, str]  # relative path in SIGNED_DIR -> sha256

    @property
    def signed_dir(self) -> str:
        return os.path.join(self.root, SIGNED_DIR)

    @property
    def model_dir(self) -> str:
        """The exported model (what the trainers wrote) inside the pyfunc."""
        export = os.path.join(self.signed_dir, EXPORT_IN_SIGNED)
        if not os.path.isfile(os.path.join(export, MODEL_META_FILE)):
            raise RegistryError(f"{self.version.name} version {self.version.version} holds no exported model "
                                f"({MODEL_META_FILE} not found in {export})")
        return export

    def baseline(self, name: str) -> str | None:
        path = os.path.join(self.signed_dir, BASELINE_DIR, name)
        return path if os.path.exists(path) else None


def embedded_uri(registry_dir: str) -> str:
    """The embedded registry: an SQLite database in `registry_dir`, artifacts beside it."""
    return "sqlite:///" + os.path.abspath(os.path.join(registry_dir, "mlflow.db"))


def _requirements(framework: str) -> list[str]:
    import numpy

    if framework == "keras":
        import tensorflow

        return [f"tensorflow=={tensorflow.__version__}", f"numpy=={numpy.__version__}"]
    import torch

    return [f"torch=={torch.__version__.split('+')[0]}", f"numpy=={numpy.__version__}"]


def check_reachable(uri: str, timeout_s: float = 10.0) -> None:
    """Fails fast on a server that does not answer (MLflow's client would retry for minutes)."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s) as response:
            if response.status != 200:
                raise RegistryError(f"MLflow tracking server {uri} answered /health with HTTP {response.status}")
    except urllib.error.HTTPError as e:
        raise RegistryError(f"MLflow tracking server {uri} answered /health with HTTP {e.code}") from e
    except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        raise RegistryError(f"MLflow tracking server {uri} is unreachable: {e}") from e


def _problem(error: BaseException) -> str:
    """An MLflow or transport error in one line (MLflow's messages carry whole response bodies)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}{' …' if len(text) > 300 else ''}"


def _is_missing(error: BaseException) -> bool:
    """The registry's own answer that the registered model does not exist (not a proxy's 404)."""
    return getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def lock_database(registry_uri: str, lock_uri: str) -> str:
    """The PostgreSQL database whose advisory lock guards the alias: `lock_uri`, or the registry's
    own when MLflow is given its database directly; "" for the embedded store (a file lock)."""
    if lock_uri:
        return lock_uri
    if registry_uri.startswith(("postgresql://", "postgresql+psycopg2://")):
        return "postgresql://" + registry_uri.split("://", 1)[1]
    return ""


def model_digest(signed_files: dict[str, str]) -> str:
    """One sha256 for the exported model's files (paths relative to the export) from a manifest."""
    prefix = f"{MODEL_DIR}/artifacts/"
    lines = sorted(f"{path.split('/', 3)[-1]} {digest}" for path, digest in signed_files.items()
                   if path.startswith(prefix))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


class MlflowRegistry:
    """One registered model in an MLflow Model Registry at `uri`. `lock_uri`: the PostgreSQL
    database (postgresql://user@host:port/db, password from PGPASSWORD or ~/.pgpass as libpq reads
    them) whose advisory lock serializes alias writes on a tracking server."""

    def __init__(self, uri: str, model_name: str, lock_uri: str = "") -> None:
        # Stricter than MLflow (which refuses '/' and ':'): names also end up in paths and URIs.
        if not is_safe_name(model_name):
            raise RegistryError(f"invalid registered model name {model_name!r}: {RULE}")
        check_reachable(uri)
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.model_name = model_name
        self.lock_uri = lock_uri
        self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)

    @property
    def client(self):
        """The MlflowClient of this registry's store (tracking and registry alike)."""
        return self._client

    def _failed(self, doing: str, error: BaseException) -> RegistryError:
        return RegistryError(f"registry {self.uri}: {doing} failed: {_problem(error)}")

    # --- reading -------------------------------------------------------------------------------
    def experiment_id(self, suffix: str = "-pushes") -> str:
        """The id of the experiment `<model name><suffix>`, created on first use: `-pushes` holds
        the registered versions' runs, `-bakeoff` the trainings and evaluations (components/tracking.py)."""
        from mlflow.exceptions import MlflowException

        name = f"{self.model_name}{suffix}"
        existing = self._client.get_experiment_by_name(name)
        if existing:
            return existing.experiment_id
        try:
            return self._client.create_experiment(name, artifact_location=self._embedded_artifacts())
        except MlflowException:  # a concurrent pusher created it first
            return self._client.get_experiment_by_name(name).experiment_id

    def _embedded_artifacts(self) -> str | None:
        """The embedded store's artifact root (beside the database file); None for a server's own."""
        if not self.uri.startswith("sqlite:///"):
            return None
        return "file://" + os.path.join(os.path.dirname(os.path.abspath(self.uri[len("sqlite:///"):])), "artifacts")

    def _version(self, version: str) -> ModelVersion:
        mv = self._client.get_model_version(self.model_name, version)
        return ModelVersion(self.model_name, str(mv.version), dict(mv.tags), tuple(mv.aliases),
                            mv.run_id or "", mv.source or "")

    def version(self, version: str) -> ModelVersion:
        """An existing version, or a RegistryError listing the versions there are."""
        from mlflow.exceptions import MlflowException

        try:
            return self._version(str(version))
        except MlflowException as e:
            if not _is_missing(e):
                raise self._failed(f"reading {self.model_name} version {version}", e) from e
            known = [v.version for v in self.versions()]
            raise RegistryError(f"{self.model_name} has no version {version!r} at {self.uri} "
                                f"(versions: {', '.join(known) or 'none'})") from e

    def champion_state(self) -> ChampionState:
        """The champion alias as the registered model has it now. Fails closed: only a registered
        model that does not exist, or that has no champion alias, is "no champion"."""
        try:
            model = self._client.get_registered_model(self.model_name)
        except Exception as e:  # noqa: BLE001 (every other answer is a failure, said as one)
            if _is_missing(e):
                return ChampionState(self.uri, self.model_name, None, "0")
            raise self._failed(f"reading the registered model {self.model_name}", e) from e
        revision = (model.tags or {}).get(REVISION_TAG, "0")
        aliases = model.aliases or {}
        if CHAMPION_ALIAS not in aliases:
            return ChampionState(self.uri, self.model_name, None, revision)
        try:
            version = self._version(str(aliases[CHAMPION_ALIAS]))
        except Exception as e:  # noqa: BLE001 (the alias names a version that cannot be read)
            raise self._failed(f"reading {self.model_name} version {aliases[CHAMPION_ALIAS]} (the champion)", e) from e
        return ChampionState(self.uri, self.model_name, version, revision)

    def champion(self) -> ModelVersion | None:
        return self.champion_state().version

    def versions(self) -> list[ModelVersion]:
        try:
            found = self._client.search_model_versions(f"name = '{self.model_name}'")
            return sorted((self._version(mv.version) for mv in found), key=lambda v: int(v.version))
        except Exception as e:  # noqa: BLE001
            raise self._failed(f"listing the versions of {self.model_name}", e) from e

    def find_version(self, tag: str, value: str) -> ModelVersion | None:
        """The oldest version whose `tag` is `value` (e.g. the model a killed pusher had already registered)."""
        matches = [v for v in self.versions() if v.tags.get(tag) == value]
        return matches[0] if matches else None

    def rejection(self, version: ModelVersion) -> str | None:
        """Why `version` may not be promoted (rejected, or the files of a rejected version); None if it may."""
        if version.rejected:
            return version.tags.get("rejected_reason") or "rejected"
        digest = version.tags.get(MODEL_SHA_TAG)
        twin = next((v for v in self.versions() if v.rejected and digest and v.tags.get(MODEL_SHA_TAG) == digest
                     and v.version != version.version), None)
        return f"its model files are those of rejected version {twin.version}" if twin else None

    def champion_uri(self) -> str:
        return f"models:/{self.model_name}@{CHAMPION_ALIAS}"

    def champion_source(self) -> tuple[ModelVersion, str] | None:
        """The champion and where its registered pyfunc's files are (the version's download URI), or None.
        Resolved through this registry's own client: a `models:/` URI would be resolved against the
        process-wide registry URI, which in a fresh process is not this registry."""
        champion = self.champion()
        if champion is None:
            return None
        return champion, self._client.get_model_version_download_uri(self.model_name, champion.version)

    # --- the version's files ---------------------------------------------------------------------
    def check_source(self, version: ModelVersion) -> str:
        """The run artifact folder of `version`, refused unless its source is the registry's own:
        `<its run's artifacts>/signed/model`, inside the embedded store's artifact root (or the
        experiment's artifact location on a server)."""
        what = f"{self.model_name} version {version.version}"
        try:
            run = self._client.get_run(version.run_id) if version.run_id else None
            experiment = self._client.get_experiment(run.info.experiment_id) if run else None
        except Exception as e:  # noqa: BLE001
            raise self._failed(f"reading the run of {what}", e) from e
        if run is None:
            raise RegistryError(f"{what}: registered without a run: its files are not the registry's own; not loaded")
        artifacts = run.info.artifact_uri.rstrip("/")
        expected = f"{artifacts}/{SIGNED_DIR}/{MODEL_DIR}"
        if version.source.rstrip("/") == f"{artifacts}/{MODEL_DIR}":
            raise RegistryError(f"{what}: registered before versions were signed (its files have no signed manifest), "
                                "so it cannot be verified and is not loaded: `python -m pipelines registry reject "
                                f"{version.version}` takes the alias off it, and the next run registers a signed one")
        if version.source.rstrip("/") != expected:
            raise RegistryError(f"{what}: its source {version.source} is not its run's signed model ({expected}): "
                                "files outside the registry's own artifacts are not loaded")
        root = self._embedded_artifacts() or experiment.artifact_location
        if not (artifacts + "/").startswith(root.rstrip("/") + "/"):
            raise RegistryError(f"{what}: its run's artifacts {artifacts} lie outside the registry's artifact root "
                                f"{root}: not loaded")
        return artifacts

    def download_verified(self, version: ModelVersion, dst_dir: str,
                          verify_key: bytes | str | None = None) -> VerifiedVersion:
        """`version`'s signed files in `dst_dir`, checked against its signed manifest (the key:
        `verify_key`, else $MNIST_MODEL_VERIFY_KEY or the file $MNIST_MODEL_VERIFY_KEY_FILE names).
        Raises RegistryError (the registry failed, or the files are not its own) or
        manifest.ManifestError (a file does not match, or no signature)."""
        import mlflow.artifacts

        what = f"{self.model_name} version {version.version}"
        key = verify_key or manifest.verify_key_from_environment()
        if not key:
            raise RegistryError(f"{what}: no public key to verify its signed manifest with: set "
                                f"{manifest.VERIFY_KEY_VARIABLE} or {manifest.VERIFY_KEY_FILE_VARIABLE}")
        self.check_source(version)
        os.makedirs(dst_dir, exist_ok=True)
        for path in (SIGNED_DIR, manifest.SIGNATURE_FILE):
            try:
                mlflow.artifacts.download_artifacts(run_id=version.run_id, artifact_path=path, dst_path=dst_dir,
                                                    tracking_uri=self.uri)
            except Exception as e:  # noqa: BLE001
                if path == manifest.SIGNATURE_FILE and not os.path.exists(os.path.join(dst_dir, path)):
                    break  # an unsigned version: the verification below says so
                raise self._failed(f"downloading {what}'s {path}", e) from e
        files = manifest.verify(os.path.join(dst_dir, SIGNED_DIR), key, what)
        identity = json.loads(read_bytes(os.path.join(dst_dir, SIGNED_DIR, IDENTITY_FILE)))
        if identity.get("registered_model") != self.model_name or identity.get("mlflow_run_id") != version.run_id:
            raise RegistryError(f"{what}: its signed files were registered as {identity.get('registered_model')} "
                                f"from run {identity.get('mlflow_run_id')}, not as this version (run "
                                f"{version.run_id}): not loaded")
        return VerifiedVersion(version, dst_dir, files)

    def download_champion(self, dst_dir: str, verify_key: bytes | str | None = None) -> VerifiedVersion | None:
        """The champion's verified files in `dst_dir`, or None when there is no champion."""
        champion = self.champion()
        return None if champion is None else self.download_verified(champion, dst_dir, verify_key)

    # --- writing -------------------------------------------------------------------------------
    def _ensure_registered_model(self) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_registered_model(self.model_name)
        except MlflowException as e:
            if not _is_missing(e):
                raise self._failed(f"reading the registered model {self.model_name}", e) from e
            try:
                self._client.create_registered_model(self.model_name)
            except MlflowException:  # a concurrent pusher created it first
                self._client.get_registered_model(self.model_name)

    def _signed_tree(self, folder: str, model_dir: str, framework: str, run_id: str,
                     files: dict[str, str], baseline: dict[str, str], class_names: list[str]) -> None:
        """The version's files under `folder`/signed: the pyfunc, the evaluation files, the baseline."""
        import mlflow.pyfunc
        import numpy as np
        from mlflow.models import infer_signature

        signed = os.path.join(folder, SIGNED_DIR)
        signature = infer_signature(np.zeros((1, 28, 28), dtype=np.uint8),
                                    np.zeros((1, len(class_names)), dtype=np.float32))
        # MLflow names an artifact's folder after its path: the export goes in as `model_dir`, so that
        # it lands where every loader looks (EXPORT_IN_SIGNED).
        export = os.path.join(folder, "staged", os.path.basename(EXPORT_IN_SIGNED))
        copy_tree(model_dir, export)
        mlflow.pyfunc.save_model(os.path.join(signed, MODEL_DIR), python_model=PYFUNC_CODE,
                                 artifacts={"model_dir": export}, code_paths=[TRAINERS_PACKAGE],
                                 signature=signature, pip_requirements=_requirements(framework))
        for relative, path in files.items():
            _copy_in(path, os.path.join(signed, relative))
        for name, path in baseline.items():
            _copy_in(path, os.path.join(signed, BASELINE_DIR, name))
        identity = {"registered_model": self.model_name, "mlflow_run_id": run_id, "framework": framework,
                    "source_model_uri": model_dir, "class_names": class_names,
                    "signed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        with open(os.path.join(signed, IDENTITY_FILE), "w", encoding="utf-8") as f:
            json.dump(identity, f, indent=2, sort_keys=True)

    def register(self, model_dir: str, framework: str, tags: dict[str, str], metrics: dict[str, float],
                 files: dict[str, str] | None = None, description: str = "",
                 baseline: dict[str, str] | None = None, class_names: list[str] | None = None,
                 signing_key: bytes | str | None = None) -> ModelVersion:
        """Signs and uploads the model with what later runs need from it (`files`: {path in the
        signed folder: file}, e.g. the evaluation; `baseline`: {name: file or folder}, the training
        data's statistics and image hashes), then registers it as a new version.

        Upload first, register second: a failed upload leaves a failed run and no version; a
        version whose registration fails half-way is deleted before the error is raised. The key:
        `signing_key`, else the pusher's environment ($MNIST_MODEL_SIGNING_KEY[_FILE])."""
        from mlflow.entities import Metric

        key = signing_key or manifest.signing_key_from_environment()
        if not key:
            raise RegistryError(f"no key to sign {self.model_name}'s new version with: set "
                                f"{manifest.SIGNING_KEY_VARIABLE} or {manifest.SIGNING_KEY_FILE_VARIABLE} in the "
                                "pusher's environment (a Kubernetes secret on the cluster)")
        class_names = class_names or [str(d) for d in range(NUM_CLASSES)]
        run = self._client.create_run(self.experiment_id(), run_name=tags.get("pipeline_run_id"), tags=tags)
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            self._client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
            with tempfile.TemporaryDirectory(prefix="version-") as tmp:
                self._signed_tree(tmp, model_dir, framework, run_id, files or {}, baseline or {}, class_names)
                signature = manifest.sign(os.path.join(tmp, SIGNED_DIR), key)
                signed_files = manifest.signed_files(signature)
                self._client.log_artifacts(run_id, os.path.join(tmp, SIGNED_DIR), artifact_path=SIGNED_DIR)
                self._client.log_artifact(run_id, signature)
                with open(signature, "rb") as f:
                    signature_sha = hashlib.sha256(f.read()).hexdigest()
        except BaseException:
            self._client.set_terminated(run_id, status="FAILED")
            raise
        self._client.set_terminated(run_id)
        self._ensure_registered_model()
        version = None
        trust = {MODEL_SHA_TAG: model_digest(signed_files), MANIFEST_SHA_TAG: signature_sha,
                 SIGNING_KEY_TAG: manifest.key_fingerprint(manifest.public_key_of(key)),
                 "class_names": json.dumps(class_names)}
        try:
            version = self._client.create_model_version(
                self.model_name, f"{run.info.artifact_uri}/{SIGNED_DIR}/{MODEL_DIR}", run_id=run_id,
                tags={**tags, **trust, "mlflow_run_id": run_id}, description=description or None)
            return self._version(version.version)
        except Exception:
            if version is not None:
                self._client.delete_model_version(self.model_name, version.version)
            raise

    def set_version_tags(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self._client.set_model_version_tag(self.model_name, version, key, value)

    @contextlib.contextmanager
    def alias_lock(self) -> Iterator[None]:
        """Held by every alias writer around its read, compare and set (see the module's docstring)."""
        database = lock_database(self.uri, self.lock_uri)
        if self.uri.startswith("sqlite:///"):
            with locks.file_lock(self.uri[len("sqlite:///"):] + ".alias.lock"):
                yield
            return
        if database == NO_LOCK:
            logging.getLogger(__name__).warning(
                "registry %s: alias writes without a lock (registry_lock_uri none): concurrent runs can both "
                "move the champion alias, the later one winning", self.uri)
            yield
            return
        if not database:
            raise RegistryError(f"registry {self.uri}: alias writes need a lock: set registry_lock_uri to the "
                                "PostgreSQL database of the MLflow server's backend store "
                                "(postgresql://USER@HOST:PORT/DB; password from PGPASSWORD), or to 'none' to "
                                "accept that concurrent runs can race for the alias")
        import psycopg2

        try:
            connection = psycopg2.connect(database, connect_timeout=10)
        except psycopg2.Error as e:
            raise RegistryError(f"registry {self.uri}: cannot reach the alias lock's database "
                                f"{database.split('@')[-1]}: {' '.join(str(e).split())}") from e
        with locks.advisory_lock(connection, _ADVISORY_LOCK_CLASS, self.model_name):
            yield

    def _set_champion(self, version: str, state: ChampionState) -> None:
        """Moves the alias and bumps the revision (callers hold the alias lock)."""
        self._client.set_registered_model_alias(self.model_name, CHAMPION_ALIAS, version)
        self._client.set_registered_model_tag(self.model_name, REVISION_TAG, str(int(state.revision) + 1))
        self.set_version_tags(version, {"promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})

    def promote(self, version: str) -> None:
        """Moves `champion` to `version` unconditionally (under the lock): for setting up a registry."""
        with self.alias_lock():
            self._set_champion(self.version(version).version, self.champion_state())

    def promote_if_unchanged(self, version: ModelVersion, resolved: str) -> Promotion:
        """Moves `champion` to `version`, which a run judged against the champion state `resolved`
        (ChampionState.identity), only if the champion is still that state and `version` is not
        rejected; otherwise records on the version why it was not promoted."""
        with self.alias_lock():
            current = self.champion_state()
            if current.version is not None and current.version.version == version.version:
                return Promotion(True, f"version {version.version} already holds the alias", current)
            if current.identity != resolved:
                reason = (f"the champion changed since this run resolved it (now {current.describe()}, "
                          f"revision {current.revision}): rerun to evaluate against it")
            else:
                rejected = self.rejection(self._version(version.version))
                reason = (f"version {version.version} is rejected ({rejected}): not promoted; `python -m "
                          f"pipelines registry reinstate {version.version}` lifts it") if rejected else ""
            if reason:
                self.set_version_tags(version.version, {NOT_PROMOTED_TAG: reason})
                return Promotion(False, reason, current)
            self._set_champion(version.version, current)
            self.set_version_tags(version.version, {"replaced_version": current.version.version if current.version
                                                    else ""})
            return Promotion(True, f"version {version.version} is the champion now (was {current.describe()})",
                             self.champion_state())

    def rollback(self, version: str, reason: str = "") -> ModelVersion:
        """Moves `champion` back to an existing `version`; the version it moves away from is
        rejected (never promoted again until reinstated), with the reason and the time."""
        with self.alias_lock():
            target = self.version(version)
            state = self.champion_state()
            if target.rejected:
                raise RegistryError(f"{self.model_name} version {target.version} is rejected "
                                    f"({target.tags.get('rejected_reason', 'rejected')}): reinstate it first "
                                    f"(`python -m pipelines registry reinstate {target.version}`)")
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            previous = state.version
            self._set_champion(target.version, state)
            self.set_version_tags(target.version, {"rolled_back_from": previous.version if previous else "",
                                                   "rolled_back_at": now,
                                                   **({"rollback_reason": reason} if reason else {})})
            if previous is not None and previous.version != target.version:
                self.set_version_tags(previous.version, {
                    REJECTED_TAG: "true", "rejected_at": now,
                    "rejected_reason": f"rolled back to version {target.version}" + (f": {reason}" if reason else "")})
            return self._version(target.version)

    def reject(self, version: str, reason: str) -> ModelVersion:
        """Rejects `version` (no run promotes it until reinstated); if it is the champion, the alias
        comes off it: the registered model has no champion until a run promotes one."""
        with self.alias_lock():
            target = self.version(version)
            state = self.champion_state()
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.set_version_tags(target.version, {REJECTED_TAG: "true", "rejected_at": now,
                                                   "rejected_reason": reason or "rejected by hand"})
            if state.version is not None and state.version.version == target.version:
                self._client.delete_registered_model_alias(self.model_name, CHAMPION_ALIAS)
                self._client.set_registered_model_tag(self.model_name, REVISION_TAG, str(int(state.revision) + 1))
            return self._version(target.version)

    def reinstate(self, version: str) -> ModelVersion:
        """Lifts a rollback's rejection of `version` (it may be promoted again by a later run); the
        alias does not move, but the champion's revision does, so runs re-evaluate."""
        with self.alias_lock():
            target = self.version(version)
            if not target.rejected:
                raise RegistryError(f"{self.model_name} version {target.version} is not rejected: nothing to reinstate")
            for key in (REJECTED_TAG, "rejected_reason", "rejected_at"):
                self._client.delete_model_version_tag(self.model_name, target.version, key)
            self.set_version_tags(target.version, {"reinstated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                  time.gmtime())})
            state = self.champion_state()
            self._client.set_registered_model_tag(self.model_name, REVISION_TAG, str(int(state.revision) + 1))
            return self._version(target.version)


def _copy_in(path: str, target: str) -> None:
    """A file or a folder, local or on an object store, to the local `target`."""
    from trainers.model_format import remote_gfile

    is_folder = remote_gfile(path).isdir(path) if "://" in path else os.path.isdir(path)
    if is_folder:
        copy_tree(path, target)
        return
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with open(target, "wb") as f:
        f.write(read_bytes(path))
