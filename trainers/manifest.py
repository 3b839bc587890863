"""A registered version's signed manifest: the sha256 of every file it was registered with, signed
at push with a key only the pusher holds, verified on the bytes that are about to be loaded.

OpenSSF's model-signing does the work (an in-toto statement listing each file's sha256, signed
into a Sigstore bundle with an elliptic-curve key, checked offline: no transparency log, no
network). This module gives it the project's terms: keys as PEM text (from the environment or a
Kubernetes secret), one signature file beside the signed folder, and one line naming what does
not match when a file was changed, added or removed, or the signature is not the pusher's.

Imports no ML framework: the serving runtime verifies with it too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# The signature bundle beside the signed folder (never inside it: it is not one of the signed files).
SIGNATURE_FILE = "manifest.sig"
# The PEM of the private key (the pusher's environment only) and of the public key (any verifier).
SIGNING_KEY_VARIABLE = "MNIST_MODEL_SIGNING_KEY"
SIGNING_KEY_FILE_VARIABLE = "MNIST_MODEL_SIGNING_KEY_FILE"
# How model-signing words each problem it finds in a folder (its ValueError lists them).
_PROBLEMS = ((re.compile(r"Hash mismatch for '([^']+)'"), "was changed since it was signed"),
             (re.compile(r"Extra files found in model '[^']*': ([^\"'\]]+)"), "is not one of the signed files"),
             (re.compile(r"Missing files in model '[^']*': ([^\"'\]]+)"), "is signed but missing"))


class ManifestError(ValueError):
    """The files are not what the pusher signed, or carry no signature; the message names which."""


def _hashing():
    import model_signing.hashing

    return model_signing.hashing.Config().use_file_serialization(hashing_algorithm="sha256")


@contextmanager
def _pem_file(pem: bytes | str) -> Iterator[str]:
    """model-signing reads keys from files: the PEM in a private temporary file for the call."""
    data = pem.encode() if isinstance(pem, str) else pem
    with tempfile.TemporaryDirectory(prefix="key-") as folder:
        path = os.path.join(folder, "key.pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path


def generate_key_pair() -> tuple[bytes, bytes]:
    """(private key PEM, public key PEM): ECDSA P-256, the curve model-signing's key signer takes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def public_key_of(private_pem: bytes | str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    data = private_pem.encode() if isinstance(private_pem, str) else private_pem
    key = serialization.load_pem_private_key(data, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(public_pem: bytes | str) -> str:
    """A short name for a public key (sha256 of its PEM text), for messages and tags."""
    data = public_pem.encode() if isinstance(public_pem, str) else public_pem
    return hashlib.sha256(data.strip()).hexdigest()[:16]


def signing_key_from_environment(environ: dict[str, str] | None = None) -> bytes | None:
    """The pusher's private key: the PEM in $MNIST_MODEL_SIGNING_KEY, or the file that
    $MNIST_MODEL_SIGNING_KEY_FILE names; None when neither is set."""
    environ = os.environ if environ is None else environ
    if environ.get(SIGNING_KEY_VARIABLE):
        return environ[SIGNING_KEY_VARIABLE].encode()
    path = environ.get(SIGNING_KEY_FILE_VARIABLE)
    return Path(path).read_bytes() if path else None


def sign(folder: str, private_pem: bytes | str) -> str:
    """Signs every file under `folder`; writes the bundle beside it (`folder`/../manifest.sig) and
    returns its path."""
    import model_signing.signing

    signature = os.path.join(os.path.dirname(os.path.abspath(folder)), SIGNATURE_FILE)
    with _pem_file(private_pem) as key:
        model_signing.signing.Config().use_elliptic_key_signer(private_key=key).set_hashing_config(
            _hashing()).sign(folder, signature)
    return signature


def signed_files(signature_path: str) -> dict[str, str]:
    """{relative path: sha256} as the bundle lists them (read, not verified: for display only)."""
    bundle = json.loads(Path(signature_path).read_text(encoding="utf-8"))
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    return {r["name"]: r["digest"] for r in statement.get("predicate", {}).get("resources", [])}


def _file_problem(message: str) -> str | None:
    """model-signing's list of problems -> the first file one, in a few words; None if none is."""
    for pattern, words in _PROBLEMS:
        found = pattern.search(message)
        if found:
            return f"file {found.group(1).split(',')[0].strip()} {words}"
    return None


def verify(folder: str, public_pem: bytes | str, what: str, signature_path: str | None = None) -> dict[str, str]:
    """Checks every file under `folder` against the pusher's signed manifest (`folder`/../manifest.sig
    unless given): the same files, each with its signed sha256, signed by the key whose public half
    is `public_pem`. Returns {relative path: sha256}; raises ManifestError naming `what` (e.g.
    "mnist-digits version 3") and the first file that does not match."""
    import model_signing.verifying

    signature = signature_path or os.path.join(os.path.dirname(os.path.abspath(folder)), SIGNATURE_FILE)
    if not os.path.isfile(signature):
        raise ManifestError(f"{what}: no signed manifest ({SIGNATURE_FILE}) beside its files: it was not "
                            "registered by this pipeline's pusher, or its signature was removed; it is not loaded")
    with _pem_file(public_pem) as key:
        try:
            model_signing.verifying.Config().use_elliptic_key_verifier(public_key=key).set_hashing_config(
                _hashing()).verify(folder, signature)
        except Exception as e:  # a changed file, a bundle that does not parse, a signature by another key
            problem = _file_problem(str(e))
            if problem:
                raise ManifestError(f"{what}: {problem}; it is not loaded") from e
            raise ManifestError(f"{what}: its manifest's signature does not verify with the key "
                                f"{key_fingerprint(public_pem)} ({type(e).__name__}: {str(e)[:200]}); "
                                "it is not loaded") from e
    return signed_files(signature)
