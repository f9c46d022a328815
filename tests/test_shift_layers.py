"""neurosel.shift belongs to the science core (DESIGN.md, "Three layers"): it imports only torch,
numpy, the standard library, neurosel.{errors, fc, saliency} and its own modules."""

from __future__ import annotations

from test_layers import PACKAGE, allowed, imports

SHIFT_ALLOWED = {"torch", "numpy", "neurosel.errors", "neurosel.fc", "neurosel.saliency", "neurosel.shift"}


def test_shift_knows_nothing_of_speech_or_the_recipe() -> None:
    modules = sorted((PACKAGE / "shift").glob("*.py"))
    assert len(modules) >= 8
    bad = {f"{path.name}: {name}" for path in modules for name in imports(path) if not allowed(name, SHIFT_ALLOWED)}
    assert not bad, sorted(bad)
