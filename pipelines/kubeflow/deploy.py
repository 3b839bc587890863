"""Deploying a compiled package: as a new version of a pipeline on Kubeflow Pipelines (and
optionally a run of it), or as a Vertex AI PipelineJob; run parameters typed by the package."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from pipelines.kubeflow.package import TRAINER_CONFIG_PARAMETER, Package

PARAMETER_TYPES = {"NUMBER_INTEGER": int, "NUMBER_DOUBLE": float, "STRING": str, "INT": int, "DOUBLE": float,
                   "BOOLEAN": lambda v: {"true": True, "false": False}[v.lower()]}
PYTHON_TYPES = {int: "INT", float: "DOUBLE", str: "STRING", bool: "BOOLEAN"}


def _typed(name: str, raw: str, kind: str) -> Any:
    try:
        return PARAMETER_TYPES.get(kind, str)(raw)
    except (ValueError, KeyError) as e:
        raise ValueError(f"--param {name}: {raw!r} is not a {kind}") from e


def _trainer_defaults(package: Package) -> dict[str, Any]:
    default = package.root_parameters.get(TRAINER_CONFIG_PARAMETER, {}).get("defaultValue")
    return json.loads(default) if default else {}


def parse_parameters(pairs: list[str], package: Package) -> dict[str, Any]:
    """NAME=VALUE pairs, typed by the package's pipeline parameters. A trainer setting (epochs,
    batch_size, ...) edits the trainer_config parameter's JSON; any other name is an error."""
    declared, trainer_defaults = package.root_parameters, _trainer_defaults(package)
    values: dict[str, Any] = {}
    trainer_settings: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: expected NAME=VALUE")
        if name in declared:
            kind = declared[name].get("parameterType") or declared[name].get("type", "STRING")
            values[name] = _typed(name, raw, kind)
        elif name in trainer_defaults:
            trainer_settings[name] = _typed(name, raw, PYTHON_TYPES[type(trainer_defaults[name])])
        else:
            takes = sorted(declared) + sorted(trainer_defaults)
            raise ValueError(f"{package.path}: the pipeline has no parameter {name!r} "
                             f"(it takes: {', '.join(takes) or 'none'})")
    if trainer_settings:
        base = json.loads(values.get(TRAINER_CONFIG_PARAMETER, json.dumps(trainer_defaults)))
        values[TRAINER_CONFIG_PARAMETER] = json.dumps({**base, **trainer_settings}, sort_keys=True)
    return values


@dataclasses.dataclass
class Deployment:
    """What one deploy does, built from the flags before anything is contacted."""

    package: str
    pipeline_name: str
    version_name: str
    parameters: dict[str, Any]
    pipeline_root: str | None
    run: bool
    run_name: str
    experiment: str
    # None: each task's own caching option from the package (the champion's resolution never
    # caches); True would override it on Vertex AI. False: --no-cache, every task runs.
    enable_caching: bool | None


def build_deployment(package_path: str, version: str, pairs: list[str], *, pipeline_name: str | None = None,
                     pipeline_root: str | None = None, run: bool = False, run_name: str | None = None,
                     experiment: str = "", enable_caching: bool | None = None) -> Deployment:
    """What one deploy does, from the command line's values, before anything is contacted.
    `version` (the code revision) names the pipeline version."""
    package = Package.read(package_path)
    parameters = parse_parameters(pairs, package)
    return Deployment(
        package=package_path,
        pipeline_name=pipeline_name or package.spec.get("pipelineInfo", {}).get("name", "pipeline"),
        version_name=version, parameters=parameters, pipeline_root=pipeline_root, run=run,
        run_name=run_name or f"run-{version}", experiment=experiment, enable_caching=enable_caching)


def deploy_kubeflow(d: Deployment, client: Any) -> dict[str, str]:
    """Uploads the package as a new version of `d.pipeline_name` (the pipeline is created on the
    first upload), then optionally starts a run of that version."""
    pipeline_id = client.get_pipeline_id(d.pipeline_name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(d.package, pipeline_name=d.pipeline_name)
        pipeline_id = pipeline.pipeline_id
    version = client.upload_pipeline_version(d.package, pipeline_version_name=d.version_name,
                                             pipeline_id=pipeline_id)
    result = {"pipeline_id": pipeline_id, "version_id": version.pipeline_version_id}
    if d.run:
        experiment = client.create_experiment(d.experiment)
        run = client.run_pipeline(experiment.experiment_id, d.run_name, pipeline_id=pipeline_id,
                                  version_id=version.pipeline_version_id, params=d.parameters,
                                  pipeline_root=d.pipeline_root, enable_caching=d.enable_caching)
        result["run_id"] = run.run_id
    return result


def vertex_job_arguments(d: Deployment, project: str, region: str) -> dict[str, Any]:
    """Keyword arguments of google.cloud.aiplatform.PipelineJob for this deployment."""
    return {"display_name": d.run_name, "template_path": d.package, "pipeline_root": d.pipeline_root,
            "parameter_values": d.parameters, "enable_caching": d.enable_caching,
            "project": project, "location": region,
            "labels": {"code-revision": re.sub(r"[^a-z0-9_-]", "-", d.version_name.lower())}}


def deploy_vertex(d: Deployment, project: str, region: str, service_account: str | None) -> str:
    from google.cloud import aiplatform

    job = aiplatform.PipelineJob(**vertex_job_arguments(d, project, region))
    job.submit(service_account=service_account)
    return job.resource_name
