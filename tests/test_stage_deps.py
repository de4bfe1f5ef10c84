"""Each dvc.yaml stage depends on exactly the project code it runs: the modules stages/<stage>.py imports,
directly or through other project modules (lazy imports inside functions included). pipeline/params.py,
pipeline/params_data.py and pipeline/strict.py are left out on purpose: a stage follows its params keys, not
the schema files."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "stages", "models")
NOT_DEPS = {"pipeline/params.py", "pipeline/params_data.py", "pipeline/strict.py"}


def project_imports(path: str, seen: set[str] | None = None) -> set[str]:
    """Project module files (relative paths) reachable from ``path`` by imports, ``path`` included."""
    seen = set() if seen is None else seen
    if path in seen or not (ROOT / path).is_file():
        return seen
    seen.add(path)
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            if name.split(".")[0] in PACKAGES:
                project_imports(name.replace(".", "/") + ".py", seen)
    return seen


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_code_deps_are_what_the_stage_imports(stage: str) -> None:
    deps = {d if isinstance(d, str) else next(iter(d)) for d in STAGES[stage].get("deps", [])}
    code = {d for d in deps if d.endswith(".py")}
    runs = {p for p in project_imports(f"stages/{stage}.py") if not p.endswith("__init__.py")} - NOT_DEPS
    assert not runs - code, f"{stage}: code it runs but does not depend on: {sorted(runs - code)}"
    assert not code - runs, f"{stage}: depends on code it does not run: {sorted(code - runs)}"
