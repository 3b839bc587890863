"""The image installs exactly the locked versions; the bootstrap keys its venv on the lock."""

from __future__ import annotations

import re

from pipelines.config import REPO_ROOT


def _locked() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", (REPO_ROOT / "requirements.lock").read_text(), re.M)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_dockerfile_versions_come_from_the_lock_file():
    dockerfile = (REPO_ROOT / "infra" / "Dockerfile").read_text()
    pins = re.findall(r"\b([a-z0-9_\-]+)==([0-9][^\s\\]*)", dockerfile)
    assert {name for name, _ in pins} >= {"torch", "torchvision", "mlflow"}
    locked = _locked()
    for name, version in pins:
        assert locked[name] == version, f"infra/Dockerfile pins {name}=={version}, the lock has {locked[name]}"
    base = re.search(r"^FROM tensorflow/tfx:(\S+)", dockerfile, re.M).group(1)
    assert base == locked["tfx"]


def test_lock_pins_every_package_with_hashes():
    text = (REPO_ROOT / "requirements.lock").read_text()
    blocks = [b for b in re.split(r"\n(?=[A-Za-z0-9])", text) if b.strip() and not b.startswith("#")]
    assert len(blocks) > 100
    for block in blocks:
        assert "==" in block.splitlines()[0] and "--hash=sha256:" in block, block.splitlines()[0]
