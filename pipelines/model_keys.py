"""The model-signing keys of a local user: the pusher signs every version it registers and every
loader verifies it (trainers/manifest.py), with keys from the environment. Where the environment
names none, `python -m pipelines` uses a key pair of this user's own, made once under
~/.config/mnist-pipeline/model-signing/ (the private key readable by the user only); on a
cluster the keys come from Kubernetes secrets instead (kfp_model_signing_secret on the pusher's task,
kfp_model_verify_secret on the tasks that load a registered version)."""

from __future__ import annotations

import os
from pathlib import Path

from trainers import manifest

PRIVATE_FILE, PUBLIC_FILE = "signing-key.pem", "verify-key.pem"


def local_key_pair(folder: Path) -> tuple[Path, Path]:
    """(private, public) key files in `folder`, made on first use."""
    private, public = folder / PRIVATE_FILE, folder / PUBLIC_FILE
    if not private.exists():
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        private_pem, public_pem = manifest.generate_key_pair()
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private_pem)
        public.write_bytes(public_pem)
    elif not public.exists():
        public.write_bytes(manifest.public_key_of(private.read_bytes()))
    return private, public


def key_environment(environ: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """The model-key variables set in `environ`, by value (the PEM text, not a file a container cannot
    read), and the alias lock's PGPASSWORD: what the launcher gives the tasks whose secrets name them."""
    found = {"PGPASSWORD": environ["PGPASSWORD"]} if environ.get("PGPASSWORD") else {}
    for variable, file_variable in ((manifest.SIGNING_KEY_VARIABLE, manifest.SIGNING_KEY_FILE_VARIABLE),
                                    (manifest.VERIFY_KEY_VARIABLE, manifest.VERIFY_KEY_FILE_VARIABLE)):
        if environ.get(variable):
            found[variable] = environ[variable]
        elif environ.get(file_variable):
            found[variable] = Path(environ[file_variable]).read_text(encoding="utf-8")
    return found


def use_local_keys(environ: dict[str, str] | os._Environ = os.environ, folder: Path | None = None,
                   create: bool = True) -> None:
    """Points the environment at this user's key pair, unless it names keys already (a user's or
    a secret's keys win; a verifier given only a public key does not get the local private one).
    `create`: make the pair if there is none (`run`, whose pusher signs); a command that only
    verifies uses an existing pair, never a new one (which could verify nothing)."""
    names = (manifest.SIGNING_KEY_VARIABLE, manifest.SIGNING_KEY_FILE_VARIABLE,
             manifest.VERIFY_KEY_VARIABLE, manifest.VERIFY_KEY_FILE_VARIABLE)
    folder = folder or Path.home() / ".config" / "mnist-pipeline" / "model-signing"
    if any(environ.get(name) for name in names) or not (create or (folder / PRIVATE_FILE).exists()):
        return
    private, public = local_key_pair(folder)
    environ[manifest.SIGNING_KEY_FILE_VARIABLE] = str(private)
    environ[manifest.VERIFY_KEY_FILE_VARIABLE] = str(public)
