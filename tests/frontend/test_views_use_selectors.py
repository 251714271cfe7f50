"""Pages read through selectors and write through services: no view touches the ORM
(import-linter cannot forbid a subpackage of Django, so this test does)."""

import ast
from pathlib import Path

import pytest

VIEWS = sorted((Path(__file__).resolve().parents[2] / "frontend" / "views").glob("*.py"))


@pytest.mark.parametrize("path", VIEWS, ids=lambda p: p.name)
def test_a_view_module_never_queries_the_orm(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imports = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not {m for m in imports if m == "django.db" or m.startswith("django.db.")}
    managers = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr in {"objects", "select_for_update"}
    ]
    assert managers == [], f"{path.name}: ORM use on lines {managers}"
