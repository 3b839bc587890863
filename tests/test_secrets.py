"""Credentials come from the environment only and never reach pipeline.yaml, artifacts or logs:
secrets planted in the environment are looked for in the compiled package here, and in the logs
and every file of nine real local runs in tests/test_crash_resume.py."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from pipelines import cli

SECRET_VARIABLES = ("MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN", "AWS_SECRET_ACCESS_KEY")
MAX_SCANNED_BYTES = 50 * 1024 * 1024


@pytest.fixture
def planted() -> dict[str, str]:
    """A fresh random secret per variable: its only source is this test's environment."""
    return {name: f"planted-secret-{secrets.token_hex(12)}" for name in SECRET_VARIABLES}


def files_holding(root: Path, needles: list[bytes]) -> dict[str, list[str]]:
    """{file: [needles found]} for every plain file under `root` (files over 50 MB are skipped)."""
    found = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            if os.path.islink(path) or os.path.getsize(path) > MAX_SCANNED_BYTES:
                continue
            with open(path, "rb") as f:
                data = f.read()
            hits = [n.decode() for n in needles if n in data]
            if hits:
                found[path] = hits
    return found


def test_compiled_package_holds_no_secret_from_the_environment(tmp_path, monkeypatch, planted):
    for name, value in planted.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "pipeline-user")
    out = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "--output", str(out)]) == 0
    text = out.read_text()
    assert "mnist-bakeoff" in text and "registry_uri" in text  # the package that was read is the real one
    for name, value in planted.items():
        assert value not in text, f"{name}'s value is in the compiled package"
    assert not files_holding(tmp_path, [v.encode() for v in planted.values()])


def test_cluster_registry_uris_with_credentials_are_refused(tmp_path):
    """The registry URI given for the cluster goes into pipeline.yaml or a run's parameters: it
    must carry no credentials, whichever way it comes in."""
    from pipelines.config import REPO_ROOT, load_config
    from pipelines.kubeflow.compile import compile_kubeflow
    from pipelines.kubeflow.presubmit import presubmit_problems

    leaky = "https://ci-bot:planted-secret-uri@mlflow.example.com"
    with pytest.raises(ValueError, match="credentials") as err:
        compile_kubeflow(load_config(kfp_registry_uri=leaky), str(tmp_path / "p.yaml"))
    assert "planted-secret-uri" not in str(err.value)
    assert not (tmp_path / "p.yaml").exists()
    with pytest.raises(SystemExit):  # the same URI as a flag: one line, exit 2, nothing written
        cli.main(["compile", "--kfp-registry-uri", leaky, "--output", str(tmp_path / "p.yaml")])
    assert not (tmp_path / "p.yaml").exists()
    problems = presubmit_problems(REPO_ROOT / "pipeline.yaml", "kubeflow", parameters={"registry_uri": leaky})
    assert any("credentials" in p for p in problems), problems
    assert not any("planted-secret-uri" in p for p in problems)
