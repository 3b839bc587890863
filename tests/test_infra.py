"""The image installs exactly the locked versions; the bootstrap keys its venv on the lock."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from pipelines.config import REPO_ROOT


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", (REPO_ROOT / "requirements.lock").read_text(), re.M)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_image_installs_the_lock_with_its_hashes():
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    assert re.search(r"^COPY requirements\.lock (\S+)$", dockerfile, re.M)
    installs = [c for c in _shell_commands(REPO_ROOT / "infra" / "Dockerfile") if re.search(r"\bpip\b.*\binstall\b", c)]
    assert installs, "infra/Dockerfile installs nothing with pip"
    for install in installs:
        flags = install.split()
        assert "--require-hashes" in flags and "--no-deps" in flags, install
        assert re.search(r"-r \S*requirements\.lock\b", install), install
        assert not re.search(r"\b[a-z0-9_\-]+==[0-9]", install), f"an unhashed pin outside the lock: {install}"
        assert re.search(r"-r \S*requirements-tf-cuda\.lock\b", install), install
    # A slim Python 3.10 base users can pull; the build here uses a local stand-in of the same name.
    assert re.search(r"^ARG BASE_IMAGE=python:3\.10-slim-bookworm$", dockerfile, re.M)
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", dockerfile, re.M)


@pytest.mark.parametrize("lock, minimum", [("requirements.lock", 100), ("infra/requirements-tf-cuda.lock", 10)])
def test_lock_pins_every_package_with_hashes(lock, minimum):
    text = (REPO_ROOT / lock).read_text()
    blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9])", text) if b.strip() and not b.startswith("#")]
    assert len(blocks) > minimum
    for block in blocks:
        assert "==" in block.splitlines()[0] and "--hash=sha256:" in block, block.splitlines()[0]


def _shell_commands(path) -> list[str]:
    """The script's commands, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_bootstrap_installs_the_lock_with_its_hashes_and_nothing_else():
    commands = _shell_commands(REPO_ROOT / "infra" / "bootstrap.sh")
    assert 'lock="$repo/requirements.lock"' in commands
    installs = [c for c in commands if re.search(r"\bpip\b.*\binstall\b", c)]
    assert installs, "infra/bootstrap.sh installs nothing with pip"
    for install in installs:  # every pip install: the lock only, hashes required, no resolution
        flags = install.split()
        assert "--require-hashes" in flags and "--no-deps" in flags, install
        assert re.search(r'(^|\s)-r "\$lock"(\s|$)', install), install
        assert not re.search(r"--(index-url|extra-index-url|trusted-host|no-verify)\b", install), install


def _final_stage(dockerfile: str) -> list[str]:
    lines = [line.strip() for line in re.sub(r"\\\n\s*", " ", dockerfile).splitlines()]
    starts = [i for i, line in enumerate(lines) if re.match(r"FROM\s", line, re.I)]
    assert starts, "no FROM"
    return lines[starts[-1]:]


@pytest.mark.parametrize("dockerfile", ["infra/Dockerfile", "infra/mlflow/Dockerfile"])
def test_images_run_as_a_non_root_user(dockerfile):
    stage = _final_stage((REPO_ROOT / dockerfile).read_text())
    users = [line.split(None, 1)[1].strip() for line in stage if re.match(r"USER\s", line, re.I)]
    assert users, f"{dockerfile}: the final stage never switches away from the base image's user (root)"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), f"{dockerfile}: runs as {users[-1]}"
    if not user.isdigit():  # a named user: created in this stage with a non-zero uid
        created = [m.group(0) for line in stage
                   for m in re.finditer(rf"\b(?:useradd|adduser)\b[^&;|]*\b{re.escape(user)}\b", line)]
        assert created, f"{dockerfile}: USER {user} is not created in the final stage"
        uid = re.search(r"(?:--uid|-u)\s+(\d+)", created[-1])
        assert uid and int(uid.group(1)) != 0, f"{dockerfile}: {user} must get a non-zero --uid ({created[-1]})"


def test_image_and_entry_point_set_the_openmp_environment():
    """PyTorch's OpenMP runtime reads its wait policy once, when torch loads: the image's
    environment and `python -m pipelines` (before any import of torch) both set it."""
    from trainers.distributed import OPENMP_ENVIRONMENT

    dockerfile = re.sub(r"\\\n\s*", " ", (REPO_ROOT / "infra" / "Dockerfile").read_text())
    env_lines = " ".join(line for line in dockerfile.splitlines() if line.startswith("ENV "))
    entry_point = (REPO_ROOT / "pipelines" / "__main__.py").read_text()
    assert "OPENMP_ENVIRONMENT" in entry_point.split("import exit_process")[0]
    # What the entry point imports before setting it must not load torch.
    loaded = subprocess.run([sys.executable, "-c", "import sys, trainers.distributed; print('torch' in sys.modules)"],
                            capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout.strip()
    assert loaded == "False"
    for name, value in OPENMP_ENVIRONMENT.items():
        assert f"{name}={value}" in env_lines.split(), f"infra/Dockerfile does not set {name}={value}"
