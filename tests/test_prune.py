"""Structured removal of FC neurons, its mask-mode equivalent, mean folding and the kept indices."""

from __future__ import annotations

import copy

import pytest
import torch

from fc_nets import ConvMlp, Mlp, conv_mlp_spec, mlp_spec, seeded
from neurosel.errors import NeuroselError
from neurosel.prune import count_parameters, fc_widths, mask_neurons, remove_neurons
from neurosel.saliency.stats import StatsConfig, collect_stats

REMOVE = {0: torch.tensor([4, 1, 6]), 1: torch.tensor([0, 3])}


def models():
    """(model, spec, input) for a sigmoid MLP and a conv + ReLU MLP, float32."""
    g = torch.Generator().manual_seed(0)
    return [
        (seeded(Mlp(5, [8, 5], 3), seed=1), mlp_spec(2), torch.randn(2, 7, 5, generator=g)),
        (seeded(ConvMlp(5, 6, [8, 5], 3), seed=2), conv_mlp_spec(2), torch.randn(2, 7, 5, generator=g)),
    ]


def mean_activations(model, spec, x):
    stats = collect_stats(model, spec, [(x, None)], StatsConfig(hist_max=10.0))
    return dict(enumerate(stats.mean_act))


@pytest.mark.parametrize("fold", [False, True])
@pytest.mark.parametrize("which", [0, 1])
def test_removal_and_mask_give_the_same_outputs(which, fold):
    model, spec, x = models()[which]
    fold_mean = mean_activations(model, spec, x) if fold else None
    masked = copy.deepcopy(model)
    handle = mask_neurons(masked, spec, REMOVE, fold_mean)
    pruned, new_spec, _ = remove_neurons(copy.deepcopy(model), spec, REMOVE, fold_mean)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), rtol=0, atol=1e-6)
        handle.remove()
        torch.testing.assert_close(masked(x), model(x), rtol=0, atol=0)
    assert new_spec == spec
    assert [p.shape for p in masked.parameters()] == [p.shape for p in model.parameters()]


def test_folding_a_constant_neuron_is_exact():
    model, spec, x = models()[0]
    with torch.no_grad():  # layer-1 neuron 2 is stuck at sigmoid(30) = 1 - 1e-13
        model.fc[1].weight[2] = 0.0
        model.fc[1].bias[2] = 30.0
    before = model(x).detach()
    means = mean_activations(model, spec, x)
    folded, _, _ = remove_neurons(copy.deepcopy(model), spec, {1: torch.tensor([2])}, {1: means[1]})
    unfolded, _, _ = remove_neurons(copy.deepcopy(model), spec, {1: torch.tensor([2])})
    with torch.no_grad():
        assert (folded(x) - before).abs().max() < 1e-6
        expected_shift = model.output.weight[:, 2].abs().max()
        assert (unfolded(x) - before).abs().max() == pytest.approx(float(expected_shift), rel=1e-5)


def test_widths_index_map_and_parameter_count():
    model, spec, x = models()[1]
    n_before = count_parameters(model)
    pruned, _, index_map = remove_neurons(model, spec, REMOVE)
    assert fc_widths(pruned, spec) == [5, 3]
    assert index_map[0].tolist() == [0, 2, 3, 5, 7] and index_map[1].tolist() == [1, 2, 4]
    assert pruned.head.fc[1].weight.shape == (3, 5) and pruned.head.output.weight.shape == (3, 3)
    conv = 6 * 5 * 3 + 6
    assert n_before == conv + (6 + 1) * 8 + (8 + 1) * 5 + (5 + 1) * 3
    assert count_parameters(pruned) == conv + (6 + 1) * 5 + (5 + 1) * 3 + (3 + 1) * 3


def test_removed_rows_and_columns_are_the_right_ones():
    model, spec, x = models()[0]
    original = copy.deepcopy(model)
    remove_neurons(model, spec, REMOVE)
    keep0, keep1 = [0, 2, 3, 5, 7], [1, 2, 4]
    assert torch.equal(model.fc[0].weight, original.fc[0].weight[keep0])
    assert torch.equal(model.fc[0].bias, original.fc[0].bias[keep0])
    assert torch.equal(model.fc[1].weight, original.fc[1].weight[keep1][:, keep0])
    assert torch.equal(model.output.weight, original.output.weight[:, keep1])
    assert torch.equal(model.output.bias, original.output.bias)


def test_a_pruned_state_dict_loads_into_a_model_built_at_the_kept_widths():
    model, spec, x = models()[0]
    means = mean_activations(model, spec, x)
    pruned, _, kept = remove_neurons(copy.deepcopy(model), spec, REMOVE, means)
    fresh = seeded(Mlp(5, [len(kept[0]), len(kept[1])], 3), seed=9)
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), pruned(x))


def test_folding_creates_a_bias_when_the_consumer_has_none():
    model, spec, x = models()[0]
    model.output = torch.nn.Linear(5, 3, bias=False)
    means = mean_activations(model, spec, x)
    masked = copy.deepcopy(model)
    handle = mask_neurons(masked, spec, {1: torch.tensor([1])}, means)
    pruned, _, _ = remove_neurons(model, spec, {1: torch.tensor([1])}, means)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), masked(x), rtol=0, atol=1e-6)
    handle.remove()
    assert masked.output.bias is None and pruned.output.bias is not None


@pytest.mark.parametrize("remove, message", [
    ({0: torch.arange(8)}, "would empty the layer"),
    ({1: torch.tensor([5])}, "out of range"),
    ({0: torch.tensor([1, 1])}, "listed twice"),
    ({2: torch.tensor([0])}, "the model has 2"),
])
def test_bad_removals_are_refused(remove, message):
    model, spec, _ = models()[0]
    with pytest.raises(NeuroselError, match=message):
        remove_neurons(model, spec, remove)
    with pytest.raises(NeuroselError, match=message):
        mask_neurons(model, spec, remove)
    assert fc_widths(model, spec) == [8, 5]


def test_fold_mean_must_cover_the_layer():
    model, spec, _ = models()[0]
    with pytest.raises(NeuroselError, match=r"fold_mean has shape \(3,\), expected \(8,\)"):
        remove_neurons(model, spec, {0: torch.tensor([1])}, {0: torch.zeros(3)})
