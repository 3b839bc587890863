"""The compiled package shows the bake-off's reviewer outputs as KFP UI artifact types."""

from __future__ import annotations

import yaml

from pipelines.config import REPO_ROOT

EXPECTED = {"report": "system.HTML", "summary": "system.Markdown", "metrics": "system.Metrics",
            "classification_metrics": "system.ClassificationMetrics",
            "evaluation": "tfx.ModelEvaluation", "blessing": "tfx.ModelBlessing"}


def test_evaluator_task_outputs_render_in_the_kfp_ui():
    spec = next(yaml.safe_load_all((REPO_ROOT / "pipeline.yaml").read_text()))
    component = spec["components"]["BakeoffEvaluator"]
    outputs = component["outputDefinitions"]["artifacts"]
    titles = {name: yaml.safe_load(out["artifactType"]["instanceSchema"])["title"] for name, out in outputs.items()}
    assert titles == EXPECTED
    inputs = component["inputDefinitions"]["artifacts"]
    # The candidates, their trainers' logs (TensorBoard events, into their MLflow runs), the champion.
    assert {"examples", "champion", "keras_model", "pytorch_model", "keras_model_run",
            "pytorch_model_run"} == set(inputs)
    assert "title: tfx.ModelRun" in inputs["keras_model_run"]["artifactType"]["instanceSchema"]
    assert {"primary_metric", "min_metric", "champion_policy", "registry_uri"} <= set(
        component["inputDefinitions"]["parameters"])
