"""What `python -m pipelines run` shows (issue #16): a line per stage and per trainer epoch, then
the summary, everything else in the run's log file; a failed run prints one block, not a
traceback: the stage, the problem in words, the user's own file or URI, where the log and the data
review are, and exits non-zero. Real LocalDagRunner runs on a small real-MNIST folder."""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import subprocess
import sys
import time
import types

import pytest

from conftest import train
from pipelines import cli, terminal
from pipelines.config import REPO_ROOT
from tests.test_data_bad_inputs import TRAIN_LABELS, _labels_out_of_range, idx_folder
from trainers import common


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
    # The champion's resolution, at the head of the run, is the first stage to need it.
    code, block = _run(capsys, tmp_path, folder, "--registry-uri", f"http://127.0.0.1:{port}")
    assert code == 1, block
    assert "FAILED in stage ChampionResolver" in block and "RegistryError" in block
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


# --- the live lines (a terminal) and the plain ones (CI, a pipe) -----------------------------------
class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _record(message: str, name: str = "tfx.orchestration.local", level: int = logging.INFO,
            **extra) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 0, message, None, None)
    record.__dict__.update(extra)
    return record


def _batches(done: int, total: int | None) -> logging.LogRecord:
    progress = {"unit": "batch", "done": done, "total": total, "epoch": 1, "epochs": 2}
    return _record(f"epoch 1/2: batch {done}/{total}", terminal.PROGRESS_LOGGER, logging.DEBUG, progress=progress)


def _a_trainer_and_an_evaluator() -> list[logging.LogRecord]:
    return [_record("Component keras_trainer is running."), _batches(10, 40), _batches(40, 40),
            _record("epoch 1/2: loss 0.5000 accuracy 0.9000 (1.0 s)", terminal.PROGRESS_LOGGER),
            _batches(20, 40), _record("Component keras_trainer is finished."),
            _record("Component BakeoffEvaluator is running."),
            _record("scoring 3 models on 10000 examples", terminal.COMPONENTS_LOGGER),
            _record("Component BakeoffEvaluator is finished."),
            _record("Component StatisticsGen is running."), _record("A cached execution 7 is used."),
            _record("Component StatisticsGen is finished.")]


def _feed(out: io.StringIO, records: list[logging.LogRecord], pause: float = 0.0) -> str:
    lines = terminal.StageLines(out, refresh_per_second=50)
    for record in records:
        lines.handle(record)
        time.sleep(pause)  # a few of rich's redraws between the records
    lines.close()
    return out.getvalue()


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _screen(written: str) -> list[str]:
    """The lines as they stay on the screen: escape codes dropped, each redraw (after \\r) replaced
    by what follows it."""
    return [ANSI.sub("", line.split("\r")[-1]) for line in written.split("\n")]


def test_a_terminal_gets_live_bars_then_the_same_done_lines():
    written = _feed(FakeTerminal(), _a_trainer_and_an_evaluator(), pause=0.05)
    drawn = ANSI.sub("", written)
    assert "\r" in written
    assert "epoch 1/2" in drawn and "10/40" in drawn and "40/40" in drawn  # the batch bar, live
    assert "scoring 3 models on 10000 examples" in drawn  # in the evaluator's live line
    screen = [line for line in _screen(written) if line.strip()]
    assert [line.split()[:2] for line in screen if line.startswith("  done")] == [
        ["done", "keras_trainer"], ["done", "BakeoffEvaluator"], ["done", "StatisticsGen"]]
    assert screen[-1].split() == ["done", "StatisticsGen", "cached"]
    assert "      keras_trainer: epoch 1/2: loss 0.5000 accuracy 0.9000 (1.0 s)" in screen
    assert len(screen) == 4  # the live lines are all gone: 3 stages and the epoch


def test_the_live_line_ticks_while_no_record_comes():
    out = FakeTerminal()
    lines = terminal.StageLines(out, refresh_per_second=20)
    lines.handle(_record("Component BakeoffEvaluator is running."))
    time.sleep(0.5)
    lines.close()
    draws = ANSI.sub("", out.getvalue()).split("\r")
    assert len([d for d in draws if "BakeoffEvaluator" in d]) >= 4, draws
    assert [line for line in _screen(out.getvalue()) if line.strip()] == []  # stopped, its line erased


def test_not_a_terminal_gets_plain_lines_only():
    written = _feed(io.StringIO(), _a_trainer_and_an_evaluator())
    assert "\r" not in written and "\x1b" not in written and "batch" not in written and "━" not in written
    lines = written.splitlines()
    assert lines[0] == "      keras_trainer: epoch 1/2: loss 0.5000 accuracy 0.9000 (1.0 s)"
    assert lines[1].startswith(f"  done  {'keras_trainer':<24} ") and lines[1].endswith(" s")
    assert lines[2] == "      BakeoffEvaluator: scoring 3 models on 10000 examples"
    assert lines[3].startswith(f"  done  {'BakeoffEvaluator':<24} ") and lines[3].endswith(" s")
    assert lines[4:] == [f"  done  {'StatisticsGen':<24} cached"]


@pytest.fixture
def batch_records():
    """The trainers' batch records, as the terminal gets them (the logger at DEBUG) while the test lasts."""
    logger = logging.getLogger(terminal.PROGRESS_LOGGER)
    level, seen = logger.level, []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record) if hasattr(record, "progress") else None
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield seen
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_batch_records_are_throttled_and_keep_the_last(monkeypatch, batch_records):
    clock = iter(i * 0.01 for i in range(10_000))  # 10 ms a batch
    monkeypatch.setattr(common, "time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    monkeypatch.setattr(common, "_last_batch_record", -1.0)
    for done in range(1, 201):  # 2 s of batches
        common.log_batches(done, 200, 1, 1)
    done = [r.progress["done"] for r in batch_records]
    assert 5 <= len(done) <= 2 * common.BATCH_RECORDS_PER_SECOND + 1 and done[0] == 1 and done[-1] == 200
    assert all(r.levelno == logging.DEBUG for r in batch_records)


def test_batch_records_are_not_made_at_the_loggers_usual_level(batch_records):
    logging.getLogger(terminal.PROGRESS_LOGGER).setLevel(logging.INFO)
    common.log_batches(10, 10, 1, 1)
    assert batch_records == []


def test_both_trainers_report_their_batches(batch_records, small_examples, tmp_path):
    from trainers import keras_trainer, torch_trainer

    seen = batch_records
    # one_cycle: the PyTorch trainer counts its epoch's batches (the schedule needs them).
    for name, run_fn in (("keras", keras_trainer.run_fn), ("torch", torch_trainer.run_fn)):
        train(run_fn, small_examples, tmp_path / name, lr_schedule="one_cycle")
        last = seen[-1].progress
        assert last["unit"] == "batch" and last["done"] == last["total"] > 1, (name, last)
        assert (last["epoch"], last["epochs"]) == (1, 1), name
        seen.clear()
