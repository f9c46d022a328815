"""The CNN CTC model: padding invariance, norm folding, FC spec names, checkpoints."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from neurosel.config import from_dict
from neurosel.errors import NeuroselError
from neurosel.model import ModelConfig, build_model, fold_norms, load_model, save_model
from neurosel.model.cnn import FreqMaxPool, conv_block
from neurosel.fc import FcSpec, find_fc_layers, verify_spec


def small_config(**kw) -> ModelConfig:
    base = dict(vocab_size=30, conv_channels=[4, 6], fc_dims=[24, 16, 20], dropout=0.2)
    return ModelConfig(**{**base, **kw})


def with_batchnorm_stats(model: nn.Module) -> nn.Module:
    """Run a few training forwards so BatchNorm running statistics are far from (0, 1)."""
    torch.manual_seed(1)
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(3 * torch.randn(3, 90, 80) + 1, torch.tensor([90, 70, 41]))
    return model.eval()


@pytest.mark.parametrize("conv_type", ["freq", "time_freq"])
@pytest.mark.parametrize("fc_norm", ["batchnorm", "batchnorm_post", "none"])
def test_padding_does_not_change_valid_frames(conv_type: str, fc_norm: str) -> None:
    torch.manual_seed(0)
    model = with_batchnorm_stats(build_model(small_config(conv_type=conv_type, fc_norm=fc_norm)))
    lens = torch.tensor([97, 64, 33, 1])
    feats = torch.randn(4, 97, 80)
    feats[1, 64:] = 50.0  # padding garbage must not leak into valid frames
    log_probs, out_lens = model(feats, lens)
    assert out_lens.tolist() == [25, 16, 9, 1]
    assert log_probs.shape == (4, 25, 30)
    for b in range(4):
        alone, alone_len = model(feats[b:b + 1, :lens[b]], lens[b:b + 1])
        assert alone_len.item() == out_lens[b].item() == alone.size(1)
        torch.testing.assert_close(alone[0], log_probs[b, :out_lens[b]], atol=1e-5, rtol=0)
    assert torch.allclose(log_probs[2, :9].exp().sum(-1), torch.ones(9), atol=1e-5)


@pytest.mark.parametrize("fc_norm,activation", [("batchnorm", "sigmoid"), ("batchnorm_post", "relu")])
def test_fold_norms_keeps_outputs_and_config_says_folded(tmp_path, fc_norm: str, activation: str) -> None:
    torch.manual_seed(0)
    model = with_batchnorm_stats(build_model(small_config(fc_norm=fc_norm, fc_activation=activation)))
    feats, lens = torch.randn(2, 60, 80), torch.tensor([60, 45])
    before, _ = model(feats, lens)
    folded = fold_norms(copy.deepcopy(model))
    after, _ = folded(feats, lens)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=0)
    assert all(isinstance(m, nn.Identity) for m in folded.fc_norm)
    assert folded.current_config().fc_norm == "none"
    save_model(folded, tmp_path / "model.pt")
    loaded, cfg = load_model(tmp_path / "model.pt")
    assert cfg.fc_norm == "none" and not any(isinstance(m, nn.BatchNorm1d) for m in loaded.modules())
    torch.testing.assert_close(loaded(feats, lens)[0], before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("activation,threshold", [("sigmoid", 0.5), ("relu", 0.0)])
def test_fc_spec_names_resolve_to_the_fc_stack(activation: str, threshold: float) -> None:
    model = build_model(small_config(fc_activation=activation)).eval()
    spec = model.fc_spec()
    assert isinstance(spec, FcSpec) and spec.on_threshold == threshold
    assert spec.linears == ["fc.0", "fc.1", "fc.2"] and spec.consumers == ["fc.1", "fc.2", "output"]
    act_type = nn.Sigmoid if activation == "sigmoid" else nn.ReLU
    seen = []
    for lin, act, cons in zip(spec.linears, spec.activations, spec.consumers):
        linear, consumer = model.get_submodule(lin), model.get_submodule(cons)
        assert isinstance(linear, nn.Linear) and isinstance(consumer, nn.Linear)
        assert consumer.in_features == linear.out_features
        module = model.get_submodule(act)
        assert isinstance(module, act_type)
        module.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    _, out_lens = model(torch.randn(2, 40, 80), torch.tensor([40, 21]))
    # hooks see the valid frames only, (frames, width)
    assert seen == [(int(out_lens.sum()), w) for w in (24, 16, 20)]
    # the hand-written spec is what discovery finds on a sample input
    sample = (torch.randn(1, 20, 80), torch.tensor([20]))
    assert find_fc_layers(model, *sample) == spec
    verify_spec(model, spec, *sample)


def test_an_unfolded_norm_between_linear_and_activation_is_not_an_fc_layer() -> None:
    model = build_model(small_config(fc_norm="batchnorm")).eval()
    with pytest.raises(NeuroselError, match="'fc.0' is not an FC layer.*batch_norm"):
        verify_spec(model, model.fc_spec(), torch.randn(1, 20, 80), torch.tensor([20]))
    folded = fold_norms(model)
    verify_spec(folded, folded.fc_spec(), torch.randn(1, 20, 80), torch.tensor([20]))


def test_checkpoint_loads_with_weights_only_and_rebuilds_pruned_widths(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_model(small_config()).eval()
    # remove neurons 0 and 5 of FC layer 1 (rows of fc.1, columns of fc.2) as pruning would
    keep = torch.tensor([i for i in range(16) if i not in (0, 5)])
    old, nxt = model.fc[1], model.fc[2]
    model.fc[1] = nn.Linear(old.in_features, 14)
    model.fc[1].weight.data, model.fc[1].bias.data = old.weight.data[keep], old.bias.data[keep]
    model.fc[2] = nn.Linear(14, nxt.out_features)
    model.fc[2].weight.data, model.fc[2].bias.data = nxt.weight.data[:, keep], nxt.bias.data.clone()
    feats, lens = torch.randn(2, 50, 80), torch.tensor([50, 30])
    expected, _ = model(feats, lens)
    save_model(model, tmp_path / "pruned.pt", note="pruned")
    raw = torch.load(tmp_path / "pruned.pt", weights_only=True)
    assert raw["config"]["fc_dims"] == [24, 14, 20] and raw["note"] == "pruned"
    loaded, cfg = load_model(tmp_path / "pruned.pt")
    assert cfg.fc_dims == [24, 14, 20]
    torch.testing.assert_close(loaded(feats, lens)[0], expected)


def test_load_model_rejects_mismatched_and_truncated_checkpoints(tmp_path) -> None:
    save_model(build_model(small_config()), tmp_path / "good.pt")
    ckpt = torch.load(tmp_path / "good.pt", weights_only=True)
    ckpt["config"]["fc_dims"] = [24, 17, 20]
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(NeuroselError, match=r"mismatch\.pt: weights do not match"):
        load_model(tmp_path / "mismatch.pt")
    data = (tmp_path / "good.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(NeuroselError, match=r"truncated\.pt"):
        load_model(tmp_path / "truncated.pt")
    torch.save({"weights": ckpt["model"]}, tmp_path / "other.pt")
    with pytest.raises(NeuroselError, match=r"other\.pt: not a model checkpoint"):
        load_model(tmp_path / "other.pt")


def test_config_errors_name_the_key() -> None:
    with pytest.raises(NeuroselError, match="fc_activation"):
        from_dict(ModelConfig, {"fc_activation": "tanh"}, "train.yaml: model")
    with pytest.raises(NeuroselError, match="same, non-zero length"):
        from_dict(ModelConfig, {"conv_channels": [8, 8, 8]}, "train.yaml: model")
    with pytest.raises(NeuroselError, match="vocab_size"):
        build_model(ModelConfig())


@pytest.mark.parametrize("size,width", [(2, 80), (3, 40), (2, 41), (1, 7)])
def test_freq_max_pool_equals_torch_max_pool_with_and_without_gradients(size: int, width: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 11, width)
    x[..., 1::2] = x[..., 0:width - 1:2]  # ties within windows
    reference = nn.MaxPool2d((1, size))
    pool = FreqMaxPool(size)
    with torch.no_grad():
        assert torch.equal(pool(x), reference(x))
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    weights = torch.randn_like(reference(x))
    (pool(ours) * weights).sum().backward()
    (reference(theirs) * weights).sum().backward()
    assert torch.equal(ours.grad, theirs.grad)


@pytest.mark.parametrize("pool", [1, 2, 3])
def test_conv_block_pools_before_relu_with_the_outputs_and_gradients_of_relu_then_pool(pool: int) -> None:
    torch.manual_seed(0)
    block = conv_block(3, 5, (3, 3), 2, pool)
    usual = nn.Sequential(block[0], nn.ReLU(), nn.MaxPool2d((1, pool)))
    x = torch.randn(2, 3, 13, 40)
    with torch.no_grad():
        assert torch.equal(block(x), usual(x))
    weights = torch.randn_like(usual(x))
    grads = []
    for net in (block, usual):
        net.zero_grad()
        xi = x.clone().requires_grad_()
        (net(xi) * weights).sum().backward()
        grads.append((xi.grad, block[0].weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0], atol=1e-6)
    assert torch.allclose(grads[0][1], grads[1][1], atol=1e-5)
