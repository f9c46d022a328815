"""Parameter selection for adaptation: neuron deltas keep every other entry bit-identical under
Adam, AdamW and SGD with momentum and weight decay; module selections move only their modules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neurosel.adapt.select import (
    Selection,
    apply_selection,
    blind_selection,
    merge_selection,
    selection_size,
    train_mode,
    under_prefix,
)
from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec

WIDTHS = [12, 10, 8]
NEURONS = {0: [1, 4, 7], 1: [0, 2, 9], 2: [3]}


class ConvMlp(nn.Module):
    """Conv + BatchNorm front end, three tanh FC layers, linear output: (B, 1, 8, 8) -> (B, 5)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2))
        dims = [3 * 4 * 4] + WIDTHS
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.fc_act = nn.ModuleList(nn.Tanh() for _ in WIDTHS)
        self.output = nn.Linear(WIDTHS[-1], 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x).flatten(1)
        for linear, act in zip(self.fc, self.fc_act):
            h = act(linear(h))
        return self.output(h)


SPEC = FcSpec(linears=["fc.0", "fc.1", "fc.2"], activations=["fc_act.0", "fc_act.1", "fc_act.2"],
              consumers=["fc.1", "fc.2", "output"], on_threshold=0.0)

OPTIMIZERS = {
    "adam": lambda params: torch.optim.Adam(params, lr=1e-2),
    "adamw": lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
    "sgd": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=0.1),
}


def make_model_and_data() -> tuple[ConvMlp, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = ConvMlp()
    x = torch.randn(32, 1, 8, 8)
    y = torch.randint(0, 5, (32,))
    return model, x, y


def train(model: nn.Module, params: list[nn.Parameter], optimizer: str, x: torch.Tensor, y: torch.Tensor,
          steps: int = 6) -> None:
    opt = OPTIMIZERS[optimizer](params)
    train_mode(model)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    model.eval()


def movable_masks(original: dict[str, torch.Tensor], outgoing: bool) -> dict[str, torch.Tensor]:
    """For each state_dict entry, True where the neuron selection NEURONS may move it."""
    masks = {k: torch.zeros_like(v, dtype=torch.bool) for k, v in original.items()}
    for layer, rows in NEURONS.items():
        masks[f"{SPEC.linears[layer]}.weight"][rows] = True
        masks[f"{SPEC.linears[layer]}.bias"][rows] = True
        if outgoing:
            masks[f"{SPEC.consumers[layer]}.weight"][:, rows] = True
    return masks


@pytest.mark.parametrize("outgoing", [False, True])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_neuron_selection_moves_only_selected_entries(optimizer: str, outgoing: bool) -> None:
    model, x, y = make_model_and_data()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        before = model(x)
    selection = Selection(neurons={k: torch.tensor(v) for k, v in NEURONS.items()}, outgoing=outgoing)
    params = apply_selection(model, SPEC, selection)
    assert all(torch.count_nonzero(p) == 0 for p in params)
    with torch.no_grad():
        assert torch.equal(model(x), before)  # zero deltas change nothing

    masks = movable_masks(original, outgoing)
    size = selection_size(model)
    assert size.moving == sum(int(m.sum()) for m in masks.values())
    assert size.total == sum(p.numel() for p in ConvMlp().parameters())

    train(model, params, optimizer, x, y)
    with torch.no_grad():
        adapted = model(x)
    merge_selection(model)
    after = model.state_dict()

    assert list(after) == list(original)
    assert all(type(m) is nn.Linear for m in [*model.fc, model.output])  # parametrisations removed
    assert all(p.requires_grad for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(model(x), adapted)
    for key, value in original.items():
        frozen = ~masks[key]
        assert torch.equal(after[key][frozen], value[frozen]), f"{key} changed outside the selection"
    for layer, rows in NEURONS.items():
        weight = f"{SPEC.linears[layer]}.weight"
        assert (after[weight][rows] != original[weight][rows]).any(dim=1).all(), f"{weight} rows did not move"
        consumer = f"{SPEC.consumers[layer]}.weight"
        cols_moved = (after[consumer][:, rows] != original[consumer][:, rows]).any(dim=0)
        if outgoing:
            assert cols_moved.all(), f"{consumer} columns did not move"
    assert not torch.equal(adapted, before)


@pytest.mark.parametrize("selection, moving", [
    (Selection(prefixes=("fc.1", "output")), ("fc.1.", "output.")),
    (Selection(layers=(0, 2)), ("fc.0.", "fc.2.")),
    (blind_selection("fc", SPEC), ("fc.",)),
    (blind_selection("last", SPEC), ("fc.2.", "output.")),
    (blind_selection("conv", SPEC), ("conv.",)),
    (blind_selection("conv", SPEC, conv_prefixes=("conv.0",)), ("conv.0.",)),
    (blind_selection("all", SPEC), ("",)),
])
def test_module_selection_moves_only_those_modules(selection: Selection, moving: tuple[str, ...]) -> None:
    model, x, y = make_model_and_data()
    original = {k: v.clone() for k, v in model.state_dict().items()}
    params = apply_selection(model, SPEC, selection)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(n.startswith(moving) for n in names)
    assert selection_size(model).moving == sum(p.numel() for p in params)
    train(model, params, "adamw", x, y)
    merge_selection(model)
    for key, value in model.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        changed = not torch.equal(value, original[key])
        assert changed == key.startswith(moving), f"{key}: changed={changed}"


def test_train_mode_keeps_frozen_norm_statistics() -> None:
    model, _, _ = make_model_and_data()
    apply_selection(model, SPEC, blind_selection("fc", SPEC))
    train_mode(model)
    assert model.training and not model.conv[1].training and model.fc[0].training
    merge_selection(model)
    apply_selection(model, SPEC, blind_selection("conv", SPEC))
    train_mode(model)
    assert model.conv[1].training


def test_prefix_matches_whole_name_components() -> None:
    assert under_prefix("fc.3.weight", "fc.3") and under_prefix("fc.3.weight", "fc.")
    assert not under_prefix("fc.30.weight", "fc.3") and not under_prefix("fc_act.0", "fc")
    assert under_prefix("anything.at.all", "")


@pytest.mark.parametrize("selection, message", [
    (Selection(prefixes=("decoder",)), "matches no parameter"),
    (Selection(neurons={3: torch.tensor([0])}), "FC layer 3"),
    (Selection(neurons={0: torch.tensor([12])}), "out of range"),
    (Selection(neurons={0: torch.tensor([1, 1])}), "repeats"),
    (Selection(neurons={0: torch.tensor([0.5])}), "integer"),
    (Selection(prefixes=("fc.0",), neurons={0: torch.tensor([1])}), "both whole and by neuron"),
    (Selection(neurons={0: torch.tensor([1]), 1: torch.tensor([10])}), "out of range"),
    (Selection(neurons={0: torch.tensor([], dtype=torch.long)}), "moves no parameter"),
])
def test_bad_selection_is_a_clear_error_and_leaves_the_model(selection: Selection, message: str) -> None:
    model, _, _ = make_model_and_data()
    keys = list(model.state_dict())
    with pytest.raises(NeuroselError, match=message):
        apply_selection(model, SPEC, selection)
    assert list(model.state_dict()) == keys
    assert all(p.requires_grad for p in model.parameters())


def test_selection_cannot_be_applied_twice() -> None:
    model, _, _ = make_model_and_data()
    apply_selection(model, SPEC, Selection(neurons={1: torch.tensor([2])}))
    with pytest.raises(NeuroselError, match="merge_selection"):
        apply_selection(model, SPEC, Selection(neurons={1: torch.tensor([3])}))
    with pytest.raises(NeuroselError, match="unknown blind selection"):
        blind_selection("encoder", SPEC)
