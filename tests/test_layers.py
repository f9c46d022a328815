"""The layers of DESIGN.md: the science core (``neurosel.fc``, ``saliency``, ``prune``, ``adapt``,
``shift``) imports only torch, numpy, the standard library and ``neurosel.{errors,io,fc}`` and its own
modules; ``neurosel.recipe.layout``, which the shell asks at every stage, only the standard
library."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neurosel"
CORE = ("fc", "saliency", "prune", "adapt", "shift")
ALLOWED = {"torch", "numpy", "neurosel.errors", "neurosel.io", "neurosel.fc", *(f"neurosel.{p}" for p in CORE)}


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; the package's relative imports resolved)."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            out.add(".".join(x for x in (base, node.module) if x))
    return out


def allowed(name: str, extra: set[str]) -> bool:
    top = name.split(".")[0]
    return top in sys.stdlib_module_names or any(name == a or name.startswith(a + ".") for a in extra)


@pytest.mark.parametrize("package", CORE)
def test_the_core_knows_nothing_of_speech(package: str) -> None:
    bad = {f"{path.name}: {name}" for path in sorted((PACKAGE / package).glob("*.py"))
           for name in imports(path) if not allowed(name, ALLOWED)}
    assert not bad, sorted(bad)


def test_layout_imports_the_standard_library_only() -> None:
    assert all(allowed(name, set()) for name in imports(PACKAGE / "recipe" / "layout.py"))
