"""Shift signals (neurosel.shift): each moves monotonically with a known shift, per-utterance values
do not depend on padding or on the activation layout, and bad input gets a clear error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from fc_nets import Mlp, mlp_spec, seeded
from neurosel.errors import NeuroselError
from neurosel.fc import FcSpec
from neurosel.model import ModelConfig, build_model
from neurosel.saliency.stats import collect_stats
from neurosel.shift import (NEURON_SIGNALS, OUTPUT_SIGNALS, NeuronSignalConfig, ShiftCollector, ShiftConfig,
                            ShiftSignals)
from neurosel.shift.neuron_signals import binomial_tails, window_entropy

N_IN = 6
VOCAB = 5
THRESHOLD = {"relu": 0.0, "sigmoid": 0.5}


def mlp(activation: str, widths: tuple[int, ...] = (24, 16)) -> tuple[nn.Module, FcSpec]:
    model = seeded(Mlp(N_IN, list(widths), VOCAB, activation), seed=3).double().eval()
    return model, mlp_spec(len(widths), THRESHOLD[activation])


def frames(seed: int, n: int, offset: float = 0.0) -> Tensor:
    """(n, N_IN) in-domain frames (standard normal), moved by ``offset`` along a fixed direction:
    the neurons' pre-activations move by offset * (W u)_j, so on-rates go to 0 or 1 (saturate)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(N_IN, generator=torch.Generator().manual_seed(99), dtype=torch.float64)
    return torch.randn(n, N_IN, generator=g, dtype=torch.float64) + offset * direction / direction.norm()


def reference(model: nn.Module, spec: FcSpec, n: int = 20000):
    return collect_stats(model, spec, [(frames(0, n), None)])


def run_set(collector: ShiftCollector, model: nn.Module, x: Tensor, lengths: list[int],
            outputs: bool = True, prefix: str = "u") -> None:
    """One padded batch (B, T, N_IN) of utterances with ``lengths`` through ``model``."""
    mask = torch.arange(x.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    log_probs = model(x).log_softmax(-1)
    collector.end_batch([f"{prefix}{i}" for i in range(len(lengths))], log_probs if outputs else None,
                        frame_mask=mask)


def set_values(model, spec, ref, x: Tensor, lengths: list[int], config: ShiftConfig = ShiftConfig(blank=0)):
    with ShiftCollector(model, spec, ref, config) as collector, torch.inference_mode():
        run_set(collector, model, x, lengths)
    return collector.result()


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_neuron_signals_follow_a_saturating_shift(activation):
    """Every neuron signal moves monotonically with the offset, pooled and per layer. Window
    entropy only once the offset saturates neurons (from 1 on): a small offset moves as many
    near-saturated neurons away from saturation as towards it."""
    model, spec = mlp(activation)
    ref = reference(model, spec)
    offsets = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    values = [set_values(model, spec, ref, frames(1, 30 * 40, d).view(30, 40, N_IN), [40] * 30).set_values()
              for d in offsets]

    def series(name: str) -> list[float]:
        return [v[name] for v in values]

    for name in ("out_of_range_share", "on_rate_change", "on_off_js"):
        for suffix in ("", ".layer0", ".layer1"):
            assert strictly_monotone(series(name + suffix), rising=True), (name + suffix, series(name + suffix))
    assert strictly_monotone(series("saturated_share"), rising=True), series("saturated_share")
    for layer in (0, 1):  # no neuron of a layer may saturate at a small offset: ties allowed
        layer_series = series(f"saturated_share.layer{layer}")
        assert all(a <= b for a, b in zip(layer_series, layer_series[1:])) and layer_series[-1] > 0, layer_series
    assert strictly_monotone(series("window_entropy")[2:], rising=False), series("window_entropy")
    assert values[0]["out_of_range_share"] < 0.03  # in-domain: about alpha = 0.01
    assert values[0]["saturated_share"] == 0.0


def strictly_monotone(series: list[float], rising: bool) -> bool:
    return all((a < b) if rising else (a > b) for a, b in zip(series, series[1:]))


def test_out_of_range_share_does_not_penalise_short_utterances():
    model, spec = mlp("sigmoid")
    ref = reference(model, spec)
    config = ShiftConfig(NeuronSignalConfig(alpha=0.05), blank=0)
    share, change = {}, {}
    for n in (3, 10, 50, 300):
        signals = set_values(model, spec, ref, frames(n, 40 * n).view(40, n, N_IN), [n] * 40, config)
        share[n] = signals.set_values()["out_of_range_share"]
        change[n] = signals.set_values()["on_rate_change"]
    assert all(s <= 0.05 + 0.015 for s in share.values()), share  # iid in-domain frames: at most alpha
    assert change[3] > 2 * change[300]  # the raw on-rate change does grow on short utterances


def test_reference_frames_against_themselves_score_zero():
    model, spec = mlp("relu")
    ref = reference(model, spec, n=500)
    signals = set_values(model, spec, ref, frames(0, 500)[None], [500])
    for name in ("out_of_range_share", "saturated_share", "on_rate_change", "on_off_js"):
        assert signals.values[name][0] == pytest.approx(0.0, abs=1e-12), name


@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_padded_batch_equals_each_utterance_alone(activation):
    model, spec = mlp(activation)
    ref = reference(model, spec)
    lengths = [7, 30, 1, 18]
    x = frames(5, 4 * 30).view(4, 30, N_IN).clone()
    mask = torch.arange(30)[None, :] < torch.tensor(lengths)[:, None]
    x[~mask] = 50.0  # padding that would saturate every neuron if it were counted
    batched = set_values(model, spec, ref, x, lengths)
    with ShiftCollector(model, spec, ref, ShiftConfig(blank=0)) as collector, torch.inference_mode():
        for i, n in enumerate(lengths):
            run_set(collector, model, x[i:i + 1, :n], [n], prefix=f"u{i}_")
    alone = collector.result()
    assert batched.names == alone.names
    assert list(batched.frames) == lengths
    for name in batched.names:
        np.testing.assert_allclose(batched.values[name], alone.values[name], rtol=0, atol=1e-12, err_msg=name)


class PackedMlp(nn.Module):
    """Like the project's CNN: runs the FC stack on the real frames only, (N, F) -> (N, D), and
    returns padded (B, T, V) log-posteriors."""

    def __init__(self, mlp_module: nn.Module):
        super().__init__()
        self.mlp = mlp_module

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        mask = torch.arange(x.shape[1])[None, :] < lengths[:, None]
        out = x.new_zeros(*x.shape[:2], VOCAB)
        out[mask] = self.mlp(x[mask]).log_softmax(-1)
        return out


def test_packed_real_frames_give_the_padded_values():
    model, spec = mlp("sigmoid")
    ref = reference(model, spec)
    lengths = [12, 3, 25]
    x = frames(8, 3 * 25).view(3, 25, N_IN)
    padded = set_values(model, spec, ref, x, lengths)
    packed_model = PackedMlp(model)
    packed_spec = FcSpec(*([f"mlp.{n}" for n in names] for names in (spec.linears, spec.activations, spec.consumers)),
                         spec.on_threshold)
    lens = torch.tensor(lengths)
    mask = torch.arange(25)[None, :] < lens[:, None]
    with ShiftCollector(packed_model, packed_spec, ref, ShiftConfig(blank=0)) as collector, torch.inference_mode():
        collector.end_batch(["u0", "u1", "u2"], packed_model(x, lens), lengths=lens)
        collector.end_batch(["v0", "v1", "v2"], packed_model(x, lens)[mask], frame_mask=mask)  # (N, V) outputs
    packed = collector.result()
    for name in padded.names:
        np.testing.assert_allclose(packed.values[name][:3], padded.values[name], atol=1e-12, err_msg=name)
        np.testing.assert_allclose(packed.values[name][3:], padded.values[name], atol=1e-12, err_msg=name)


class LogSoftmaxHead(nn.Module):
    """(..., F) -> ReLU FC layer without biases -> output Linear -> log-softmax over VOCAB units;
    the output bias is zero except ``blank_bias`` on unit 0. Scaling the input by c > 0 scales the
    logits by c (ReLU is positively homogeneous): a temperature."""

    def __init__(self, blank_bias: float):
        super().__init__()
        torch.manual_seed(4)
        self.fc = nn.Linear(N_IN, 16, bias=False)
        self.act = nn.ReLU()
        self.output = nn.Linear(16, VOCAB)
        with torch.no_grad():
            self.fc.weight.mul_(3.0)
            self.output.weight.mul_(3.0)
            self.output.bias.zero_()
            self.output.bias[0] = blank_bias

    def forward(self, x: Tensor) -> Tensor:
        return self.output(self.act(self.fc(x))).log_softmax(-1)


def output_values(blank_bias: float, gains: list[float]) -> list[dict[str, float]]:
    model = LogSoftmaxHead(blank_bias).double().eval()
    spec = FcSpec(["fc"], ["act"], ["output"], 0.0)
    ref = collect_stats(model, spec, [(frames(0, 2000), None)])
    out = []
    for gain in gains:
        with ShiftCollector(model, spec, ref, ShiftConfig(blank=0)) as collector, torch.inference_mode():
            x = gain * frames(1, 20 * 30).view(20, 30, N_IN)
            collector.end_batch([f"u{i}" for i in range(20)], model(x), lengths=torch.full((20,), 30))
        out.append(collector.result().set_values())
    return out


def test_output_signals_follow_a_loss_of_confidence():
    values = output_values(0.0, [1.0, 0.5, 0.25, 0.1])  # attenuated input: flatter posteriors
    for name, rises in (("max_posterior", False), ("top_gap", False), ("frame_entropy", True)):
        series = [v[name] for v in values]
        assert strictly_monotone(series, rising=rises), (name, series)


def test_blank_share_follows_a_loss_of_signal():
    series = [v["blank_share"] for v in output_values(1.0, [1.0, 0.5, 0.25, 0.1, 0.01])]
    assert strictly_monotone(series, rising=True), series
    assert series[-1] == pytest.approx(1.0)


def test_output_signals_by_hand():
    model = LogSoftmaxHead(0.0).double().eval()
    spec = FcSpec(["fc"], ["act"], ["output"], 0.0)
    ref = collect_stats(model, spec, [(frames(0, 100), None)])
    posteriors = torch.tensor([[[0.7, 0.2, 0.1, 0.0, 0.0], [0.1, 0.5, 0.4, 0.0, 0.0]]], dtype=torch.float64)
    with ShiftCollector(model, spec, ref, ShiftConfig(blank=0)) as collector:
        model(frames(1, 2)[None])
        collector.end_batch(["u"], posteriors.log(), lengths=torch.tensor([2]))
    got = collector.result().set_values()

    def h(ps: list[float]) -> float:
        return -sum(p * math.log2(p) for p in ps)

    assert got["max_posterior"] == pytest.approx(0.6)
    assert got["top_gap"] == pytest.approx((0.5 + 0.1) / 2)
    assert got["blank_share"] == pytest.approx(0.5)
    assert got["frame_entropy"] == pytest.approx((h([0.7, 0.2, 0.1]) + h([0.1, 0.5, 0.4])) / 2)


def test_signal_names_and_extra_values():
    model, spec = mlp("relu")
    ref = reference(model, spec, n=300)
    with ShiftCollector(model, spec, ref) as collector, torch.inference_mode():
        run_set(collector, model, frames(2, 20).view(2, 10, N_IN), [10, 4], outputs=False)
    signals = collector.result()
    assert signals.names == NEURON_SIGNALS + tuple(f"{n}.layer{l}" for l in (0, 1) for n in NEURON_SIGNALS)
    both = set_values(model, spec, ref, frames(2, 20).view(2, 10, N_IN), [10, 4])
    assert both.names[-len(OUTPUT_SIGNALS):] == OUTPUT_SIGNALS
    extra = signals.with_values({"decoder_cost": {"u0": 2.0, "u1": 9.0}})
    assert extra.set_values()["decoder_cost"] == pytest.approx((10 * 2.0 + 4 * 9.0) / 14)  # frame-weighted
    with pytest.raises(NeuroselError, match="'decoder_cost' has no value for utterance 'u1'"):
        signals.with_values({"decoder_cost": {"u0": 2.0}})
    with pytest.raises(NeuroselError, match="already a signal"):
        signals.with_values({"on_off_js": {"u0": 1.0, "u1": 1.0}})
    with pytest.raises(NeuroselError, match="not finite"):
        signals.with_values({"cost": {"u0": 1.0, "u1": math.nan}})
    with ShiftCollector(model, spec, ref) as collector, torch.inference_mode():
        run_set(collector, model, frames(3, 5)[None], [5], outputs=False, prefix="w")
    merged = ShiftSignals.concat([signals, collector.result()])
    assert merged.utt_ids == ("u0", "u1", "w0") and list(merged.frames) == [10, 4, 5]
    with pytest.raises(NeuroselError, match="'u0' appears twice"):
        ShiftSignals.concat([signals, signals])
    with pytest.raises(NeuroselError, match="parts have signals"):
        ShiftSignals.concat([signals, both])


def test_pooled_value_weights_layers_by_width():
    model, spec = mlp("sigmoid", widths=(24, 8))
    ref = reference(model, spec, n=2000)
    signals = set_values(model, spec, ref, frames(1, 40, 2.0)[None], [40])
    for name in NEURON_SIGNALS:
        pooled = (24 * signals.values[f"{name}.layer0"] + 8 * signals.values[f"{name}.layer1"]) / 32
        np.testing.assert_allclose(signals.values[name], pooled, rtol=1e-12, err_msg=name)


def test_binomial_tails_and_window_entropy_by_hand():
    p = torch.tensor([0.3, 0.3, 0.9], dtype=torch.float64)
    k = torch.tensor([0, 4, 5])
    below, above = binomial_tails(k, 5, p)

    def pmf(j: int, q: float) -> float:
        return math.comb(5, j) * q**j * (1 - q) ** (5 - j)

    for i in range(3):
        assert below[i] == pytest.approx(sum(pmf(j, float(p[i])) for j in range(int(k[i]) + 1)))
        assert above[i] == pytest.approx(sum(pmf(j, float(p[i])) for j in range(int(k[i]), 6)))
    on = torch.tensor([[1, 1, 0], [0, 1, 0], [1, 1, 0], [0, 1, 0]], dtype=torch.bool)
    np.testing.assert_allclose(window_entropy(on, 2), [1.0, 0.0, 0.0])  # alternating: every window half on
    np.testing.assert_allclose(window_entropy(on, 10), [1.0, 0.0, 0.0])  # shorter than a window: one window
    np.testing.assert_allclose(window_entropy(on, 1), [0.0, 0.0, 0.0])
    assert float(window_entropy(torch.tensor([[1], [1], [1], [0]], dtype=torch.bool), 4)) == pytest.approx(
        -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))


# --- errors -------------------------------------------------------------------------------------

@pytest.fixture
def setup():
    model, spec = mlp("relu")
    return model, spec, reference(model, spec, n=300)


def test_reference_of_another_model_is_refused(setup):
    model, spec, _ = setup
    other, other_spec = mlp("relu", widths=(24, 8))
    with pytest.raises(NeuroselError, match=r"FC widths \[24, 8\], the model has \[24, 16\]"):
        ShiftCollector(model, spec, reference(other, other_spec, n=100))
    sigmoid_ref = reference(*mlp("sigmoid"), n=100)
    with pytest.raises(NeuroselError, match="on-threshold 0.5"):
        ShiftCollector(model, spec, sigmoid_ref)


def test_reference_without_frames_is_refused(setup):
    model, spec, ref = setup
    ref.layers[1].count = 0
    with pytest.raises(NeuroselError, match="FC layer 1 has no frames"):
        ShiftCollector(model, spec, ref)


def test_empty_set_and_empty_utterance_are_refused(setup):
    model, spec, ref = setup
    with ShiftCollector(model, spec, ref) as collector:
        pass
    with pytest.raises(NeuroselError, match="no utterances"):
        collector.result()
    with ShiftCollector(model, spec, ref) as collector, torch.inference_mode():
        with pytest.raises(NeuroselError, match="utterance 'u1': no frames"):
            run_set(collector, model, frames(1, 20).view(2, 10, N_IN), [10, 0], outputs=False)


def test_output_errors(setup):
    model, spec, ref = setup
    x = frames(1, 20).view(2, 10, N_IN)
    with ShiftCollector(model, spec, ref) as collector, torch.inference_mode():
        with pytest.raises(NeuroselError, match="blank index"):
            run_set(collector, model, x, [10, 10])
    with ShiftCollector(model, spec, ref, ShiftConfig(blank=7)) as collector, torch.inference_mode():
        with pytest.raises(NeuroselError, match="blank index 7 is not one of the 5 output units"):
            run_set(collector, model, x, [10, 10])
    with ShiftCollector(model, spec, ref, ShiftConfig(blank=0)) as collector, torch.inference_mode():
        with pytest.raises(NeuroselError, match="not per-frame log-posteriors"):
            collector.end_batch(["a", "b"], model(x), lengths=torch.tensor([10, 10]))  # logits
        run_set(collector, model, x, [10, 10])
        with pytest.raises(NeuroselError, match="log_probs for every batch or for none"):
            run_set(collector, model, x, [10, 10], outputs=False, prefix="v")


def test_batch_protocol_errors(setup):
    model, spec, ref = setup
    x = frames(1, 30).view(3, 10, N_IN)
    lengths = torch.tensor([10, 10, 10])
    with ShiftCollector(model, spec, ref) as collector, torch.inference_mode():
        with pytest.raises(NeuroselError, match="has not run since the last batch"):
            collector.end_batch(["a", "b", "c"], lengths=lengths)
        model(x)
        with pytest.raises(NeuroselError, match="ran twice without end_batch"):
            model(x)
        collector.end_batch(["a", "b", "c"], lengths=lengths)
        for ids, match in ((["a", "b"], "2 utterance ids for a batch of 3"),
                           (["x", "y", "x"], "'x' appears twice"),
                           (["a", "y", "z"], "'a' appears twice")):
            model(x)
            with pytest.raises(NeuroselError, match=match):
                collector.end_batch(ids, lengths=lengths)
        model(x)
        with pytest.raises(NeuroselError, match="exactly one"):
            collector.end_batch(["d", "e", "f"])
        model(x)
        with pytest.raises(NeuroselError, match="exceed the 10 frames"):
            collector.end_batch(["d", "e", "f"], lengths=torch.tensor([10, 11, 3]))
        model(x)
        with pytest.raises(NeuroselError, match=r"frame mask \(3, 9\) does not match"):
            collector.end_batch(["d", "e", "f"], frame_mask=torch.ones(3, 9, dtype=torch.bool))
        model(x[:, :4].reshape(12, N_IN))
        with pytest.raises(NeuroselError, match=r"expected \(B=3, T, D\) padded or \(N=9, D\)"):
            collector.end_batch(["d", "e", "f"], lengths=torch.tensor([3, 3, 3]))
        model(x)
    with pytest.raises(NeuroselError, match="ran after the last end_batch"):
        collector.result()


def test_a_layer_that_did_not_run_is_named(setup):
    model, spec, ref = setup
    with ShiftCollector(model, spec, ref) as collector, torch.inference_mode():
        model.fc[1](model.act[0](model.fc[0](frames(1, 4))))  # layer 0 reaches its consumer, layer 1 never
        with pytest.raises(NeuroselError, match="FC layer 1: consumer 'output' did not run"):
            collector.end_batch(["a"], lengths=torch.tensor([4]))


def test_on_the_project_cnn_padded_batch_equals_each_utterance_alone():
    """The caller's usage in the recipe: the CNN runs its FC stack on the real frames only,
    (N, D), subsamples time, and gives its output lengths."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_features=8, vocab_size=7, conv_channels=[2, 2], fc_dims=[16, 12],
                                    dropout=0.0)).double().eval()
    spec = model.fc_spec()
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 40, 8, generator=g, dtype=torch.float64)
    feat_lens = torch.tensor([40, 13, 27])
    ref = collect_stats(model, spec, [((feats, feat_lens), None)], forward=lambda m, x: m(*x))
    with ShiftCollector(model, spec, ref, ShiftConfig(blank=0)) as collector, torch.inference_mode():
        log_probs, out_lens = model(feats, feat_lens)
        collector.end_batch(["a", "b", "c"], log_probs, lengths=out_lens)
        for uid, i in (("a1", 0), ("b1", 1), ("c1", 2)):
            n = int(feat_lens[i])
            log_probs, out_lens = model(feats[i:i + 1, :n], feat_lens[i:i + 1])
            collector.end_batch([uid], log_probs, lengths=out_lens)
    signals = collector.result()
    assert list(signals.frames[:3]) == [10, 4, 7] and list(signals.frames[3:]) == [10, 4, 7]
    for name in signals.names:
        np.testing.assert_allclose(signals.values[name][:3], signals.values[name][3:], atol=1e-12, err_msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_model_on_the_gpu_gives_the_cpu_values():
    model, spec = mlp("sigmoid")
    ref = reference(model, spec, n=2000)
    x = frames(1, 4 * 30, 1.0).view(4, 30, N_IN)
    lengths = [30, 5, 17, 1]
    on_cpu = set_values(model, spec, ref, x, lengths)
    gpu_model = model.cuda()
    with ShiftCollector(gpu_model, spec, ref, ShiftConfig(blank=0)) as collector, torch.inference_mode():
        mask = (torch.arange(30)[None, :] < torch.tensor(lengths)[:, None]).cuda()
        collector.end_batch(["u0", "u1", "u2", "u3"], gpu_model(x.cuda()).log_softmax(-1), frame_mask=mask)
    on_gpu = collector.result()
    for name in on_cpu.names:
        np.testing.assert_allclose(on_gpu.values[name], on_cpu.values[name], atol=1e-9, err_msg=name)
