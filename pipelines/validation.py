"""Checks of what comes from configuration before anything uses it: names that end up in paths
and URIs, output paths that must stay inside the output root, and registry URIs that must not
carry credentials (those come from the environment only, and never reach pipeline.yaml,
artifacts or logs).

`pipelines.config` calls `check_config` from `__post_init__`; nothing here reads the environment
(the command line checks what it takes from there with `check_registry_uri`).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from components.names import check_name

# Query parameters that carry credentials (presigned URLs, tokens in URIs).
_SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "secret", "token", "key", "signature", "credential", "auth")
CREDENTIALS_HINT = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN, "
                    "in the environment instead (credentials never go in config, pipeline.yaml, artifacts or logs)")


def is_inside(root: str, path: str) -> bool:
    """`path` (which may not exist yet) resolves, symlinks followed, inside `root`."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def check_inside(root: str, path: str, field: str) -> str:
    """`path` unless it resolves outside `root` (then a ValueError naming `field`)."""
    if not is_inside(root, path):
        real_root, real = os.path.realpath(root), os.path.realpath(path)
        raise ValueError(f"{field} {path} resolves to {real}, outside output_root {real_root} (a symlink or "
                         "'..' leads out of it); point output_root at the real location instead")
    return path


def redact_uri(uri: str) -> str:
    """`uri` without its user info and query values, for error messages."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    if "@" in parts.netloc:
        netloc = "***@" + netloc
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def check_registry_uri(uri: str, field: str = "registry_uri") -> str:
    """Refuses a registry URI that carries credentials: user info or a secret query parameter."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if "@" in parts.netloc:
        raise ValueError(f"{field} {redact_uri(uri)} carries credentials in the URI; {CREDENTIALS_HINT}")
    secret_keys = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True)
                   if any(s in k.lower() for s in _SECRET_QUERY_KEYS)]
    if secret_keys:
        raise ValueError(f"{field} {redact_uri(uri)} carries credentials in its query ({', '.join(secret_keys)}); "
                         f"{CREDENTIALS_HINT}")
    return uri


def check_lock_uri(uri: str, field: str = "registry_lock_uri") -> str:
    """The alias lock's database: PostgreSQL, a user allowed, its password never (PGPASSWORD); or
    "none" (no lock, knowingly)."""
    if not uri or uri == "none":
        return uri
    parts = urlsplit(uri)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(f"{field} {redact_uri(uri)} is not a PostgreSQL database URI "
                         "(postgresql://USER@HOST:PORT/DB)")
    if parts.password is not None:
        raise ValueError(f"{field} {redact_uri(uri)} carries a password in the URI; give it in PGPASSWORD "
                         "(a Kubernetes secret on the cluster)")
    return uri


def check_config(cfg: Any) -> None:
    """Every check above on a PipelineConfig (duck-typed, so that config.py can import this)."""
    check_name(cfg.pipeline_name, "pipeline_name")
    check_name(cfg.registered_model_name, "registered_model_name")
    check_registry_uri(cfg.registry_uri)
    check_registry_uri(cfg.kfp_registry_uri, "kfp_registry_uri")
    check_lock_uri(cfg.registry_lock_uri)
    check_lock_uri(cfg.kfp_registry_lock_uri, "kfp_registry_lock_uri")
    if cfg.artifact_root and not cfg.artifact_root.startswith(("s3://", "minio://", "gs://")):
        raise ValueError(f"artifact_root {cfg.artifact_root} is not an object store URI (s3://, minio:// or "
                         "gs://); leave it empty to keep the artifacts under output_root")
    if "://" not in cfg.output_root:  # local runs: the derived outputs stay under output_root
        local = [] if cfg.artifact_root else [("pipeline_root", cfg.pipeline_root)]
        for field, path in (*local, ("metadata_path", cfg.metadata_path),
                            ("registry folder", os.path.join(cfg.output_root, "registry"))):
            check_inside(cfg.output_root, path, field)
