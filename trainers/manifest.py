"""A registered version's signed manifest: the sha256 of every file it was registered with, signed
at push with a key only the pusher holds, verified on the bytes that are about to be loaded.

The signature is Ed25519 (the `cryptography` package) over the manifest's canonical JSON (sorted
keys, no spaces): {"files": {relative path: sha256}}. The signature file, `manifest.sig`, sits
beside the signed folder and holds the manifest, the signature and the signing key's
fingerprint. Verifying recomputes every file's sha256 and refuses, in one line naming what does
not match, a changed, added or missing file, or a signature that is not the pusher's key's.

OpenSSF's model-signing (per-file sha256 in a Sigstore bundle) was the first choice and does this
job, but it cannot be imported beside this pipeline: it imports sigstore, which imports tuf, whose
HTTP client needs urllib3 2 while kfp 2.5 (the newest beside TFX 1.16) pins urllib3 below 2.

Imports no ML framework: the serving runtime verifies with it too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

# The signature file beside the signed folder (never inside it: it is not one of the signed files).
SIGNATURE_FILE = "manifest.sig"
FORMAT = "mnist-bakeoff-manifest/1"
# The PEM of the private key (the pusher's environment only) and of the public key (any verifier).
SIGNING_KEY_VARIABLE = "MNIST_MODEL_SIGNING_KEY"
SIGNING_KEY_FILE_VARIABLE = "MNIST_MODEL_SIGNING_KEY_FILE"
VERIFY_KEY_VARIABLE = "MNIST_MODEL_VERIFY_KEY"
VERIFY_KEY_FILE_VARIABLE = "MNIST_MODEL_VERIFY_KEY_FILE"
_BLOCK = 1 << 20
# What MLflow's registry itself writes into a version's model folder when the version is created,
# after the pusher signed it: not signed, and never read by any loader here.
REGISTRY_WRITTEN = ("model/registered_model_meta",)


class ManifestError(ValueError):
    """The files are not what the pusher signed, or carry no signature; the message names which."""


def _bytes(pem: bytes | str) -> bytes:
    return pem.encode() if isinstance(pem, str) else pem


def generate_key_pair() -> tuple[bytes, bytes]:
    """(private key PEM, public key PEM): a new Ed25519 key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return private, public_key_of(private)


def _private_key(pem: bytes | str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = serialization.load_pem_private_key(_bytes(pem), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ManifestError(f"the signing key is a {type(key).__name__}, not an Ed25519 key")
    return key


def _public_key(pem: bytes | str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        key = serialization.load_pem_public_key(_bytes(pem))
    except ValueError as e:
        raise ManifestError(f"the verify key is not a PEM public key ({e})") from e
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ManifestError(f"the verify key is a {type(key).__name__}, not an Ed25519 key")
    return key


def public_key_of(private_pem: bytes | str) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return _private_key(private_pem).public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo)


def key_fingerprint(public_pem: bytes | str) -> str:
    """A short name for a public key (sha256 of its raw 32 bytes), for messages and tags."""
    from cryptography.hazmat.primitives import serialization

    raw = _public_key(public_pem).public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _key_from_environment(variable: str, file_variable: str, environ: dict[str, str] | None) -> bytes | None:
    environ = os.environ if environ is None else environ
    if environ.get(variable):
        return environ[variable].encode()
    path = environ.get(file_variable)
    return Path(path).read_bytes() if path else None


def signing_key_from_environment(environ: dict[str, str] | None = None) -> bytes | None:
    """The pusher's private key: the PEM in $MNIST_MODEL_SIGNING_KEY, or the file that
    $MNIST_MODEL_SIGNING_KEY_FILE names; None when neither is set."""
    return _key_from_environment(SIGNING_KEY_VARIABLE, SIGNING_KEY_FILE_VARIABLE, environ)


def verify_key_from_environment(environ: dict[str, str] | None = None) -> bytes | None:
    """The public key every verifier checks with: $MNIST_MODEL_VERIFY_KEY, or the file that
    $MNIST_MODEL_VERIFY_KEY_FILE names; None when neither is set."""
    return _key_from_environment(VERIFY_KEY_VARIABLE, VERIFY_KEY_FILE_VARIABLE, environ)


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digests(folder: str) -> dict[str, str]:
    """{path relative to `folder`, '/'-separated: sha256} of every file under it (links refused:
    what a link points to is not part of the folder)."""
    found = {}
    for root, dirs, files in os.walk(folder):
        for name in sorted(dirs + files):
            path = os.path.join(root, name)
            if os.path.islink(path):
                raise ManifestError(f"{path}: a symbolic link among the model's files")
        for name in files:
            path = os.path.join(root, name)
            found[os.path.relpath(path, folder).replace(os.sep, "/")] = file_sha256(path)
    return dict(sorted(found.items()))


def _canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(folder: str, private_pem: bytes | str) -> str:
    """Signs every file under `folder`; writes the signature file beside it (`folder`/../manifest.sig)
    and returns its path."""
    key = _private_key(private_pem)
    manifest = {"format": FORMAT, "files": folder_digests(folder)}
    signature = os.path.join(os.path.dirname(os.path.abspath(folder)), SIGNATURE_FILE)
    record = {"manifest": manifest, "key": key_fingerprint(public_key_of(private_pem)),
              "signature": base64.b64encode(key.sign(_canonical(manifest))).decode()}
    Path(signature).write_text(json.dumps(record, indent=1, sort_keys=True), encoding="utf-8")
    return signature


def signed_files(signature_path: str) -> dict[str, str]:
    """{relative path: sha256} as the signature file lists them (read, not verified)."""
    return json.loads(Path(signature_path).read_text(encoding="utf-8"))["manifest"]["files"]


def _read_signature(signature_path: str, what: str) -> tuple[dict[str, Any], bytes]:
    try:
        record = json.loads(Path(signature_path).read_text(encoding="utf-8"))
        manifest, signature = record["manifest"], base64.b64decode(record["signature"], validate=True)
        if manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
            raise ValueError(f"not a {FORMAT} manifest")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ManifestError(f"{what}: its signature file {SIGNATURE_FILE} cannot be read ({type(e).__name__}: "
                            f"{str(e)[:200]}); it is not loaded") from e
    return manifest, signature


def verify(folder: str, public_pem: bytes | str, what: str, signature_path: str | None = None,
           unsigned: tuple[str, ...] = REGISTRY_WRITTEN) -> dict[str, str]:
    """Checks every file under `folder` against the pusher's signed manifest (`folder`/../manifest.sig
    unless given): the same files (but the `unsigned` ones nothing reads), each with its signed
    sha256, signed by the key whose public half is `public_pem`. Returns {relative path: sha256};
    raises ManifestError naming `what` (e.g. "mnist-digits version 3") and the first file that
    does not match."""
    from cryptography.exceptions import InvalidSignature

    signature_path = signature_path or os.path.join(os.path.dirname(os.path.abspath(folder)), SIGNATURE_FILE)
    if not os.path.isfile(signature_path):
        raise ManifestError(f"{what}: no signed manifest ({SIGNATURE_FILE}) beside its files: it was not "
                            "registered by this pipeline's pusher, or its signature was removed; it is not loaded")
    manifest, signature = _read_signature(signature_path, what)
    try:
        _public_key(public_pem).verify(signature, _canonical(manifest))
    except InvalidSignature as e:
        raise ManifestError(f"{what}: its manifest's signature does not verify with the key "
                            f"{key_fingerprint(public_pem)}: it was not signed by the pusher, or it was edited; "
                            "it is not loaded") from e
    signed = manifest["files"]
    found = {path: digest for path, digest in folder_digests(folder).items() if path not in unsigned or path in signed}
    for path in sorted(signed.keys() | found.keys()):
        if path not in found:
            raise ManifestError(f"{what}: file {path} is signed but missing; it is not loaded")
        if path not in signed:
            raise ManifestError(f"{what}: file {path} is not one of the signed files; it is not loaded")
        if found[path] != signed[path]:
            raise ManifestError(f"{what}: file {path} was changed since it was signed (sha256 {found[path][:16]}…, "
                                f"signed {signed[path][:16]}…); it is not loaded")
    return signed
