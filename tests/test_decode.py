"""Greedy and WFST decoding of CTC log-posteriors built here to spell known sentences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurosel.decode import DecodeConfig, collapse_alignment, decode_log_probs, load_graph
from neurosel.errors import NeuroselError
from neurosel.lang import LangConfig, prepare_lang

from test_lang import grammar_sentences, write_kaldi_text

TARGET = 0.9


@pytest.fixture(scope="module")
def graph(tmp_path_factory):
    root = tmp_path_factory.mktemp("decode")
    text = write_kaldi_text(root / "text", grammar_sentences(300))
    prepare_lang(text, root / "lang", LangConfig(vocab_size=60, lm_order=3))
    return load_graph(root / "lang")


def frames_for(token_ids: list[int], rng: np.random.Generator) -> list[int]:
    """A CTC frame alignment: each token held 1-3 frames, blanks between (and always between
    two equal tokens), leading and trailing blanks."""
    frames = [0, 0]
    for i, t in enumerate(token_ids):
        if i and (t == token_ids[i - 1] or rng.random() < 0.6):
            frames += [0] * int(rng.integers(1, 3))
        frames += [t] * int(rng.integers(1, 4))
    return frames + [0, 0]


def peaky(frames: list[int], vocab: int, rival: dict[int, int] | None = None) -> torch.Tensor:
    """(T, V) log-posteriors with TARGET mass on ``frames[t]``; for frames in ``rival`` the
    mass is split 0.55 rival / 0.35 target instead."""
    probs = np.full((len(frames), vocab), (1 - TARGET) / (vocab - 1))
    probs[np.arange(len(frames)), frames] = TARGET
    for t, token in (rival or {}).items():
        rest = 0.1 / (vocab - 2)
        probs[t] = rest
        probs[t, token], probs[t, frames[t]] = 0.55, 0.35
    return torch.log(torch.tensor(probs, dtype=torch.float32))


@pytest.mark.parametrize("method", ["greedy", "wfst"])
def test_clean_posteriors_spell_the_sentence(graph, method):
    rng = np.random.default_rng(0)
    sentences = ["turn the kitchen light", "call a quiet radio near the attic",
                 "open this door in the hall"]
    batch = []
    for s in sentences:
        batch.append(peaky(frames_for(graph.sp.encode(s, out_type=int), rng), graph.num_tokens))
    hyps = decode_log_probs(batch, None, graph, DecodeConfig(method=method))
    for s, x, h in zip(sentences, batch, hyps):
        assert h.words == s.split()
        assert h.tokens == graph.sp.encode(s, out_type=int)
        assert h.confidence == pytest.approx(TARGET, rel=1e-4)
        assert h.acoustic_cost == pytest.approx(-len(x) * math.log(TARGET), rel=1e-4)
        assert h.reached_final
        assert (h.lm_cost > 0) == (method == "wfst")


def test_lm_repairs_a_non_word(graph):
    rng = np.random.default_rng(1)
    sentence = "show my garage heater"
    tokens = graph.sp.encode(sentence, out_type=int)
    frames = frames_for(tokens, rng)
    vocabulary = set(graph.id_to_word.values())
    # Replace one word-internal piece of "garage" or "heater" by a piece that makes a non-word.
    inner = [t for t, f in enumerate(frames) if f and not graph.sp.id_to_piece(f).startswith("▁")]
    candidates = [p for p in range(3, graph.num_tokens) if not graph.sp.id_to_piece(p).startswith("▁")]
    for t in inner:
        for rival in candidates:
            held = [u for u in range(len(frames)) if frames[u] == frames[t] and abs(u - t) < 4]
            log_probs = peaky(frames, graph.num_tokens, {u: rival for u in held})
            greedy = decode_log_probs([log_probs], None, graph, DecodeConfig(method="greedy"))[0]
            if any(w not in vocabulary for w in greedy.words):
                break
        else:
            continue
        break
    assert any(w not in vocabulary for w in greedy.words), "no non-word could be planted"
    wfst = decode_log_probs([log_probs], None, graph, DecodeConfig(method="wfst"))[0]
    assert wfst.words == sentence.split()
    assert wfst.tokens == tokens
    assert wfst.confidence < greedy.confidence  # the path goes through the weaker frames


@pytest.mark.parametrize("method", ["greedy", "wfst"])
def test_blank_penalty_brings_back_tokens_that_blank_outweighs(graph, method):
    rng = np.random.default_rng(3)
    sentence = "turn the kitchen light"
    frames = frames_for(graph.sp.encode(sentence, out_type=int), rng)
    probs = np.full((len(frames), graph.num_tokens), 1e-4)
    for t, token in enumerate(frames):  # every token frame: blank 0.6, the token 0.4
        probs[t, 0] = 0.6 if token else 1.0
        if token:
            probs[t, token] = 0.4
    log_probs = torch.log(torch.tensor(probs / probs.sum(1, keepdims=True), dtype=torch.float32))
    plain = decode_log_probs([log_probs], None, graph, DecodeConfig(method=method))[0]
    assert len(plain.words) < 4
    fixed = decode_log_probs([log_probs], None, graph, DecodeConfig(method=method, blank_penalty=1.0))[0]
    assert fixed.words == sentence.split()
    path = torch.tensor(frames)
    expected = log_probs[torch.arange(len(frames)), path].exp().mean().item()
    assert fixed.confidence == pytest.approx(expected, rel=1e-4)  # on the unpenalised posteriors


def test_padded_batch_equals_list(graph):
    rng = np.random.default_rng(2)
    utts = [peaky(frames_for(graph.sp.encode(s, out_type=int), rng), graph.num_tokens)
            for s in ["play the music", "find a blue fan on the garden"]]
    padded = torch.nn.utils.rnn.pad_sequence(utts, batch_first=True)
    lengths = torch.tensor([len(u) for u in utts])
    cfg = DecodeConfig(method="wfst", lm_weight=0.7, beam=12.0, max_active=500)
    assert decode_log_probs(padded, lengths, graph, cfg) == decode_log_probs(utts, None, graph, cfg)


def test_silence_and_no_frames(graph):
    blank_only = peaky([0] * 20, graph.num_tokens)
    empty = torch.zeros(0, graph.num_tokens)
    for method in ("greedy", "wfst"):
        silent, nothing = decode_log_probs([blank_only, empty], None, graph, DecodeConfig(method=method))
        assert silent.words == [] and silent.tokens == []
        assert silent.confidence == pytest.approx(TARGET, rel=1e-4)
        assert nothing.words == [] and nothing.confidence == 0.0


def test_lang_dir_path_and_greedy_without_tlg(graph):
    rng = np.random.default_rng(3)
    x = peaky(frames_for(graph.sp.encode("close the oven", out_type=int), rng), graph.num_tokens)
    (hyp,) = decode_log_probs([x], None, graph.lang_dir, DecodeConfig(method="wfst"))
    assert hyp.words == ["close", "the", "oven"]
    light = load_graph(graph.lang_dir, with_tlg=False)
    assert light.tlg is None
    with pytest.raises(NeuroselError, match="without TLG"):
        decode_log_probs([x], None, light, DecodeConfig(method="wfst"))


def test_bad_inputs(graph):
    with pytest.raises(NeuroselError, match="60 pieces"):
        decode_log_probs([torch.log_softmax(torch.randn(5, 61), -1)], None, graph, DecodeConfig())
    with pytest.raises(NeuroselError, match="log_softmax"):
        decode_log_probs([torch.randn(5, 60)], None, graph, DecodeConfig())
    with pytest.raises(NeuroselError, match="lengths"):
        decode_log_probs(torch.zeros(2, 5, 60), None, graph, DecodeConfig())
    with pytest.raises(NeuroselError, match="do not fit"):
        decode_log_probs(torch.zeros(2, 5, 60), [5, 6], graph, DecodeConfig())
    with pytest.raises(ValueError, match="lm_weight"):
        DecodeConfig(lm_weight=0.0)
    with pytest.raises(NeuroselError, match="no such BPE model"):
        load_graph(graph.lang_dir / "missing")


def test_collapse_alignment():
    assert collapse_alignment(np.array([0, 5, 5, 0, 5, 7, 7, 0, 0, 3])) == [5, 5, 7, 3]
    assert collapse_alignment(np.array([], dtype=np.int64)) == []
