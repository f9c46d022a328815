"""Neuron statistics, hyper/hypo classification, criteria comparison, neurons.tsv and plots."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fc_nets import ConvMlp, Mlp, conv_mlp_spec, mlp_spec, seeded
from neurosel.errors import NeuroselError
from neurosel.saliency.classify import ClassifyConfig, class_counts, classify, classify_values, neurons_of
from neurosel.saliency.compare import (compare_criteria, overlap_with_classes, select_lowest,
                                       select_lowest_global, selection_jaccard)
from neurosel.saliency.stats import (StatsCollector, StatsConfig, collect_stats, load_stats, merge,
                                     save_stats)
from neurosel.recipe.neuron_table import read_neurons_tsv, write_neurons_tsv

CONFIG = StatsConfig(hist_bins=8, hist_min=0.0, hist_max=1.0)


def padded_batch(seed: int, lengths: list[int], n_feat: int = 5, garbage: float = 0.0):
    """(B, T, F) features with frames beyond each length filled with ``garbage`` noise, and the
    (B, T) mask of real frames."""
    g = torch.Generator().manual_seed(seed)
    t_max = max(lengths)
    x = torch.randn(len(lengths), t_max, n_feat, generator=g, dtype=torch.float64)
    mask = torch.arange(t_max)[None, :] < torch.tensor(lengths)[:, None]
    x[~mask] = garbage * torch.randn(int((~mask).sum()), n_feat, generator=g, dtype=torch.float64)
    return x, mask


@pytest.fixture
def mlp():
    # float64: a float32 matmul may round differently for another batch shape, and the tests
    # compare statistics across batchings to float64 rounding
    return seeded(Mlp(5, [6, 4], 3), seed=1).double()


def stored_activations(model, spec, batches):
    """Per layer the (N, D) float64 activations of the real frames, from plain hooks."""
    store = [[] for _ in spec.activations]
    current = {}

    def keeper(layer):
        def hook(module, inputs, out):
            mask = current["mask"]
            store[layer].append(out[mask] if mask is not None else out.reshape(-1, out.shape[-1]))
        return hook

    handles = [model.get_submodule(name).register_forward_hook(keeper(layer))
               for layer, name in enumerate(spec.activations)]
    with torch.no_grad():
        for x, mask in batches:
            current["mask"] = mask
            model(x)
    for h in handles:
        h.remove()
    return [torch.cat(s).double().numpy() for s in store]


def test_stats_match_numpy_on_stored_activations(mlp):
    spec = mlp_spec(2)
    batches = [padded_batch(s, [7, 3, 5], garbage=5.0) for s in range(3)]
    stats = collect_stats(mlp, spec, batches, CONFIG)
    acts = stored_activations(mlp, spec, batches)
    for layer, a in enumerate(acts):
        s = stats.layers[layer]
        assert s.count == a.shape[0] == 45
        p = (a > 0.5).mean(0)
        np.testing.assert_allclose(stats.on_rate[layer].numpy(), p, rtol=0, atol=1e-15)
        np.testing.assert_allclose(stats.mean_act[layer].numpy(), a.mean(0), rtol=1e-12)
        np.testing.assert_allclose(stats.variance[layer].numpy(), a.var(0), rtol=1e-10)
        np.testing.assert_array_equal(s.min.numpy(), a.min(0))
        np.testing.assert_array_equal(s.max.numpy(), a.max(0))
        with np.errstate(divide="ignore", invalid="ignore"):
            h = np.nan_to_num(-p * np.log2(p)) + np.nan_to_num(-(1 - p) * np.log2(1 - p))
        np.testing.assert_allclose(stats.entropy[layer].numpy(), h, atol=1e-12)
        for j in range(a.shape[1]):
            counts, _ = np.histogram(a[:, j], bins=8, range=(0.0, 1.0))
            assert s.hist[j, 1:-1].tolist() == counts.tolist()
            assert s.hist[j, 0] == 0 and s.hist[j, -1] == 0


def test_relu_histogram_has_overflow_and_min_max(mlp):
    model = seeded(ConvMlp(5, 6, [8, 4], 3), seed=2).double()
    spec = conv_mlp_spec(2)
    batches = [padded_batch(s, [9, 9]) for s in range(2)]
    config = StatsConfig(hist_bins=4, hist_min=0.0, hist_max=0.5)
    stats = collect_stats(model, spec, batches, config)
    acts = stored_activations(model, spec, batches)
    for layer, a in enumerate(acts):
        hist = stats.layers[layer].hist
        assert hist[:, -1].tolist() == (a > 0.5).sum(0).tolist()
        assert hist[:, 0].sum() == 0  # ReLU output is never below 0
        assert hist.sum(1).tolist() == [a.shape[0]] * a.shape[1]
        on = (a > 0.0).mean(0)
        np.testing.assert_allclose(stats.on_rate[layer].numpy(), on, atol=1e-15)


def test_stats_do_not_depend_on_batch_size(mlp):
    spec = mlp_spec(2)
    x, mask = padded_batch(0, [6, 2, 5, 7, 1, 4])
    by_size = []
    for size in (1, 2, 6):
        batches = [(x[i:i + size], mask[i:i + size]) for i in range(0, 6, size)]
        by_size.append(collect_stats(mlp, spec, batches, CONFIG))
    for other in by_size[1:]:
        for a, b in zip(by_size[0].layers, other.layers):
            assert a.count == b.count
            assert torch.equal(a.on_count, b.on_count) and torch.equal(a.hist, b.hist)
            assert torch.equal(a.min, b.min) and torch.equal(a.max, b.max)
            torch.testing.assert_close(a.mean, b.mean, rtol=1e-14, atol=1e-15)
            torch.testing.assert_close(a.m2, b.m2, rtol=1e-12, atol=1e-14)


def test_padded_frames_are_ignored(mlp):
    spec = mlp_spec(2)
    lengths = [4, 7, 2]
    clean = collect_stats(mlp, spec, [padded_batch(3, lengths, garbage=0.0)], CONFIG)
    noisy = collect_stats(mlp, spec, [padded_batch(3, lengths, garbage=1e3)], CONFIG)
    x, mask = padded_batch(3, lengths)
    one_by_one = collect_stats(mlp, spec, [(x[i:i + 1, :n], None) for i, n in enumerate(lengths)], CONFIG)
    for a, b, c in zip(clean.layers, noisy.layers, one_by_one.layers):
        assert a.count == b.count == c.count == sum(lengths)
        assert torch.equal(a.hist, b.hist) and torch.equal(a.hist, c.hist)
        assert torch.equal(a.mean, b.mean) and torch.equal(a.min, c.min)
        torch.testing.assert_close(a.m2, c.m2, rtol=1e-12, atol=1e-14)


def test_merge_of_two_halves_equals_one_pass(mlp, tmp_path):
    spec = mlp_spec(2)
    batches = [padded_batch(s, [5, 3, 8]) for s in range(4)]
    whole = collect_stats(mlp, spec, batches, CONFIG)
    save_stats(collect_stats(mlp, spec, batches[:1], CONFIG), tmp_path / "a.pt")
    save_stats(collect_stats(mlp, spec, batches[1:], CONFIG), tmp_path / "b.pt")
    loaded = torch.load(tmp_path / "a.pt", weights_only=True)
    assert isinstance(loaded, dict)
    merged = merge(load_stats(tmp_path / "a.pt"), load_stats(tmp_path / "b.pt"))
    for a, b in zip(whole.layers, merged.layers):
        assert a.count == b.count
        assert torch.equal(a.on_count, b.on_count) and torch.equal(a.hist, b.hist)
        assert torch.equal(a.max, b.max)
        torch.testing.assert_close(a.mean, b.mean, rtol=1e-14, atol=1e-15)
        torch.testing.assert_close(a.m2, b.m2, rtol=1e-12, atol=1e-14)
    other = collect_stats(mlp, spec, batches, StatsConfig(hist_bins=3))
    with pytest.raises(NeuroselError, match="cannot merge"):
        merge(whole, other)


def test_input_norms_merge_save_and_ignore_padding(mlp, tmp_path):
    spec, config = mlp_spec(2), StatsConfig(hist_bins=8, input_norms=True)
    batches = [padded_batch(s, [5, 3, 8], garbage=100.0) for s in range(3)]
    whole = collect_stats(mlp, spec, batches, config)
    x = torch.cat([b[m] for b, m in batches])
    torch.testing.assert_close(whole.input_sumsq[0], x.square().sum(0))
    torch.testing.assert_close(whole.input_rms[1], torch.sigmoid(mlp.fc[0](x)).square().mean(0).sqrt().detach())
    save_stats(collect_stats(mlp, spec, batches[:1], config), tmp_path / "a.pt")
    merged = merge(load_stats(tmp_path / "a.pt"), collect_stats(mlp, spec, batches[1:], config))
    assert merged.config.input_norms
    for a, b in zip(merged.input_sumsq, whole.input_sumsq):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)
    with pytest.raises(NeuroselError, match="cannot merge"):
        merge(whole, collect_stats(mlp, spec, batches, CONFIG))
    with pytest.raises(NeuroselError, match="no input norms"):
        _ = collect_stats(mlp, spec, batches, CONFIG).input_rms


def test_collector_checks_masks_and_restores_the_model(mlp):
    spec = mlp_spec(2)
    x, mask = padded_batch(0, [3, 4])
    with StatsCollector(mlp, spec, CONFIG) as collector:
        with pytest.raises(NeuroselError, match="frame mask"):
            with collector.masked(mask[:, :2]), torch.no_grad():
                mlp(x)
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in mlp.modules())
    with pytest.raises(NeuroselError, match="no frames"):
        _ = collector.result().on_rate
    mlp.train()
    collect_stats(mlp, spec, [(x, mask)], CONFIG)
    assert mlp.training
    x[0, 1, 2] = float("nan")
    with pytest.raises(NeuroselError, match=r"layer 0 \(act.0\): non-finite activation"):
        collect_stats(mlp, spec, [(x, mask)], CONFIG)


def test_load_stats_names_a_bad_file(tmp_path):
    bad = tmp_path / "stats.pt"
    torch.save({"theta": torch.tensor(0.5)}, bad)
    with pytest.raises(NeuroselError, match="stats.pt: not a neuron statistics file"):
        load_stats(bad)


def test_threshold_classification():
    on_rate = [torch.tensor([0.96, 0.95, 0.5, 0.05, 0.0]), torch.tensor([1.0, 0.2])]
    classes = classify_values(on_rate, on_rate, ClassifyConfig())
    assert classes[0].tolist() == ["hyper", "hyper", "normal", "hypo", "hypo"]
    assert classes[1].tolist() == ["hyper", "normal"]
    assert class_counts(classes) == [{"hyper": 2, "hypo": 2, "normal": 1},
                                     {"hyper": 1, "hypo": 0, "normal": 1}]
    assert [t.tolist() for t in neurons_of(classes).values()] == [[0, 1, 3, 4], [0]]
    assert [t.tolist() for t in neurons_of(classes, ("hypo",)).values()] == [[3, 4], []]


def test_percentile_classification_per_layer_and_global():
    on_rate = [torch.linspace(0.1, 0.9, 10), torch.linspace(0.45, 0.55, 10)]
    mean_act = [torch.arange(10.0).flip(0), torch.arange(10.0)]
    per_layer = classify_values(on_rate, mean_act, ClassifyConfig(mode="percentile", percent=20))
    for labels in per_layer:
        assert labels.tolist() == ["hypo"] * 2 + ["normal"] * 6 + ["hyper"] * 2
    pooled = classify_values(on_rate, mean_act, ClassifyConfig(mode="percentile", percent=20,
                                                               scope="global"))
    assert pooled[0].tolist() == ["hypo"] * 4 + ["normal"] * 2 + ["hyper"] * 4
    assert (pooled[1] == "normal").all()
    by_mean = classify_values(on_rate, mean_act, ClassifyConfig(mode="percentile", percent=10,
                                                                percentile_by="mean_act"))
    assert by_mean[0].tolist() == ["hyper"] + ["normal"] * 8 + ["hypo"]


def test_classify_from_stats(mlp):
    stats = collect_stats(mlp, mlp_spec(2), [padded_batch(0, [5, 5])], CONFIG)
    classes = classify(stats, ClassifyConfig(hyper_on_rate=0.7, hypo_on_rate=0.3))
    for p, labels in zip(stats.on_rate, classes):
        assert ((p >= 0.7).numpy() == (labels == "hyper")).all()
        assert ((p <= 0.3).numpy() == (labels == "hypo")).all()


def test_compare_precision_recall_jaccard():
    classes = [np.array(["hyper", "normal", "hypo", "normal"]), np.array(["normal", "hypo", "normal"])]
    scores = {
        "perfect": [torch.tensor([0.0, 9.0, 0.0, 9.0]), torch.tensor([9.0, 0.0, 9.0])],
        "half": [torch.tensor([0.0, 0.1, 9.0, 9.0]), torch.tensor([0.0, 9.0, 9.0])],
    }
    rows = {r.criterion: r for r in compare_criteria(scores, classes)}
    assert (rows["perfect"].precision, rows["perfect"].recall, rows["perfect"].jaccard) == (1.0, 1.0, 1.0)
    half = rows["half"]
    assert (half.selected, half.hyper, half.hypo, half.normal) == (3, 1, 0, 2)
    assert half.precision == pytest.approx(1 / 3) and half.recall == pytest.approx(1 / 3)
    assert half.jaccard == pytest.approx(1 / 5)
    assert half.per_layer == [{"hyper": 1, "hypo": 0, "normal": 1}, {"hyper": 0, "hypo": 0, "normal": 1}]
    pooled = {r.criterion: r for r in compare_criteria(scores, classes, scope="global")}
    assert pooled["half"].selected == 3 and pooled["half"].hyper == 1
    none = overlap_with_classes("x", {0: torch.empty(0, dtype=torch.int64)}, [np.array(["normal"])])
    assert none.precision is None and none.recall is None and none.share_hyper is None


def test_selection_helpers():
    scores = [torch.tensor([3.0, 1.0, 2.0, 1.0]), torch.tensor([0.5, 5.0])]
    assert [t.tolist() for t in select_lowest(scores, [2, 1]).values()] == [[1, 3], [0]]
    assert [t.tolist() for t in select_lowest_global(scores, 3).values()] == [[1, 3], [0]]
    with pytest.raises(NeuroselError, match="cannot select"):
        select_lowest(scores, [5, 0])
    a = {0: torch.tensor([1, 2, 3]), 1: torch.tensor([], dtype=torch.int64)}
    b = {0: torch.tensor([2, 3, 4]), 1: torch.tensor([], dtype=torch.int64)}
    assert selection_jaccard(a, b) == [0.5, None]


def test_neurons_tsv_round_trip_and_errors(mlp, tmp_path):
    stats = collect_stats(mlp, mlp_spec(2), [padded_batch(0, [6, 4])], CONFIG)
    classes = classify(stats, ClassifyConfig(hyper_on_rate=0.8, hypo_on_rate=0.2))
    scores = {"magnitude": [torch.rand(6, dtype=torch.float64), torch.rand(4, dtype=torch.float64)],
              "entropy": stats.entropy,
              "random": [torch.full((6,), 1 / 3, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)]}
    path = tmp_path / "neurons.tsv"
    write_neurons_tsv(path, stats, classes, scores)
    lines = path.read_text().splitlines()
    assert lines[0].split("\t") == ["layer", "neuron", "class", "on_rate", "mean_act", "entropy",
                                    "magnitude", "random"]
    assert len(lines) == 11 and lines[7].split("\t")[:2] == ["1", "0"]
    table = read_neurons_tsv(path)
    assert [c.tolist() for c in table.layer_classes()] == [c.tolist() for c in classes]
    np.testing.assert_array_equal(table.on_rate, torch.cat(stats.on_rate).numpy())
    np.testing.assert_array_equal(table.entropy, torch.cat(stats.entropy).numpy())
    read_back = table.criterion_scores()
    assert list(read_back) == ["magnitude", "random", "mean_act", "entropy"]
    for name, values in {**scores, "mean_act": stats.mean_act}.items():
        assert all(torch.equal(a, b) for a, b in zip(read_back[name], values))
    first = path.read_bytes()
    write_neurons_tsv(path, stats, classes, scores)
    assert path.read_bytes() == first
    with pytest.raises(NeuroselError, match="criterion 'entropy' differs from the fixed column"):
        write_neurons_tsv(path, stats, classes, {"entropy": scores["random"]})
    path.write_text("\n".join(lines[:3] + [lines[4]] + lines[5:]) + "\n")
    with pytest.raises(NeuroselError, match=r"neurons.tsv:4: neuron \(0, 3\) out of order"):
        read_neurons_tsv(path)
    path.write_text("\n".join(lines[:2] + [lines[2].replace("\tnormal\t", "\tweird\t").replace(
        "\thyper\t", "\tweird\t").replace("\thypo\t", "\tweird\t")]) + "\n")
    with pytest.raises(NeuroselError, match="neurons.tsv:3: unknown class 'weird'"):
        read_neurons_tsv(path)


def test_plots_write_pngs(mlp, tmp_path):
    from neurosel.recipe.saliency_plots import (plot_class_counts, plot_criteria_overlap, plot_mean_vs_entropy,
                                                plot_on_rate_histograms)

    stats = collect_stats(mlp, mlp_spec(2), [padded_batch(0, [6, 4])], CONFIG)
    config = ClassifyConfig(mode="percentile", percent=25)
    classes = classify(stats, config)
    rows = compare_criteria({"mean_act": stats.mean_act, "entropy": stats.entropy}, classes)
    paths = [tmp_path / f"{n}.png" for n in ("onrate", "scatter", "overlap", "counts")]
    plot_on_rate_histograms(paths[0], stats.on_rate, classes, config)
    plot_mean_vs_entropy(paths[1], stats.mean_act, stats.entropy, classes)
    plot_criteria_overlap(paths[2], rows)
    plot_class_counts(paths[3], classes)
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(q.name for q in tmp_path.iterdir()) == sorted(p.name for p in paths)


def test_layer_update_counts_under_and_overflow_exactly_in_the_columns_that_have_them() -> None:
    """Values below hist_min, above hist_max and on both edges, in some columns only, batch after
    batch: every count must match a direct count in float64."""
    from neurosel.saliency.stats import LayerStats

    config = StatsConfig(hist_bins=5, hist_min=-0.5, hist_max=1.5)
    gen = torch.Generator().manual_seed(3)
    stats = LayerStats.empty(6, config.hist_bins)
    seen = []
    for _ in range(3):
        x = torch.rand(40, 6, generator=gen) * 1.5 - 0.2  # inside the range in most columns
        x[::7, 1] = -2.0  # underflow in column 1
        x[::5, 4] = 3.0  # overflow in column 4
        x[0, 2], x[1, 2], x[2, 3] = -0.5, 1.5, 1.1  # both edges, an interior edge
        stats.update(x, 0.0, config)
        seen.append(x.double())
    a = torch.cat(seen).numpy()
    assert stats.hist[:, 0].tolist() == (a < -0.5).sum(0).tolist()
    assert stats.hist[:, -1].tolist() == (a > 1.5).sum(0).tolist()
    for j in range(6):
        inside = a[(a[:, j] >= -0.5) & (a[:, j] <= 1.5), j]
        counts, _ = np.histogram(inside, bins=5, range=(-0.5, 1.5))
        assert stats.hist[j, 1:-1].tolist() == counts.tolist()
    assert stats.on_count.tolist() == (a > 0.0).sum(0).tolist()
    assert stats.min.tolist() == a.min(0).tolist() and stats.max.tolist() == a.max(0).tolist()
