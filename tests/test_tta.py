"""Test-time adaptation: the SUTA objective, episodic and continual modes, neuron-selective TTA
with frozen entries bit-identical, running on-rates, and the seeded benchmark stream."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from neurosel.adapt import Selection, apply_selection, merge_selection
from neurosel.adapt.tta import TtaAdapter, TtaConfig, frame_entropy, interleave, mcc, suta_objective
from neurosel.errors import NeuroselError
from neurosel.fc import find_fc_layers
from neurosel.saliency.running import RunningOnRate

V = 6


def frame_model(seed: int = 0) -> nn.Sequential:
    """(B, T, 5) -> (B, T, V) log-probs through two ReLU FC layers."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, V),
                         nn.LogSoftmax(-1))


def utterances(n: int, seed: int = 1, scale: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        t = int(torch.randint(8, 15, (1,), generator=g))
        x = torch.zeros(1, 16, 5)
        x[:, :t] = torch.randn(1, t, 5, generator=g) * scale
        out.append((x, torch.arange(16)[None] < t))
    return out


def forward(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    x, mask = batch
    return model(x), mask


def test_entropy_gradient_of_one_frame_is_the_analytic_one():
    z = torch.tensor([[[0.3, -1.2, 2.0, 0.1, 0.0, -0.4]]], requires_grad=True)
    cfg = TtaConfig(em_coef=1.0, temperature=2.0, non_blank=False)
    loss = suta_objective(z, torch.ones(1, 1, dtype=torch.bool), cfg)
    loss.backward()
    p = (z.detach() / 2.0).softmax(-1)
    h = -(p * p.log()).sum()
    torch.testing.assert_close(loss.detach(), h)
    torch.testing.assert_close(z.grad, -(p * (p.log() + h)) / 2.0)  # dH/dz = -p (log p + H) / T


def test_minimum_class_confusion_on_known_posteriors():
    one_hot = torch.eye(V) * 50.0  # every class on a frame of its own, near one-hot
    assert float(mcc(one_hot)) < 1e-12
    assert float(mcc(torch.zeros(7, V))) == pytest.approx((V - 1) / V)
    assert float(frame_entropy(torch.zeros(3, V))[0]) == pytest.approx(math.log(V))


def test_the_objective_ignores_padded_frames_and_blank_frames():
    scores = torch.randn(2, 5, V)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])
    cfg = TtaConfig()
    base = suta_objective(scores, mask, cfg)
    changed = scores.clone()
    changed[1, 3:] = torch.randn(2, V) * 10  # padding
    torch.testing.assert_close(suta_objective(changed, mask, cfg), base)
    with pytest.raises(NeuroselError, match="no real frame"):
        suta_objective(scores, torch.zeros(2, 5, dtype=torch.bool), cfg)


def test_episodic_tta_lowers_the_objective_and_restores_every_parameter_bit_for_bit():
    model = frame_model()
    source = copy.deepcopy(model.state_dict())
    params = apply_selection(model, find_fc_layers(model, torch.zeros(1, 2, 5)), Selection(prefixes=("",)))
    tta = TtaAdapter(model, params, forward, TtaConfig(steps=10, lr=1e-2))
    for batch in utterances(3):
        with torch.no_grad():
            before = model(batch[0])
        adapted = tta.adapt(batch)
        losses = tta.history[-1].losses
        assert len(losses) == 11 and losses[-1] < losses[0]
        assert not torch.allclose(adapted, before)
        assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())


def test_selective_tta_leaves_every_other_entry_bit_identical():
    model = frame_model()
    spec = find_fc_layers(model, torch.zeros(1, 2, 5))
    before = copy.deepcopy(model.state_dict())
    with RunningOnRate(model, spec) as running, torch.no_grad():
        model(torch.randn(50, 5, generator=torch.Generator().manual_seed(5)))
    neurons = {layer: rate.argsort(descending=True)[:2] for layer, rate in enumerate(running.on_rate())}
    params = apply_selection(model, spec, Selection(neurons=neurons))
    tta = TtaAdapter(model, params, forward, TtaConfig(steps=5, lr=1e-2, mode="continual"))
    for batch in utterances(4):
        tta.adapt(batch)
    merge_selection(model)
    after = model.state_dict()
    for name, layer in (("0", 0), ("2", 1)):
        moved = torch.zeros(after[f"{name}.weight"].shape[0], dtype=torch.bool)
        moved[neurons[layer]] = True
        assert torch.equal(after[f"{name}.weight"][~moved], before[f"{name}.weight"][~moved])
        assert torch.equal(after[f"{name}.bias"][~moved], before[f"{name}.bias"][~moved])
        assert not torch.equal(after[f"{name}.weight"][moved], before[f"{name}.weight"][moved])
    assert torch.equal(after["4.weight"], before["4.weight"]) and torch.equal(after["4.bias"], before["4.bias"])


def test_continual_slow_fast_updates_the_slow_state_once_per_full_buffer():
    model = frame_model()
    params = [p.requires_grad_(True) for p in model.parameters()]
    source = [p.detach().clone() for p in params]
    tta = TtaAdapter(model, params, forward,
                          TtaConfig(steps=3, lr=1e-2, mode="continual", slow_fast=True, buffer_size=3))
    batches = utterances(5)
    tta.adapt(batches[0])
    tta.adapt(batches[1])  # buffer not full: back at the source (the slow state) after each
    assert all(torch.equal(p, s) for p, s in zip(params, source))
    tta.adapt(batches[2])  # third utterance fills the buffer: one slow step
    slow = [p.detach().clone() for p in params]
    assert not all(torch.equal(p, s) for p, s in zip(slow, source))
    tta.adapt(batches[3])
    assert all(torch.equal(p, s) for p, s in zip(params, slow))
    tta.reset()
    assert all(torch.equal(p, s) for p, s in zip(params, source))


def test_continual_drift_resets_to_the_source_when_the_loss_jumps():
    model = frame_model()
    params = [p.requires_grad_(True) for p in model.parameters()]
    source = [p.detach().clone() for p in params]
    tta = TtaAdapter(model, params, forward,
                          TtaConfig(steps=2, lr=1e-3, mode="continual", drift_sigmas=3.0, drift_warmup=6))
    for batch in utterances(6, scale=0.01):  # near-silent frames: a steady objective
        tta.adapt(batch)
    assert not any(step.reset for step in tta.history)
    moved = [p.detach().clone() for p in params]
    assert not all(torch.equal(p, s) for p, s in zip(moved, source))
    tta.adapt(utterances(1, seed=9, scale=30.0)[0])  # saturating input: the objective jumps
    assert tta.history[-1].reset
    fresh = frame_model()  # adapted from the source, not from where the quiet utterances had led
    again = TtaAdapter(fresh, [p.requires_grad_(True) for p in fresh.parameters()], forward,
                            TtaConfig(steps=2, lr=1e-3, mode="continual"))
    again.adapt(utterances(1, seed=9, scale=30.0)[0])
    assert all(torch.equal(p, q) for p, q in zip(params, again.trainable))


def test_running_on_rate_and_its_extremes():
    model = frame_model()
    spec = find_fc_layers(model, torch.zeros(1, 2, 5))
    batches = utterances(4)
    with RunningOnRate(model, spec) as running, torch.no_grad():
        for x, mask in batches:
            running.mask = mask
            model(x)
    x = torch.cat([b[0][b[1]] for b in batches])
    expected = (torch.relu(model[0](x)) > 0).double().mean(0)
    torch.testing.assert_close(running.on_rate()[0], expected)
    extremes = running.extremes(10.0)
    assert [len(v) for v in extremes.values()] == [2, 2]  # round(10% of 12) and of 10, top and bottom
    with pytest.raises(NeuroselError, match="no frames"):
        RunningOnRate(model, spec).on_rate()


def test_the_stream_is_seeded_complete_and_switches_sets():
    sets = {"ood_noise": [f"n{i}" for i in range(45)], "ood_reverb": [f"r{i}" for i in range(30)],
            "ood_telephone": [f"t{i}" for i in range(25)]}
    stream = interleave(sets, 20, seed=3)
    assert stream == interleave(sets, 20, seed=3)
    assert stream != interleave(sets, 20, seed=4)
    assert sorted(item for _, item in stream) == sorted(i for ids in sets.values() for i in ids)
    for name, ids in sets.items():
        assert [item for s, item in stream if s == name] == ids  # each set keeps its order
    runs = [stream[0][0]]
    for name, _ in stream[1:]:
        if name != runs[-1]:
            runs.append(name)
    assert len(runs) >= 5  # segments of 20 change set


def test_a_continual_run_resumed_from_its_state_gives_the_same_scores(tmp_path):
    cfg = TtaConfig(steps=3, lr=1e-2, mode="continual", slow_fast=True, buffer_size=2, drift_sigmas=3.0,
                    drift_warmup=2)
    batches = utterances(6)

    def adapter() -> tuple[nn.Module, TtaAdapter]:
        model = frame_model()
        return model, TtaAdapter(model, [p.requires_grad_(True) for p in model.parameters()], forward, cfg)

    _, straight = adapter()
    expected = [straight.adapt(b) for b in batches]
    _, first = adapter()
    for b in batches[:3]:
        first.adapt(b)
    torch.save(first.state_dict(), tmp_path / "state.pt")
    _, resumed = adapter()
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    for b, want in zip(batches[3:], expected[3:]):
        assert torch.equal(resumed.adapt(b), want)
