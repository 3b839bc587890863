"""A compiled KFP v2 package (`pipeline.yaml`): reading and writing it, and the names the compile,
the pre-submit check, deploy and the launcher share."""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path
from typing import Any

import yaml

# Where the image (infra/Dockerfile) puts the project; compiled paths point inside the image.
IMAGE_PROJECT_DIR = "/pipeline"
# Absolute paths a task may name: the project inside the image, and container scratch space.
CONTAINER_PATH_PREFIXES = (IMAGE_PROJECT_DIR + "/", "/tmp/")
# The pipeline parameter holding the trainers' custom_config (JSON); see compile.submit_time_parameters.
TRAINER_CONFIG_PARAMETER = "trainer_config"


class PackageError(ValueError):
    """A compiled package that cannot be read or placed; the message names the file."""


@dataclasses.dataclass
class Package:
    """A compiled KFP v2 package: its header comments, pipeline spec and platform spec."""

    path: str
    header: str
    spec: dict[str, Any]
    platform: dict[str, Any]

    @classmethod
    def read(cls, path: str | Path) -> Package:
        path = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
            documents = [d for d in yaml.safe_load_all(text) if d is not None]
        except (OSError, yaml.YAMLError) as e:
            raise PackageError(f"{path}: cannot read the package: {e}") from e
        if not 1 <= len(documents) <= 2 or not all(isinstance(d, dict) for d in documents):
            raise PackageError(f"{path}: expected a pipeline spec and at most one platform spec "
                               f"(YAML mappings), found {len(documents)} document(s)")
        # The "# PIPELINE DEFINITION" comment block the compilers write above the spec.
        header = "".join(itertools.takewhile(lambda line: line.startswith("#"),
                                             text.splitlines(keepends=True)))
        return cls(path, header, documents[0], documents[1] if len(documents) == 2 else {})

    def write(self) -> None:
        documents = [self.spec] + ([self.platform] if self.platform else [])
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(self.header)
            # The same dump as KubeflowV2DagRunner and kfp's compiler, so the diff is only ours.
            yaml.dump_all(documents, f, sort_keys=True)

    @property
    def tasks(self) -> dict[str, Any]:
        return self.spec.get("root", {}).get("dag", {}).get("tasks", {})

    @property
    def executors(self) -> dict[str, Any]:
        return self.spec.get("deploymentSpec", {}).get("executors", {})

    @property
    def kubernetes_executors(self) -> dict[str, Any]:
        return (self.platform.get("platforms", {}).get("kubernetes", {})
                .get("deploymentSpec", {}).get("executors", {}))

    @property
    def root_parameters(self) -> dict[str, Any]:
        return self.spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})

    def executor_label(self, task_id: str) -> str:
        task = self.tasks.get(task_id)
        if task is None:
            raise PackageError(f"{self.path}: no task {task_id!r} (tasks: {sorted(self.tasks)})")
        component = self.spec["components"][task["componentRef"]["name"]]
        return component["executorLabel"]
