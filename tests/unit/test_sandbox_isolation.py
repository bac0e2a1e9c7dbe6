"""The monitor (models/, services/, jobs/) never imports the sandbox venues; checked on the AST."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MONITOR_PACKAGES = ("models", "services", "jobs")


def sandbox_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{path.name}:{node.lineno} imports {n}" for n in names if n.split(".")[0] == "sandbox"]
    return found


def test_the_checker_sees_a_sandbox_import(tmp_path: Path) -> None:
    module = tmp_path / "probe.py"
    module.write_text(
        "import sandboxes\nfrom sandbox.world import World\nimport os, sandbox\nfrom . import sandbox\n",
        encoding="utf-8",
    )
    assert sandbox_imports(module) == ["probe.py:2 imports sandbox.world", "probe.py:3 imports sandbox"]


@pytest.mark.parametrize("package", MONITOR_PACKAGES)
def test_monitor_packages_never_import_the_sandbox(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files under {package}/"
    offenders = [hit for path in files for hit in sandbox_imports(path)]
    assert offenders == []
