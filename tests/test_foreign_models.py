"""The science core on models the project did not write: an nn.Sequential MLP with one GELU module
shared by two layers and dropout, a model with functional activations, and PyTorch's
nn.TransformerEncoder (fused inference fast path, nested tensors for padded batches). Each case
here once gave silently wrong numbers; the references are computed without the library's hooks."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neurosel.adapt import Selection, add_lhuc, apply_selection, fold_lhuc, lhuc_parameters, merge_selection
from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec, check_spec, find_fc_layers, verify_spec
from neurosel.prune import mask_neurons, remove_neurons
from neurosel.saliency import (CriterionInputs, StatsConfig, StatsCollector, TaylorConfig, collect_stats,
                               collect_taylor, score_all)

CONFIG = StatsConfig(hist_bins=8, hist_min=-1.0, hist_max=3.0)


def shared_gelu_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    act = nn.GELU()
    return nn.Sequential(nn.Linear(6, 10), act, nn.Dropout(0.2), nn.Linear(10, 7), act, nn.Dropout(0.2),
                         nn.Linear(7, 3))


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.a, self.b, self.out = nn.Linear(6, 9), nn.Linear(9, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.b(F.relu(self.a(x)))))


def encoder() -> nn.TransformerEncoder:
    torch.manual_seed(2)
    layer = nn.TransformerEncoderLayer(16, 2, 24, dropout=0.1, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=True).eval()


def padded() -> tuple[torch.Tensor, torch.Tensor]:
    """(2, 6, 16) inputs and their padding mask (True = padding, as PyTorch wants it)."""
    x = torch.randn(2, 6, 16, generator=torch.Generator().manual_seed(3))
    return x, torch.tensor([[False] * 6, [False] * 4 + [True] * 2])


def mlp_activations(model: nn.Sequential, x: torch.Tensor) -> list[torch.Tensor]:
    """Each FC layer's activations computed by hand (eval mode: dropout is the identity)."""
    h1 = F.gelu(model[0](x))
    return [h1, F.gelu(model[3](h1))]


def test_a_shared_activation_module_is_found_and_counted_once_per_layer():
    model, x = shared_gelu_mlp(), torch.randn(40, 6)
    spec = find_fc_layers(model, x[:2])
    assert spec == FcSpec(["0", "3"], ["1", "1"], ["3", "6"], 0.0)
    stats = collect_stats(model, spec, [(x, None)], CONFIG)
    for layer, acts in zip(stats.layers, mlp_activations(model, x)):
        assert layer.count == 40  # not 80: the GELU module runs for both layers
        torch.testing.assert_close(layer.mean, acts.double().mean(0))
        assert torch.equal(layer.on_count, (acts > 0).sum(0))


def test_masking_one_layer_leaves_a_layer_with_the_same_activation_module_alone():
    model, x = shared_gelu_mlp(), torch.randn(40, 6)
    spec = find_fc_layers(model, x[:2])
    remove = {0: torch.tensor([1, 4])}
    pruned, _, _ = remove_neurons(copy.deepcopy(model), spec, remove)
    handle = mask_neurons(model.eval(), spec, remove)
    with torch.no_grad():
        torch.testing.assert_close(model(x), pruned.eval()(x), rtol=0, atol=1e-6)
        stats = collect_stats(model, spec, [(x, None)], CONFIG)
    # layer 1's neurons 1 and 4 are not masked with layer 0's (the GELU module is the same)
    assert (stats.layers[1].on_count[[1, 4]] > 0).all()
    handle.remove()


def test_taylor_sums_of_a_shared_activation_are_per_layer():
    model, x = shared_gelu_mlp(), torch.randn(30, 6)
    y = torch.randint(0, 3, (30,))
    spec = find_fc_layers(model, x[:2])

    def loss_fn(m: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(m(batch), y, reduction="sum")

    taylor = collect_taylor(model, spec, [(x, None)], loss_fn, TaylorConfig(hessian_probes=0))
    model.eval()
    acts = [a.detach().requires_grad_(True) for a in mlp_activations(model, x)]
    loss = F.cross_entropy(model[6](F.gelu(model[3](acts[0]))), y, reduction="sum")
    g0 = torch.autograd.grad(loss, acts[0])[0]
    loss = F.cross_entropy(model[6](acts[1]), y, reduction="sum")
    g1 = torch.autograd.grad(loss, acts[1])[0]
    assert taylor.count == 30
    torch.testing.assert_close(taylor.sum_ag[0], (acts[0] * g0).double().sum(0))
    torch.testing.assert_close(taylor.sum_ag[1], (acts[1] * g1).double().sum(0))


def test_functional_activations_are_found_and_measured_after_the_activation():
    model, x = Functional(), torch.randn(50, 6)
    spec = find_fc_layers(model, x[:2])
    assert spec.activations == ["F.relu", "F.gelu"] and spec.consumers == ["b", "out"]
    verify_spec(model, spec, x[:2])
    stats = collect_stats(model, spec, [(x, None)], CONFIG)
    post = [F.relu(model.a(x)), F.gelu(model.b(F.relu(model.a(x))))]
    for layer, acts in zip(stats.layers, post):
        torch.testing.assert_close(layer.mean, acts.detach().double().mean(0))
    assert float(stats.layers[0].min.min()) >= 0.0  # post-ReLU, not the linear's output


def test_bad_descriptions_are_clear_errors():
    model, x = Functional(), torch.randn(4, 6)
    with pytest.raises(NeuroselError, match="'b', a Linear, as an activation"):
        check_spec(model, FcSpec(["a"], ["b"], ["b"], 0.0))
    with pytest.raises(NeuroselError, match="known functional activations"):
        check_spec(model, FcSpec(["a"], ["F.softmax"], ["b"], 0.0))
    with pytest.raises(NeuroselError, match="lists linear 'a' twice"):
        check_spec(model, FcSpec(["a", "a"], ["F.relu", "F.relu"], ["b", "b"], 0.0))
    with pytest.raises(NeuroselError, match="goes through 'F.relu', not through activation 'F.gelu'"):
        verify_spec(model, FcSpec(["a"], ["F.gelu"], ["b"], 0.0), x)
    with pytest.raises(NeuroselError, match="lists consumer 'out' twice"):
        check_spec(model, FcSpec(["a", "b"], ["F.relu", "F.gelu"], ["out", "out"], 0.0))
    square = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(NeuroselError, match="go to '2', not to consumer '4'"):
        verify_spec(square, FcSpec(["0"], ["1"], ["4"], 0.0), x[:, :4])
    with pytest.raises(NeuroselError, match="no FC layer"):
        find_fc_layers(nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.ReLU(), nn.Linear(4, 2)), x[:, :3])
    with pytest.raises(NeuroselError, match="thresholds differ"):
        find_fc_layers(nn.Sequential(nn.Linear(3, 4), nn.Sigmoid(), nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 1)),
                       x[:, :3])


def test_transformer_encoder_statistics_with_a_padding_mask():
    model, (x, padding) = encoder(), padded()
    spec = find_fc_layers(model, x, src_key_padding_mask=padding)
    assert spec.linears == ["layers.0.linear1", "layers.1.linear1"]
    assert spec.consumers == ["layers.0.linear2", "layers.1.linear2"]
    with torch.inference_mode():  # where the fused path would pack the batch into a NestedTensor
        with StatsCollector(model, spec, CONFIG) as collector, collector.masked(~padding):
            model(x, src_key_padding_mask=padding)
    stats = collector.result()
    expected = []
    hooks = [model.layers[i].linear1.register_forward_hook(lambda m, i, o: expected.append(F.relu(o)))
             for i in range(2)]
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            model(x, src_key_padding_mask=padding)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
        for h in hooks:
            h.remove()
    for layer, acts in zip(stats.layers, expected):
        assert layer.count == 10  # 6 + 4 real frames
        torch.testing.assert_close(layer.mean, acts[~padding].double().mean(0))


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")  # torch's own, from its fast path
def test_transformer_encoder_masks_and_lhuc_hold_in_the_fused_fast_path():
    model, (x, padding) = encoder(), padded()
    spec = find_fc_layers(model, x, src_key_padding_mask=padding)
    remove = {0: torch.tensor([0, 5, 9]), 1: torch.tensor([3])}
    pruned, _, _ = remove_neurons(copy.deepcopy(model), spec, remove)
    masked = copy.deepcopy(model)
    handle = mask_neurons(masked, spec, remove)
    with torch.inference_mode():
        plain = model(x)
        torch.testing.assert_close(masked(x), pruned(x), rtol=0, atol=1e-5)
        with_padding = masked(x, src_key_padding_mask=padding)  # nested tensors inside
        torch.testing.assert_close(with_padding, pruned(x, src_key_padding_mask=padding), rtol=0, atol=1e-5)
        assert not torch.allclose(masked(x), plain, atol=1e-3)
    handle.remove()

    params = add_lhuc(model, spec)
    with torch.no_grad():
        for r in params:
            r.uniform_(-2, 2, generator=torch.Generator().manual_seed(4))
    lhuc = lhuc_parameters(model)
    assert len(lhuc) == 2
    with torch.inference_mode():
        adapted_fast = model(x)
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            adapted_slow = model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(True)
    assert not torch.allclose(adapted_fast, plain, atol=1e-3)  # the scales act in the fused kernel
    torch.testing.assert_close(adapted_fast, adapted_slow, rtol=0, atol=1e-5)
    fold_lhuc(model, spec)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), adapted_fast, rtol=0, atol=1e-5)


def test_removal_refuses_pending_selection_deltas_and_merges_them_first():
    model, x = Functional(), torch.randn(20, 6)
    spec = find_fc_layers(model, x[:2])
    params = apply_selection(model, spec, Selection(neurons={0: torch.tensor([2, 3])}, outgoing=True))
    with torch.no_grad():
        params[0].fill_(0.5)
    with pytest.raises(NeuroselError, match="carries IndexDelta; merge_selection"):
        remove_neurons(model, spec, {0: torch.tensor([1])})
    with pytest.raises(NeuroselError, match="'b.weight' carries IndexDelta"):
        add_lhuc(model, spec)  # the outgoing deltas sit on the consumer's weight
    merge_selection(model)
    with torch.no_grad():
        adapted = model(x)
    pruned, _, _ = remove_neurons(copy.deepcopy(model), spec, {0: torch.tensor([8])})
    assert torch.equal(pruned.a.weight[2], model.a.weight[2]) and not torch.allclose(adapted, Functional()(x))


def test_score_all_scores_what_its_inputs_allow():
    model, x = shared_gelu_mlp(), torch.randn(20, 6)
    spec = find_fc_layers(model, x[:2])
    scores = score_all(CriterionInputs(model, spec, stats=collect_stats(model, spec, [(x, None)], CONFIG)))
    assert list(scores) == ["magnitude", "outgoing", "mean_act", "apoz", "entropy", "random", "flap"]
    with pytest.raises(NeuroselError, match="criterion taylor1 needs Taylor statistics"):
        score_all(CriterionInputs(model, spec), ["taylor1"])


def test_the_science_core_imports_without_lhotse_or_the_recipe():
    code = (
        "import sys\n"
        "for name in ('lhotse', 'sentencepiece', 'kaldiio', 'yaml', 'matplotlib'):\n"
        "    sys.modules[name] = None\n"  # any import of them now raises ImportError
        "import neurosel.fc, neurosel.saliency, neurosel.prune, neurosel.adapt, neurosel.shift\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('neurosel.'))\n"
        "print(' '.join(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    allowed = ("neurosel.fc", "neurosel.saliency", "neurosel.prune", "neurosel.adapt", "neurosel.shift",
               "neurosel.errors", "neurosel.io")
    assert out and all(m.startswith(allowed) for m in out), out
