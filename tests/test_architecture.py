"""Imports run one way: pipelines/ -> serving/, components/ -> shared modules (components/*.py, trainers/).

- Nothing in components/, serving/ or trainers/ imports pipelines/ (their tests included).
- Nothing in trainers/ imports components/: the trainers' run_fns and the model loader travel
  alone (into the registered pyfunc's code, into a training container).
- A stage (a folder of components/) imports no other stage: what two stages share lives in a
  module of components/ itself (artifacts, registry, names, candidates). Tests beside a stage may
  drive a neighbouring stage's executor to check the two together.
- bench/ imports product code only: never conftest or tests, no sys.path edits.
- One command-line entry point: `python -m pipelines`; the Kubeflow modules stay small.

Each rule is checked on the real tree, and on a small tree that breaks it (so the check can fail).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from pipelines.config import REPO_ROOT


def imported_modules(path: Path, relative: Path) -> list[str]:
    """Absolute module names `path` (at `relative` in the tree) imports, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = relative.parent.parts
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1])
                module = f"{base}.{module}" if module else base
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__" and node.args:
            if isinstance(node.args[0], ast.Constant):
                names.append(str(node.args[0].value))
    return names


def _stage(module: str) -> str | None:
    """The stage a module name belongs to: components.<stage>.<...> -> stage; None for shared modules."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "components" else None


def _is_stage_folder(root: Path, name: str) -> bool:
    return (root / "components" / name).is_dir()


def violations(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root)
        top = relative.parts[0]
        if top not in ("components", "trainers", "serving", "bench", "pipelines"):
            continue
        is_test = path.name.endswith("_test.py") or path.name.startswith("test_")
        for module in imported_modules(path, relative):
            head = module.split(".")[0]
            if top in ("components", "trainers", "serving") and head == "pipelines":
                problems.append(f"{relative}: imports {module} (components/, serving/ and trainers/ never import "
                                "pipelines/)")
            if top == "trainers" and head == "components":
                problems.append(f"{relative}: imports {module} (trainers/ depends on nothing in components/)")
            if top == "components" and not is_test and head == "components":
                own = relative.parts[1] if len(relative.parts) > 2 else None
                other = _stage(module)
                if other and other != own and _is_stage_folder(root, other):
                    problems.append(f"{relative}: imports {module}, another stage's module (share it through "
                                    "a module of components/ instead)")
            if top == "bench" and head in ("conftest", "tests"):
                problems.append(f"{relative}: imports {module} (bench code imports product code only)")
        text = path.read_text(encoding="utf-8")
        if top == "bench" and "sys.path" in text:
            problems.append(f"{relative}: edits sys.path (run it as python -m bench.NAME from the repo root)")
        if top in ("pipelines", "components", "trainers") and relative != Path("pipelines/__main__.py") \
                and '__name__ == "__main__"' in text:
            problems.append(f"{relative}: is a command-line entry point; `python -m pipelines` is the only one")
    return problems


def test_the_tree_imports_one_way():
    assert violations(REPO_ROOT) == []


BROKEN = {
    "component imports pipelines": ("components/shared.py", "from pipelines import validation\n",
                                    "never import pipelines/"),
    "serving imports pipelines": ("serving/server.py", "from pipelines.config import PipelineConfig\n",
                                  "never import pipelines/"),
    "trainer imports a component": ("trainers/t.py", "from components import registry\n",
                                    "depends on nothing in components/"),
    "stage imports another stage": ("components/b/executor.py", "from components.a import executor\n",
                                    "another stage's module"),
    "relative stage import": ("components/b/executor.py", "from ..a import executor\n", "another stage's module"),
    "bench imports conftest": ("bench/x.py", "from conftest import run_example_gen\n", "product code only"),
    "bench edits sys.path": ("bench/y.py", "import sys\nsys.path.insert(0, '.')\n", "edits sys.path"),
    "second entry point": ("pipelines/tool.py", 'if __name__ == "__main__":\n    pass\n', "the only one"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_check_finds_a_broken_tree(tmp_path, case):
    path, text, expected = BROKEN[case]
    for stage in ("a", "b"):
        (tmp_path / "components" / stage).mkdir(parents=True)
        (tmp_path / "components" / stage / "executor.py").write_text("import os\n")
    (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / path).write_text(text)
    assert any(expected in v for v in violations(tmp_path)), violations(tmp_path)
    # A test beside a stage may use a neighbouring stage; a shared module may be used by every stage.
    (tmp_path / path).write_text("import os\n")
    (tmp_path / "components" / "b" / "executor_test.py").write_text("from components.a import executor\n")
    (tmp_path / "components" / "b" / "component.py").write_text("from components import shared\n")
    assert violations(tmp_path) == []
