"""What `python -m pipelines run` shows (issue #16): a line per stage and per trainer epoch, then
the summary, everything else in the run's log file; a failed run prints one block, not a
traceback: the stage, the problem in words, the user's own file or URI, where the log and the data
review are, and exits non-zero. Real LocalDagRunner runs on a small real-MNIST folder."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from pipelines import cli
from pipelines.config import REPO_ROOT
from tests.test_data_bad_inputs import TRAIN_LABELS, _labels_out_of_range, idx_folder


def _run(capsys, tmp_path, folder, *flags):
    code = cli.main(["run", "--output-root", str(tmp_path / "out"), "--source", str(folder),
                     "--cache-dir", str(tmp_path / "cache"), "--no-verify-checksums", "--epochs", "1",
                     *flags], environ={})
    err = capsys.readouterr().err
    block = err[err.index("python -m pipelines run: the run FAILED"):] if "the run FAILED" in err else err
    return code, block


def _log_of(block: str) -> str:
    path = block.split("full log:")[1].split(" (the traceback")[0].strip()
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_a_successful_run_shows_stages_epochs_and_the_summary_only(tmp_path, mnist_cache):
    """The command as a user runs it, in its own process, output not a terminal (as under CI or tee)."""
    folder = idx_folder(tmp_path / "mine", mnist_cache)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "run", "--output-root", str(tmp_path / "out"), "--source", str(folder),
         "--cache-dir", str(tmp_path / "cache"), "--no-verify-checksums", "--epochs", "2", "--min-metric", "0.5",
         "--baseline-statistics", "none"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")} | {"PYTHONPATH": str(REPO_ROOT)})
    lines = (done.stdout + done.stderr).splitlines()
    assert done.returncode == 0, "\n".join(lines[-60:])
    assert len(lines) <= 60, "\n".join(lines)
    assert "Traceback" not in done.stderr and " INFO " not in done.stdout + done.stderr
    assert lines[0].startswith("log:  ") and lines[0].endswith(".log")
    for stage in ("MnistExampleGen", "StatisticsGen", "keras_trainer", "pytorch_trainer", "BakeoffEvaluator",
                  "RegistryPusher"):
        assert any(line.startswith(f"  done  {stage} ") for line in lines), stage
    for trainer in ("keras_trainer", "pytorch_trainer"):
        for epoch in (1, 2):
            assert any(f"{trainer}: epoch {epoch}/2: loss " in line for line in lines), (trainer, epoch)
    assert any(line.startswith("=== MNIST bake-off") for line in lines) and any("verdict:" in line for line in lines)
    with open(lines[0][len("log:  "):], encoding="utf-8") as f:
        log = f.read()
    # Everything else is in the log: the orchestrator's lines (also after Keras' export) and Keras' own.
    assert "Component RegistryPusher is finished." in log and "Epoch 1/2" in log


def test_bad_idx_names_the_users_file_not_the_cache(capsys, tmp_path, mnist_cache):
    folder = idx_folder(tmp_path / "mine", mnist_cache)
    _labels_out_of_range(folder)
    code, block = _run(capsys, tmp_path, folder, "--baseline-statistics", "none")
    assert code == 1, block
    assert block.startswith("python -m pipelines run: the run FAILED in stage MnistExampleGen")
    assert f"{folder / TRAIN_LABELS}.gz" in block and "label 10 at record 123 is outside 0-9" in block
    assert f"your input:  source {folder}" in block and "Traceback" not in block
    assert len(block.splitlines()) <= 12
    assert "Traceback" in _log_of(block)  # the whole story stays in the run's log file


def test_data_gate_names_the_schema_and_the_data_review(capsys, tmp_path, mnist_cache):
    folder = idx_folder(tmp_path / "mine", mnist_cache)
    schema = tmp_path / "schema.pbtxt"  # digits 0-8 only: the real label 9 is an anomaly
    schema.write_text((REPO_ROOT / "schema" / "schema.pbtxt").read_text().replace("max: 9", "max: 8"))
    code, block = _run(capsys, tmp_path, folder, "--schema-path", str(schema), "--baseline-statistics", "none")
    assert code == 1, block
    assert "FAILED in stage DataGate" in block and "label" in block
    assert f"your input:  schema {schema}" in block and "data review: " in block and "Traceback" not in block


def test_unreachable_registry_names_the_registry(capsys, tmp_path, mnist_cache):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = idx_folder(tmp_path / "mine", mnist_cache)
    # The drift check asks the registry for its champion's statistics: the first stage to need it.
    code, block = _run(capsys, tmp_path, folder, "--registry-uri", f"http://127.0.0.1:{port}")
    assert code == 1, block
    assert "FAILED in stage DriftValidator" in block and "RegistryError" in block
    assert f"your input:  registry http://127.0.0.1:{port}" in block and "Traceback" not in block


def test_bad_config_is_one_line_naming_the_file(capsys, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("seeds: [3, 3]\n")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["run", "--config", str(config), "--output-root", str(tmp_path / "out")], environ={})
    assert exit_info.value.code == 2
    [line] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert str(config) in line and "seeds must be up to 10 different" in line
    assert not (tmp_path / "out").exists()
