"""KServe's InferenceService schema as JSON Schema, built from KServe's own Python SDK, offline.

The `kserve` wheel on PyPI carries no CRD, but its `kserve/models/*.py` are generated from
KServe's OpenAPI spec (the same definitions as the CRD's): each model class lists its fields
with their types (`openapi_types`), their JSON names (`attribute_map`), the required ones (the
setters refuse None) and enums (`allowed_values`). The Kubernetes types they use (V1ObjectMeta,
V1ResourceRequirements, ...) come the same way from the `kubernetes` client wheel. This reads
those files with `ast` (nothing of them is imported or run) and writes a JSON Schema in which
every object allows only its declared fields, so a misspelt or misplaced field, a wrong type or a
missing required field is an error.

    python -m serving.kserve_schema   # downloads the two pinned wheels (hash-checked), rewrites
                                      # components/kserve_deployer/inferenceservice.schema.json
    python -m serving.kserve_schema --serving-runtime   # the same for KServe's ServingRuntime
                                      # (serving.kserve.io/v1alpha1): serving/servingruntime.schema.json
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

SERVING_DIR = Path(__file__).resolve().parent
SCHEMA_PATH = SERVING_DIR.parent / "components" / "kserve_deployer" / "inferenceservice.schema.json"
WHEELS_LOCK = SCHEMA_PATH.parent / "schema-wheels.lock"
ROOT = "V1beta1InferenceService"
API_VERSION, KIND = "serving.kserve.io/v1beta1", "InferenceService"
# The ServingRuntime that serves the project's image (serving/kserve_runtime.py), from the same wheels.
RUNTIME_SCHEMA_PATH = SERVING_DIR / "servingruntime.schema.json"
RUNTIME_ROOT = "V1alpha1ServingRuntime"
RUNTIME_API_VERSION, RUNTIME_KIND = "serving.kserve.io/v1alpha1", "ServingRuntime"
_SCALARS = {"str": {"type": "string"}, "int": {"type": "integer"}, "float": {"type": "number"},
            "bool": {"type": "boolean"}, "object": {}, "datetime": {"type": "string"}, "date": {"type": "string"}}
# KServe's Quantity: a Kubernetes resource quantity, "2Gi", "500m" or a number.
_QUANTITY = {"type": ["string", "integer", "number"]}
_REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")


def _literal(node: ast.AST) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def parse_models(source: str) -> dict[str, dict[str, Any]]:
    """Every generated model class in `source`: {name: {types, names, required, enums}}."""
    found = {}
    for cls in ast.walk(ast.parse(source)):
        if not isinstance(cls, ast.ClassDef):
            continue
        model: dict[str, Any] = {"types": None, "names": None, "required": [], "enums": {}}
        for node in cls.body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                if node.targets[0].id == "openapi_types":
                    model["types"] = _literal(node.value)
                elif node.targets[0].id == "attribute_map":
                    model["names"] = _literal(node.value)
            elif isinstance(node, ast.FunctionDef) and any(
                    isinstance(d, ast.Attribute) and d.attr == "setter" for d in node.decorator_list):
                body = ast.get_source_segment(source, node) or ""
                if _REQUIRED.search(body):
                    model["required"].append(node.name)
                for inner in ast.walk(node):
                    if (isinstance(inner, ast.Assign) and isinstance(inner.targets[0], ast.Name)
                            and inner.targets[0].id == "allowed_values"):
                        values = _literal(inner.value)
                        if isinstance(values, list) and values:
                            model["enums"][node.name] = values
        if isinstance(model["types"], dict) and isinstance(model["names"], dict):
            found[cls.name] = model
    return found


def models_in_wheel(wheel: str, folder: str) -> dict[str, dict[str, Any]]:
    models = {}
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            if name.startswith(folder) and name.endswith(".py") and not name.endswith("__init__.py"):
                models.update(parse_models(z.read(name).decode("utf-8")))
    return models


def build_schema(models: dict[str, dict[str, Any]], source: dict[str, str], root_model: str = ROOT,
                 api_version: str = API_VERSION, kind_name: str = KIND) -> dict[str, Any]:
    """The JSON Schema of `root_model` (default: the InferenceService), with a definition for every
    model class reachable from it."""
    definitions: dict[str, Any] = {}
    unresolved: set[str] = set()
    pending = [root_model]

    def type_schema(kind: str) -> dict[str, Any]:
        kind = kind.strip()
        if kind in _SCALARS:
            return dict(_SCALARS[kind])
        if kind in ("ResourceQuantity", "Quantity"):
            return dict(_QUANTITY)
        if kind.startswith("list[") and kind.endswith("]"):
            return {"type": "array", "items": type_schema(kind[5:-1])}
        if (kind.startswith("dict(") and kind.endswith(")")) or (kind.startswith("dict[") and kind.endswith("]")):
            return {"type": "object", "additionalProperties": type_schema(kind[5:-1].split(",", 1)[1])}
        if kind in models:
            if kind not in definitions and kind not in pending:
                pending.append(kind)
            return {"$ref": f"#/definitions/{kind}"}
        unresolved.add(kind)
        return {}

    while pending:
        name = pending.pop()
        model = models[name]
        definitions[name] = {}  # reserved before recursion
        properties = {model["names"][attr]: type_schema(kind) for attr, kind in sorted(model["types"].items())}
        for attr, values in model["enums"].items():
            properties[model["names"][attr]]["enum"] = values
        definition = {"type": "object", "properties": properties, "additionalProperties": False}
        if model["required"]:
            definition["required"] = sorted(model["names"][a] for a in model["required"])
        definitions[name] = definition
    root = definitions[root_model]
    root["properties"]["apiVersion"] = {"const": api_version}
    root["properties"]["kind"] = {"const": kind_name}
    root["required"] = sorted(set(root.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": f"KServe {kind_name} ({api_version})",
        "description": "Generated by serving/kserve_schema.py from the model classes of the wheels named "
                       "in x-source (KServe's OpenAPI-generated SDK); do not edit.",
        "x-source": source,
        "x-unresolved-types": sorted(unresolved),
        "$ref": f"#/definitions/{root_model}",
        "definitions": dict(sorted(definitions.items())),
    }


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def download_wheels(dst: str) -> dict[str, str]:
    """The wheels pinned (with hashes) in components/kserve_deployer/schema-wheels.lock: {project: path}."""
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", "--only-binary",
                    ":all:", "-q", "-d", dst, "-r", str(WHEELS_LOCK)], check=True)
    wheels = {}
    for path in sorted(Path(dst).glob("*.whl")):
        wheels[path.name.split("-")[0]] = str(path)
    return wheels


def generate(wheels: dict[str, str], serving_runtime: bool = False) -> dict[str, Any]:
    models = {**models_in_wheel(wheels["kubernetes"], "kubernetes/client/models/"),
              **models_in_wheel(wheels["kserve"], "kserve/models/")}
    source = {Path(w).name: f"sha256:{_sha256(w)}" for w in wheels.values()}
    if serving_runtime:
        return build_schema(models, source, RUNTIME_ROOT, RUNTIME_API_VERSION, RUNTIME_KIND)
    return build_schema(models, source)


def main(argv: list[str] | None = None) -> None:
    serving_runtime = "--serving-runtime" in (sys.argv[1:] if argv is None else argv)
    path = RUNTIME_SCHEMA_PATH if serving_runtime else SCHEMA_PATH
    with tempfile.TemporaryDirectory(prefix="kserve-wheels-") as tmp:
        schema = generate(download_wheels(tmp), serving_runtime)
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(schema, indent=1, sort_keys=False) + "\n")
    print(f"{path}: {len(schema['definitions'])} definitions from {', '.join(schema['x-source'])}")


if __name__ == "__main__":
    main()
