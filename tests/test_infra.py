"""The image installs exactly the locked versions; the bootstrap keys its venv on the lock."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
    for script, lock in (("infra/bootstrap.sh", "requirements.lock"),
                         ("serving/bootstrap.sh", "serving/requirements.lock")):
        commands = _shell_commands(REPO_ROOT / script)
        assert f'lock="$repo/{lock}"' in commands, script
        assert '"$repo/infra/locked_install.sh" "$python" "$venv" "$lock" "$home"' in commands, script
        assert not [c for c in commands if re.search(r"\bpip\b.*\binstall\b", c)], script
    installs = [c for c in _shell_commands(REPO_ROOT / "infra" / "locked_install.sh")
                if re.search(r"\b(pip|uv)\b.*\binstall\b", c) and not c.startswith("echo ")]
    assert len(installs) == 3, installs  # uv itself, the lock by uv, the lock by pip
    for install in installs:  # the lock only (or uv's own), hashes required, no resolution
        flags = install.split()
        assert "--require-hashes" in flags and "--no-deps" in flags, install
        assert re.search(r'(^|\s)-r "\$(lock|uv_lock)"(;|\s|$)', install), install
        assert not re.search(r"--(index-url|extra-index-url|trusted-host|no-verify)\b", install), install


def _tiny_wheel(folder, name: str = "mnist_tiny_pkg", version: str = "0.1") -> tuple[Path, str]:
    """A real, minimal pure-Python wheel and its sha256."""
    import base64
    import hashlib
    import zipfile

    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n",
             f"{name}-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{name}-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                   "Tag: py3-none-any\n"}
    record = [f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for path, text in files.items()]
    files[f"{name}-{version}.dist-info/RECORD"] = "\n".join([*record, f"{name}-{version}.dist-info/RECORD,,"]) + "\n"
    wheel = Path(folder) / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel, hashlib.sha256(wheel.read_bytes()).hexdigest()


def _pipeline_home() -> Path:
    return Path(os.environ.get("MNIST_PIPELINE_HOME", Path.home() / ".cache" / "mnist-pipeline"))


@pytest.mark.parametrize("installer", ["uv", "pip"])
def test_locked_install_installs_the_locked_file_and_refuses_another(tmp_path, installer):
    """With uv (the one the bootstrap installed for this suite's venv) and with pip (no uv to be
    had: no index), the lock's file is installed; a file whose hash is not the lock's is refused."""
    import shutil

    wheel, digest = _tiny_wheel(tmp_path)
    lock = tmp_path / "tiny.lock"
    lock.write_text(f"mnist-tiny-pkg @ {wheel.as_uri()} --hash=sha256:{digest}\n")
    home = tmp_path / "home"
    home.mkdir()
    env = {**os.environ, "PIP_NO_INDEX": "1", "UV_OFFLINE": "1"}
    if installer == "uv":  # the tools folder the bootstrap made for this suite's own venv
        tools = sorted(_pipeline_home().glob("uv-*"))
        assert tools, f"no uv under {_pipeline_home()}: infra/bootstrap.sh did not install it"
        shutil.copytree(tools[-1], home / tools[-1].name, symlinks=True)

    def install(venv: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(REPO_ROOT / "infra" / "locked_install.sh"), sys.executable, str(tmp_path / venv),
                               str(lock), str(home)], env=env, capture_output=True, text=True, timeout=300)

    done = install("venv")
    assert done.returncode == 0, done.stderr
    used_pip = "installing" in done.stderr and "with pip" in done.stderr
    assert used_pip == (installer == "pip"), done.stderr
    shown = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                            "import mnist_tiny_pkg; print(mnist_tiny_pkg.VERSION)"], capture_output=True, text=True)
    assert shown.stdout.strip() == "0.1", shown.stderr
    with open(wheel, "ab") as f:  # the same name, another file: its hash is not the lock's
        f.write(b"\0")
    refused = install("venv2")
    assert refused.returncode != 0
    assert "hash" in (refused.stderr + refused.stdout).lower(), refused.stderr


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


def test_image_and_entry_point_set_the_runtime_environment():
    """PyTorch's OpenMP runtime reads its wait policy, TensorFlow whether it uses oneDNN, once, when
    each loads: the image's environment and `python -m pipelines` (before any import of either) set
    both, a user's own setting winning."""
    from trainers.machine import runtime_defaults, with_runtime_defaults

    dockerfile = re.sub(r"\\\n\s*", " ", (REPO_ROOT / "infra" / "Dockerfile").read_text())
    env_lines = " ".join(line for line in dockerfile.splitlines() if line.startswith("ENV "))
    entry_point = (REPO_ROOT / "pipelines" / "__main__.py").read_text()
    assert "runtime_defaults" in entry_point.split("import exit_process")[0]
    # What the entry point imports before setting them must load neither framework.
    loaded = subprocess.run([sys.executable, "-c", "import sys, trainers.machine; "
                             "print('torch' in sys.modules, 'tensorflow' in sys.modules)"],
                            capture_output=True, text=True, cwd=REPO_ROOT, check=True).stdout.split()
    assert loaded == ["False", "False"]
    # The image is x86-64 (linux/amd64): both variables.
    assert set(runtime_defaults("x86_64")) == {"OMP_WAIT_POLICY", "TF_ENABLE_ONEDNN_OPTS"}
    for name, value in runtime_defaults("x86_64").items():
        assert f"{name}={value}" in env_lines.split(), f"infra/Dockerfile does not set {name}={value}"
    # Where TensorFlow's own default differs by CPU family, it stands outside x86-64.
    assert "TF_ENABLE_ONEDNN_OPTS" not in runtime_defaults("aarch64")
    assert with_runtime_defaults({"TF_ENABLE_ONEDNN_OPTS": "0"})["TF_ENABLE_ONEDNN_OPTS"] == "0"


def test_the_entry_point_turns_tensorflows_onednn_on_unless_the_user_says_otherwise():
    """`python -m pipelines` starts TensorFlow with oneDNN on (its own log line says so), and off when
    the user's environment turns it off."""
    script = ("import runpy, sys; sys.argv = ['pipelines', '--help']\n"
              "try:\n    runpy.run_module('pipelines', run_name='__main__')\nexcept SystemExit:\n    pass\n"
              "from tensorflow.python.util import _pywrap_util_port\nprint('ONEDNN', _pywrap_util_port.IsMklEnabled())")
    for setting, expected in ((None, "True"), ("0", "False")):
        env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
        if setting is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = setting
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT, env=env,
                              timeout=300)
        assert f"ONEDNN {expected}" in done.stdout, done.stderr[-2000:]
