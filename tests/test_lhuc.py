"""LHUC: only the per-neuron amplitudes train, and folding them into the consumers gives a plain
model with the same outputs; a wrong description is a clear error."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurosel.adapt.lhuc import LhucScale, add_lhuc, fold_lhuc, lhuc_parameters
from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec, verify_spec


class Mlp(nn.Module):
    """Two sigmoid FC layers (the second with a PReLU, which has its own parameter) + output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.ModuleList([nn.Linear(6, 9), nn.Linear(9, 7)])
        self.act = nn.ModuleDict({"a": nn.Sigmoid(), "b": nn.PReLU()})
        self.output = nn.Linear(7, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.act["b"](self.fc[1](self.act["a"](self.fc[0](x)))))


SPEC = FcSpec(linears=["fc.0", "fc.1"], activations=["act.a", "act.b"], consumers=["fc.1", "output"],
              on_threshold=0.5)


def test_lhuc_trains_only_amplitudes_and_folds_to_identical_outputs() -> None:
    torch.manual_seed(0)
    model = Mlp()
    x, y = torch.randn(40, 6), torch.randint(0, 4, (40,))
    original = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(x)

    params = add_lhuc(model, SPEC)
    assert [p.shape for p in params] == [torch.Size([9]), torch.Size([7])]
    assert params == lhuc_parameters(model)
    with torch.no_grad():
        assert torch.equal(model(x), before)  # amplitude 2*sigmoid(0) = 1 exactly

    opt = torch.optim.AdamW(params, lr=0.05, weight_decay=0.1)
    for _ in range(20):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    for key, value in original.items():  # a scaled weight is kept as the parametrisation's original
        module, _, tensor = key.rpartition(".")
        plain = model.get_submodule(module)
        if hasattr(plain, "parametrizations") and tensor in plain.parametrizations:
            assert torch.equal(plain.parametrizations[tensor].original, value), key
        else:
            assert torch.equal(model.get_parameter(key), value), key
    assert all((p != 0).any() for p in params)
    with torch.no_grad():
        adapted = model(x)
    assert not torch.allclose(adapted, before)

    fold_lhuc(model, SPEC)
    assert lhuc_parameters(model) == [] and not any(isinstance(m, LhucScale) for m in model.modules())
    assert list(model.state_dict()) == list(original)
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.allclose(model(x), adapted, atol=1e-6, rtol=0)
    assert torch.equal(model.fc[0].weight, original["fc.0.weight"])
    assert not torch.equal(model.fc[1].weight, original["fc.1.weight"])


def test_lhuc_errors() -> None:
    model = Mlp()
    with pytest.raises(NeuroselError, match="no LHUC scales"):
        fold_lhuc(model, SPEC)
    add_lhuc(model, SPEC)
    with pytest.raises(NeuroselError, match="already has LHUC"):
        add_lhuc(model, SPEC)
    x = torch.randn(2, 6)
    # act.a is not what fc.1's output goes through, and act.b not fc.0's: caught before any use
    with pytest.raises(NeuroselError, match="act.a"):
        verify_spec(Mlp(), FcSpec(["fc.0", "fc.1"], ["act.a", "act.a"], ["fc.1", "output"], 0.5), x)
    with pytest.raises(NeuroselError, match="act.b"):
        verify_spec(Mlp(), FcSpec(["fc.0"], ["act.b"], ["fc.1"], 0.5), x)
    verify_spec(Mlp(), SPEC, x)
