"""Pruning criteria on hand-built networks whose answers are known, and the Taylor statistics
against explicit autograd computations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fc_nets import Mlp, mlp_spec, seeded
from neurosel.errors import NeuroselError
from neurosel.saliency.criteria import (CRITERIA, CriterionInputs, random_scores, score, score_all,
                                        taylor1_scores, taylor2_scores)
from neurosel.saliency.stats import StatsConfig, collect_stats
from neurosel.saliency.taylor import (TaylorConfig, TaylorStats, collect_taylor, load_taylor,
                                      save_taylor)

ZERO_OUT, STUCK_ON, DEAD, TINY_IN = 0, 1, 2, 3


def hand_built() -> Mlp:
    """ReLU MLP 3 -> 5 -> 3 -> 2 (float64). Layer-0 neuron 0 has zero outgoing weights, neuron 1
    is always on (bias +8), neuron 2 is a dead ReLU (bias -8), neuron 3 has tiny incoming
    weights; neuron 4 is ordinary."""
    model = seeded(Mlp(3, [5, 3], 2, activation="relu"), seed=3).double()
    with torch.no_grad():
        fc0 = model.fc[0]
        fc0.weight.copy_(torch.tensor([[1.0, -1.0, 0.5], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5],
                                       [1e-3, -1e-3, 1e-3], [-1.0, 0.7, 0.3]]))
        fc0.bias.copy_(torch.tensor([0.1, 8.0, -8.0, 0.2, 0.0]))
        model.fc[1].weight[:, ZERO_OUT] = 0.0
    return model


def labelled_batches(n_feat: int = 3, n_out: int = 2, seeds=(0, 1)):
    """[((x, labels, mask), mask)] with x (2, 6, n_feat), labels (2, 6), mask (2, 6)."""
    out = []
    for seed in seeds:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(2, 6, n_feat, generator=g, dtype=torch.float64)
        labels = torch.randint(0, n_out, (2, 6), generator=g)
        mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
        out.append(((x, labels, mask), mask))
    return out


def frame_loss(model, batch):
    """Cross-entropy summed over the real frames."""
    x, labels, mask = batch
    return F.cross_entropy(model(x)[mask], labels[mask], reduction="sum")


def stats_of(model, batches):
    return collect_stats(model, mlp_spec(2, on_threshold=0.0), [(b[0], m) for b, m in batches],
                         StatsConfig(hist_max=5.0))


def test_weight_and_activation_criteria_find_the_planted_neurons():
    model, spec = hand_built(), mlp_spec(2, on_threshold=0.0)
    batches = labelled_batches()
    inputs = CriterionInputs(model, spec, stats=stats_of(model, batches))
    magnitude = score("magnitude", inputs)[0]
    assert int(magnitude.argmin()) == TINY_IN
    assert magnitude[TINY_IN] == pytest.approx(3**0.5 * 1e-3)
    outgoing = score("outgoing", inputs)[0]
    assert outgoing[ZERO_OUT] == 0.0 and (outgoing[[1, 2, 3, 4]] > 0).all()
    l1 = score("outgoing", CriterionInputs(model, spec, outgoing_norm="l1"))[0]
    torch.testing.assert_close(l1, model.fc[1].weight.detach().abs().sum(0))
    entropy = score("entropy", inputs)[0]
    assert entropy[STUCK_ON] == 0.0 and entropy[DEAD] == 0.0 and entropy[ZERO_OUT] > 0.5
    apoz = score("apoz", inputs)[0]
    assert apoz[STUCK_ON] == 1.0 and apoz[DEAD] == 0.0
    mean_act = score("mean_act", inputs)[0]
    assert mean_act[DEAD] == 0.0 and mean_act[STUCK_ON] > 5.0


def test_taylor_scores_vanish_without_outgoing_weights_or_activity():
    model, spec = hand_built(), mlp_spec(2, on_threshold=0.0)
    taylor = collect_taylor(model, spec, labelled_batches(), frame_loss, TaylorConfig(hessian_probes=2))
    for scores in (taylor1_scores(taylor)[0], taylor2_scores(taylor)[0]):
        assert scores[ZERO_OUT] == 0.0 and scores[DEAD] == 0.0
        assert (scores[[STUCK_ON, 4]] > 0).all()
    assert all(p.grad is None for p in model.parameters())


def test_taylor1_matches_explicit_autograd():
    model, spec = seeded(Mlp(4, [5, 3], 3), seed=5).double(), mlp_spec(2)
    batches = labelled_batches(n_feat=4, n_out=3)
    taylor = collect_taylor(model, spec, batches, frame_loss, TaylorConfig(hessian_probes=0))
    sums = [torch.zeros(5, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)]
    count = 0
    for (x, labels, mask), _ in batches:
        a0 = torch.sigmoid(model.fc[0](x))
        a1 = torch.sigmoid(model.fc[1](a0))
        loss = F.cross_entropy(model.output(a1)[mask], labels[mask], reduction="sum")
        g0, g1 = torch.autograd.grad(loss, [a0, a1])
        sums[0] += (a0 * g0)[mask].sum(0).detach()
        sums[1] += (a1 * g1)[mask].sum(0).detach()
        count += int(mask.sum())
    assert taylor.count == count == 20
    for got, expected in zip(taylor1_scores(taylor), sums):
        torch.testing.assert_close(got, (expected / count).abs(), rtol=1e-12, atol=1e-15)
    with pytest.raises(NeuroselError, match="hessian_probes >= 1"):
        taylor2_scores(taylor)


def test_taylor2_diagonal_is_exact_when_the_hessian_is_diagonal():
    # One sigmoid layer into a diagonal output layer, loss separable per output: the Hessian of
    # the loss w.r.t. the activations is diagonal, so one Hutchinson probe gives it exactly and
    # only the finite difference is approximate: h = w_jj^2 s (1 - s), s = sigmoid(output_j).
    model = seeded(Mlp(3, [4], 4), seed=7).double()
    with torch.no_grad():
        model.output.weight.copy_(torch.diag(torch.tensor([1.5, -0.7, 2.0, 0.3], dtype=torch.float64)))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    target = torch.rand(2, 5, 4, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])

    def loss_fn(m, batch):
        return F.binary_cross_entropy_with_logits(m(batch)[mask], target[mask], reduction="sum")

    taylor = collect_taylor(model, mlp_spec(1), [(x, mask)], loss_fn,
                            TaylorConfig(hessian_probes=1, fd_step=1e-4))
    with torch.no_grad():
        a = torch.sigmoid(model.fc[0](x))[mask]
        s = torch.sigmoid(model.output(a))
        h = torch.diagonal(model.output.weight) ** 2 * s * (1 - s)
    torch.testing.assert_close(taylor.sum_a2h[0], (a**2 * h).sum(0), rtol=1e-7, atol=1e-10)


def exact_diagonal_hessians(model, x, labels):
    """Per FC layer the exact d2E/da2 (N, D) of a two-layer sigmoid MLP, by autograd."""
    def from_a1(a1):
        return F.cross_entropy(model.output(a1), labels, reduction="sum")

    def from_a0(a0):
        return from_a1(torch.sigmoid(model.fc[1](a0)))

    a0 = torch.sigmoid(model.fc[0](x)).detach()
    a1 = torch.sigmoid(model.fc[1](a0)).detach()
    out = []
    for f, a in ((from_a0, a0), (from_a1, a1)):
        n = a.numel()
        hess = torch.autograd.functional.hessian(f, a).reshape(n, n)
        out.append((a, torch.diagonal(hess).reshape(a.shape)))
    return out


def test_taylor2_diagonal_matches_exact_second_derivative_on_average():
    # Frames of an MLP with a per-frame summed loss are independent, so R copies of the same 8
    # frames in one batch give R independent Hutchinson probes of the same diagonal.
    model = seeded(Mlp(3, [4, 3], 3), seed=11).double()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (8,), generator=g)
    copies = 4000

    def loss_fn(m, batch):
        return F.cross_entropy(m(batch).reshape(-1, 3), labels.repeat(copies), reduction="sum")

    taylor = collect_taylor(model, mlp_spec(2), [(x.repeat(copies, 1), None)], loss_fn,
                            TaylorConfig(hessian_probes=1, fd_step=1e-4, seed=3))
    for layer, (a, h) in enumerate(exact_diagonal_hessians(model, x, labels)):
        expected = (a**2 * h).sum(0)
        got = taylor.sum_a2h[layer] / copies
        # Hutchinson noise over 4000 probes: about 1.5% of the off-diagonal Hessian mass
        torch.testing.assert_close(got, expected, rtol=0.05, atol=0.02 * expected.abs().max())
        scores = taylor2_scores(taylor)[layer]
        torch.testing.assert_close(scores, ((0.5 * taylor.sum_a2h[layer] - taylor.sum_ag[layer])
                                            / taylor.count).abs())


def test_taylor_statistics_save_and_load(tmp_path):
    model, spec = hand_built(), mlp_spec(2, on_threshold=0.0)
    whole = collect_taylor(model, spec, labelled_batches(seeds=(0, 1, 2)), frame_loss, TaylorConfig(hessian_probes=0))
    save_taylor(whole, tmp_path / "a.pt")
    loaded = load_taylor(tmp_path / "a.pt")
    assert loaded.count == whole.count and loaded.has_hessian is False
    assert all(torch.equal(a, b) for a, b in zip(loaded.sum_ag, whole.sum_ag))
    (tmp_path / "b.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(NeuroselError, match="b.pt"):
        load_taylor(tmp_path / "b.pt")


def test_wanda_and_flap_scores_against_direct_computation():
    model, spec = hand_built(), mlp_spec(2, on_threshold=0.0)
    batches = labelled_batches(seeds=(0, 1, 2))
    stats = collect_stats(model, spec, [(b[0], m) for b, m in batches], StatsConfig(hist_max=5.0, input_norms=True))
    x = torch.cat([b[0][m] for b, m in batches])  # (frames, 3), real frames only
    h = torch.relu(model.fc[0](x))
    wanda = score("wanda", CriterionInputs(model, spec, stats=stats))
    expected0 = (model.fc[0].weight.abs() * x.square().mean(0).sqrt()).sum(1)
    expected1 = (model.fc[1].weight.abs() * h.square().mean(0).sqrt()).sum(1)
    torch.testing.assert_close(wanda[0], expected0.detach())
    torch.testing.assert_close(wanda[1], expected1.detach())
    flap = score("flap", CriterionInputs(model, spec, stats=stats))
    torch.testing.assert_close(flap[0], (h.var(0, unbiased=False) * model.fc[1].weight.square().sum(0)).detach())
    assert flap[0][ZERO_OUT] == 0 and flap[0][DEAD] == 0  # no outgoing weights; never varies
    with pytest.raises(NeuroselError, match="input_norms=True"):
        score("wanda", CriterionInputs(model, spec, stats=stats_of(model, batches)))


def test_random_scores_are_seeded():
    assert all(torch.equal(a, b) for a, b in zip(random_scores([4, 3], 5), random_scores([4, 3], 5)))
    assert not torch.equal(random_scores([4, 3], 5)[0], random_scores([4, 3], 6)[0])
    assert [t.shape for t in random_scores([4, 3], 0)] == [(4,), (3,)]


def test_registry_scores_every_criterion_and_names_missing_inputs():
    assert list(CRITERIA) == ["magnitude", "outgoing", "taylor1", "taylor2", "mean_act", "apoz",
                              "entropy", "random", "wanda", "flap"]
    model, spec = hand_built(), mlp_spec(2, on_threshold=0.0)
    batches = labelled_batches()
    stats = collect_stats(model, spec, [(b[0], m) for b, m in batches], StatsConfig(hist_max=5.0, input_norms=True))
    inputs = CriterionInputs(model, spec, stats=stats, taylor=collect_taylor(model, spec, batches, frame_loss), seed=2)
    scores = score_all(inputs)
    assert list(scores) == list(CRITERIA)
    for name, per_layer in scores.items():
        assert [t.shape for t in per_layer] == [(5,), (3,)], name
        assert all(t.dtype == torch.float64 for t in per_layer), name
    with pytest.raises(NeuroselError, match="criterion mean_act needs neuron statistics"):
        score("mean_act", CriterionInputs(model, spec))
    with pytest.raises(NeuroselError, match="criterion taylor1 needs Taylor statistics"):
        score("taylor1", CriterionInputs(model, spec))
    with pytest.raises(NeuroselError, match="unknown pruning criterion 'l0'"):
        score("l0", inputs)
