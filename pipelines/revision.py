"""Which code this is: the git revision (tags on registered versions, pipeline version names,
image tags) and a fingerprint of the trainers' sources (their cache key in local runs). Read by
the command line and the runners only, and passed down."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def code_revision(repo: Path = REPO_ROOT) -> str:
    """The short git revision, `-dirty` when the tree has changes (what infra/build_image.sh tags
    the image with); "unknown" outside a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                              text=True, timeout=30).stdout.strip()

    try:
        revision = git("rev-parse", "--short=12", "HEAD")
        return revision + ("-dirty" if git("status", "--porcelain") else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def code_fingerprint(package_dir: str = os.path.join(REPO_ROOT, "trainers")) -> str:
    """sha256 over the trainers' source files. TFX's cache key covers a Trainer's run_fn name,
    not its code; on a cluster the image tag versions the code instead."""
    digest = hashlib.sha256()
    for name in sorted(f for f in os.listdir(package_dir) if f.endswith(".py")):
        digest.update(name.encode() + b"\0")
        with open(os.path.join(package_dir, name), "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()[:16]
