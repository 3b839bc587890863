"""pipeline.yaml is what the code compiles to, kfp loads it, and only trainers request GPUs."""

from __future__ import annotations

import pytest
import yaml
from kfp import components

from pipelines import cli
from pipelines.config import REPO_ROOT, PipelineConfig
from pipelines.kubeflow.placement import model_key_secrets
from pipelines.pipeline import TRAINER_IDS

COMMITTED = REPO_ROOT / "pipeline.yaml"
DEFAULT = PipelineConfig()


def _compile(tmp_path, *args):
    out = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", "--output", str(out), *args]) == 0
    return out


@pytest.mark.parametrize("yaml_text, flags, message", [
    ("augment_shift: 9\n", [], "augment_shift must be 0..8 pixels, got 9"),
    ("lr_schedule: cosine\n", ["--epochs", "4"], "lr_schedule 'cosine' is not one of"),
    ("epoch: 4\n", [], "unknown config keys ['epoch']"),
    ("epochs: [4\n", [], "while parsing a flow sequence; in \""),
    ("seeds: [1, 1]\n", [], "seeds must be up to 10 different non-negative integers, got [1, 1]"),
    ("corruptions_per_example: 7\n", [], "corruptions_per_example must be 0..6, got 7"),
])
def test_a_bad_setting_is_one_line_naming_the_file(tmp_path, capsys, yaml_text, flags, message):
    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compile", "--config", str(config), "--output", str(tmp_path / "p.yaml"), *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"python -m pipelines: error: invalid configuration ({config} and flags): ")
    assert message in error and "Traceback" not in error
    assert not (tmp_path / "p.yaml").exists()


def test_a_flag_outside_its_choices_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compile", "--lr-schedule", "cosine", "--output", str(tmp_path / "p.yaml")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error == ("python -m pipelines compile: error: argument --lr-schedule: invalid choice: 'cosine' "
                     "(choose from 'constant', 'one_cycle')")
    assert not (tmp_path / "p.yaml").exists()


def test_committed_pipeline_yaml_is_in_sync(tmp_path):
    regenerated = _compile(tmp_path).read_text()
    assert COMMITTED.read_text() == regenerated, "pipeline.yaml is stale: run `make compile` and commit it"


def test_kfp_loads_the_package_and_trainers_request_one_gpu():
    components.load_component_from_file(str(COMMITTED))
    spec, platform = yaml.safe_load_all(COMMITTED.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    assert set(TRAINER_IDS) <= set(tasks)
    assert not set(tasks["keras_trainer"].get("dependentTasks", [])) & set(TRAINER_IDS)
    assert not set(tasks["pytorch_trainer"].get("dependentTasks", [])) & set(TRAINER_IDS)
    executors = spec["deploymentSpec"]["executors"]
    for task_id, task in tasks.items():
        executor_label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
        resources = executors[executor_label]["container"].get("resources", {})
        placement = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"].get(executor_label)
        if task_id in TRAINER_IDS:
            assert resources["accelerator"] == {"type": "nvidia.com/gpu", "count": "1"}
            # The default GPU lands on GKE's L4 nodes and tolerates their taint (pipelines/kubeflow.py).
            assert placement == {"nodeSelector": {"labels": {"cloud.google.com/gke-accelerator": "nvidia-l4"}},
                                 "tolerations": [{"effect": "NoSchedule", "key": "nvidia.com/gpu",
                                                  "operator": "Exists"}]}
        else:  # no accelerator; the tasks that sign or verify models get those keys' secret, nothing else
            keys = model_key_secrets(DEFAULT, task_id)
            assert "accelerator" not in resources and placement == ({"secretAsEnv": keys} if keys else None), task_id
    # The champion is resolved at the head of every run, never from the cache, and both stages that
    # judge against it depend on it.
    assert tasks["ChampionResolver"]["cachingOptions"] == {"enableCache": False}
    assert {"ChampionResolver"} <= set(tasks["DriftValidator"]["dependentTasks"])
    assert {"ChampionResolver"} <= set(tasks["BakeoffEvaluator"]["dependentTasks"])
    assert all(task["cachingOptions"] == {"enableCache": True} for t, task in tasks.items() if t != "ChampionResolver")


def test_package_holds_no_path_of_this_machine():
    text = COMMITTED.read_text()
    assert str(REPO_ROOT) not in text and "/root/" not in text and "/tmp/mnist-cache" in text


def test_several_seeds_compile_one_placed_trainer_per_framework_and_seed(tmp_path):
    """Issue #15: `--seeds` adds trainers; each keeps its own seed (compiled in, not the shared
    trainer_config parameter), each is placed on the accelerator, one evaluator scores them all."""
    import json

    from pipelines.kubeflow import deploy
    from pipelines.kubeflow.package import Package

    out = _compile(tmp_path, "--seeds", "1", "2", "3")
    spec, platform = yaml.safe_load_all(out.read_text())
    tasks = spec["root"]["dag"]["tasks"]
    trainers = {f"{framework}_trainer_seed{seed}" for framework in ("keras", "pytorch") for seed in (1, 2, 3)}
    assert trainers <= set(tasks) and not set(TRAINER_IDS) & set(tasks)
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for task_id in trainers:
        executor_label = spec["components"][tasks[task_id]["componentRef"]["name"]]["executorLabel"]
        assert executor_label in placed
        config = json.loads(tasks[task_id]["inputs"]["parameters"]["custom_config"]["runtimeValue"]["constant"])
        assert config["seed"] == int(task_id[-1]) and config["epochs"] == 4
    evaluator_inputs = tasks["BakeoffEvaluator"]["inputs"]["artifacts"]
    assert {f"{t.replace('_trainer', '_model')}" for t in trainers} <= set(evaluator_inputs)
    with pytest.raises(ValueError, match="has no parameter 'epochs'"):
        deploy.parse_parameters(["epochs=2"], Package.read(str(out)))
