"""The README's "Use the library on your own model" example runs as written, and does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def example_code() -> str:
    section = README.read_text().split("## Use the library on your own model", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section should hold one python example"
    return blocks[0]


def test_the_readme_example_runs_on_a_transformer_encoder():
    code = example_code()
    assert len([line for line in code.splitlines() if line.strip() and not line.startswith(("import", "from", "#"))]) <= 14
    torch.manual_seed(0)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    spec, classes, model = scope["spec"], scope["classes"], scope["model"]
    assert spec.linears == ["layers.0.linear1", "layers.1.linear1"]
    assert [len(c) for c in classes] == [256, 256]
    assert [int((c != "normal").sum()) for c in classes] == [26, 26]  # 5% hyper + 5% hypo per layer
    assert [m.linear1.out_features for m in model.layers] == [230, 230]  # and those removed
    assert {row.criterion for row in scope["overlap"]} >= {"magnitude", "apoz", "entropy", "random"}
