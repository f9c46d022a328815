"""Stage 2 (lang): Kneser-Ney estimation against hand-computed values, ARPA -> G with kaldilm,
BPE training, lexicon and the TLG build, on small texts made here."""

from __future__ import annotations

import math
import random
from collections import Counter
from pathlib import Path

import kaldifst
import kaldilm
import pytest

from neurosel.bin.prepare_lang import main as prepare_lang_main
from neurosel.errors import NeuroselError
from neurosel.lang import LangConfig, estimate_kneser_ney, load_bpe, prepare_lang, train_bpe, write_arpa
from neurosel.lang.graph import grammar_fst, num_arcs
from neurosel.lang.kneser_ney import discounts
from neurosel.lang.lexicon import add_disambig, read_symbol_table

VERBS = ["turn", "switch", "open", "close", "play", "call", "show", "find"]
DETS = ["the", "a", "my", "this"]
ADJS = ["red", "blue", "kitchen", "garage", "front", "quiet"]
NOUNS = ["light", "lights", "door", "window", "radio", "music", "alarm", "heater", "fan", "oven"]
PREPS = ["in", "on", "near"]
PLACES = ["hall", "garden", "office", "bedroom", "attic"]


def grammar_sentences(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences of a small command grammar (about 40 words)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(VERBS), rng.choice(DETS)]
        if rng.random() < 0.5:
            words.append(rng.choice(ADJS))
        words.append(rng.choice(NOUNS))
        if rng.random() < 0.4:
            words += [rng.choice(PREPS), "the", rng.choice(PLACES)]
        out.append(" ".join(words))
    return out


def write_kaldi_text(path: Path, sentences: list[str]) -> Path:
    path.write_text("".join(f"utt{i:04d} {s}\n" for i, s in enumerate(sentences)), encoding="utf-8")
    return path


def read_arpa(path: Path) -> tuple[dict[tuple[str, ...], float], dict[tuple[str, ...], float]]:
    """log10 probabilities and backoff weights of an ARPA file, keyed by n-gram."""
    logp, bow = {}, {}
    section = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("\\") and line.endswith("-grams:"):
            section = int(line[1:line.index("-")])
            continue
        if not section or not line.strip() or line.startswith("\\"):
            continue
        fields = line.split("\t")
        gram = tuple(fields[1].split())
        assert len(gram) == section
        logp[gram] = float(fields[0])
        if len(fields) == 3:
            bow[gram] = float(fields[2])
    return logp, bow


def arpa_prob(logp: dict, bow: dict, word: str, context: tuple[str, ...]) -> float:
    """p(word | context) by the ARPA backoff rule."""
    if context + (word,) in logp:
        return 10 ** logp[context + (word,)]
    if not context:
        return 0.0
    return 10 ** bow.get(context, 0.0) * arpa_prob(logp, bow, word, context[1:])


def test_discounts_follow_chen_goodman():
    # count-of-counts t1=4, t2=2, t3=1, t4=1 (and one count of 7, which only the total sees)
    counts = Counter({("a",): 1, ("b",): 1, ("c",): 1, ("d",): 1, ("e",): 2, ("f",): 2,
                      ("g",): 3, ("h",): 4, ("i",): 7})
    y = 4 / (4 + 2 * 2)
    d1, d2, d3 = discounts(counts)
    assert d1 == pytest.approx(1 - 2 * y * 2 / 4)
    assert d2 == pytest.approx(2 - 3 * y * 1 / 2)
    assert d3 == pytest.approx(3 - 4 * y * 1 / 1)


def test_kneser_ney_matches_hand_computed_bigram(tmp_path):
    # <s> a b </s> (twice), <s> b a </s>. Bigram counts: <s> a 2, a b 2, b </s> 2, <s> b 1,
    # b a 1, a </s> 1, so t1 = t2 = 3: Y = 1/3, D1 = 1/3; D2 = 2 - 3Y*0/3 = 2 is out of (0, 2)
    # and falls back to 0.5 * 2 = 1. Unigram continuation counts a, b, </s> = 2 each; t1 = 0
    # gives Y = 0 and the fallback D2 = 1: p(w) = (2 - 1)/6 + (1 * 3 / 6) * 1/3 = 1/3.
    # Context <s>: total 3, gamma = (D1 * 1 + D2 * 1) / 3 = 4/9;
    # p(a|<s>) = (2 - 1)/3 + 4/9 * 1/3 = 13/27; p(b|<s>) = (1 - 1/3)/3 + 4/27 = 10/27;
    # p(</s>|<s>) = 4/27 (backed off).
    model = estimate_kneser_ney([["a", "b"], ["a", "b"], ["b", "a"]], order=2)
    assert model.discounts[1][0] == pytest.approx(1 / 3)
    assert model.discounts[1][1] == pytest.approx(1.0)
    arpa = tmp_path / "lm.arpa"
    write_arpa(model, arpa)
    logp, bow = read_arpa(arpa)
    for w in ("a", "b", "</s>"):
        assert 10 ** logp[(w,)] == pytest.approx(1 / 3, rel=1e-6)
    assert logp[("<s>",)] == -99.0
    assert 10 ** logp[("<s>", "a")] == pytest.approx(13 / 27, rel=1e-6)
    assert 10 ** logp[("<s>", "b")] == pytest.approx(10 / 27, rel=1e-6)
    assert 10 ** bow[("<s>",)] == pytest.approx(4 / 9, rel=1e-6)
    assert arpa_prob(logp, bow, "</s>", ("<s>",)) == pytest.approx(4 / 27, rel=1e-6)
    assert 10 ** logp[("a", "b")] == pytest.approx(13 / 27, rel=1e-6)
    assert 10 ** logp[("b", "</s>")] == pytest.approx(13 / 27, rel=1e-6)
    assert ("a", "a") not in logp


def test_kneser_ney_contexts_sum_to_one(tmp_path):
    sentences = [s.split() for s in grammar_sentences(150)]
    model = estimate_kneser_ney(sentences, order=3)
    arpa = tmp_path / "lm.arpa"
    write_arpa(model, arpa)
    logp, bow = read_arpa(arpa)
    vocab = sorted({w for s in sentences for w in s} | {"</s>"})
    contexts = [()] + [g for g in logp if len(g) < 3 and g != ("</s>",)]
    assert len(contexts) > 100
    for context in contexts:
        total = sum(arpa_prob(logp, bow, w, context) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-5), context


def test_arpa_loads_in_kaldilm_and_g_scores_a_sentence(tmp_path):
    model = estimate_kneser_ney([["a", "b"], ["a", "b"], ["b", "a"]], order=2)
    arpa = tmp_path / "lm.arpa"
    write_arpa(model, arpa)
    words = tmp_path / "words.txt"
    words.write_text("<eps> 0\na 1\nb 2\n#0 3\n<s> 4\n</s> 5\n")
    G = grammar_fst(arpa, words)
    assert G.num_states == 4  # unigram state, <s>, a, b
    labels = {a.ilabel for s in kaldifst.StateIterator(G) for a in kaldifst.ArcIterator(G, s)}
    assert labels == {1, 2, 3}  # words and #0 on the backoff arcs
    # Without a disambiguation symbol the backoff arcs are epsilons, <s> and </s> are symbols,
    # and the cost of "<s> a b </s>" is -ln(p(a|<s>) p(b|a) p(</s>|b)) = -3 ln(13/27).
    G_eps = kaldifst.compile(s=kaldilm.arpa2fst(str(arpa), read_symbol_table=str(words)),
                             acceptor=False)
    kaldifst.arcsort(G_eps, sort_type="ilabel")
    sentence = kaldifst.make_linear_acceptor([4, 1, 2, 5])
    path = kaldifst.shortest_path(kaldifst.compose(sentence, G_eps))
    ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(path)
    assert ok and olabels == [4, 1, 2, 5]
    assert weight.value == pytest.approx(-3 * math.log(13 / 27), abs=1e-3)


def test_bpe_blank_first_and_deterministic(tmp_path):
    sentences = grammar_sentences(200)
    train_bpe(sentences, tmp_path / "a.model", vocab_size=60, seed=3)
    train_bpe(sentences, tmp_path / "b.model", vocab_size=60, seed=3)
    assert (tmp_path / "a.model").read_bytes() == (tmp_path / "b.model").read_bytes()
    sp = load_bpe(tmp_path / "a.model")
    assert sp.get_piece_size() == 60
    assert [sp.id_to_piece(i) for i in range(3)] == ["<blk>", "<sos/eos>", "<unk>"]
    assert sp.decode(sp.encode(sentences[0], out_type=int)) == sentences[0]
    with pytest.raises(NeuroselError, match="a value <="):
        train_bpe(sentences[:2], tmp_path / "c.model", vocab_size=500)
    assert not (tmp_path / "c.model").exists()


def test_disambiguation_symbols_for_prefixes_and_homophones():
    lexicon = {"a": ["▁a"], "ab": ["▁a", "b"], "x": ["▁x"], "y": ["▁x"], "z": ["▁z"]}
    entries, num_disambig = add_disambig(lexicon)
    assert dict(entries) == {"a": ["▁a", "#1"], "ab": ["▁a", "b"], "x": ["▁x", "#1"],
                             "y": ["▁x", "#2"], "z": ["▁z"]}
    assert num_disambig == 3  # #0 (for G) to #2


def test_prepare_lang_builds_a_consistent_lang_dir(tmp_path):
    sentences = grammar_sentences(200)
    text = write_kaldi_text(tmp_path / "text", sentences)
    lang = tmp_path / "lang"
    sizes = prepare_lang(text, lang, LangConfig(vocab_size=60, lm_order=3))
    for name in ("bpe.model", "tokens.txt", "words.txt", "lexicon.txt", "lexicon_disambig.txt",
                 "lm.arpa", "G.fst", "TLG.fst", "lang.yaml"):
        assert (lang / name).is_file(), name
    sp = load_bpe(lang / "bpe.model")
    tokens = read_symbol_table(lang / "tokens.txt")
    assert len(tokens) == sp.get_piece_size() == sizes["pieces"] == 60
    assert tokens["<blk>"] == 0
    words = read_symbol_table(lang / "words.txt")
    vocab = sorted({w for s in sentences for w in s.split()})
    assert list(words)[:1] == ["<eps>"] and list(words)[-3:] == ["#0", "<s>", "</s>"]
    assert list(words)[1:-3] == vocab and list(words.values()) == list(range(len(words)))
    lexicon = {line.split()[0]: line.split()[1:]
               for line in (lang / "lexicon.txt").read_text(encoding="utf-8").splitlines()}
    assert sorted(lexicon) == vocab
    for word, pieces in lexicon.items():
        assert pieces == sp.encode(word, out_type=str)
    tlg = kaldifst.StdVectorFst.read(str(lang / "TLG.fst"))
    assert tlg.num_states == sizes["TLG_states"] > 0 and num_arcs(tlg) == sizes["TLG_arcs"]
    max_label = max(a.ilabel for s in kaldifst.StateIterator(tlg) for a in kaldifst.ArcIterator(tlg, s))
    assert max_label <= len(tokens)  # no disambiguation symbol left on the input side


def test_prepare_lang_redoes_only_changed_steps(tmp_path):
    text = write_kaldi_text(tmp_path / "text", grammar_sentences(100))
    lang = tmp_path / "lang"
    prepare_lang(text, lang, LangConfig(vocab_size=50, lm_order=2))
    stamps = {p.name: p.stat().st_mtime_ns for p in lang.iterdir()}
    prepare_lang(text, lang, LangConfig(vocab_size=50, lm_order=3))
    after = {p.name: p.stat().st_mtime_ns for p in lang.iterdir()}
    assert after["bpe.model"] == stamps["bpe.model"]
    assert after["words.txt"] == stamps["words.txt"]
    assert after["lm.arpa"] != stamps["lm.arpa"] and after["TLG.fst"] != stamps["TLG.fst"]
    assert "ngram 3=" in (lang / "lm.arpa").read_text()
    (lang / "TLG.fst").unlink()  # a lost output is rebuilt even though its step was recorded
    prepare_lang(text, lang, LangConfig(vocab_size=50, lm_order=3))
    assert (lang / "TLG.fst").is_file()


def test_same_seed_same_bytes(tmp_path):
    text = write_kaldi_text(tmp_path / "text", grammar_sentences(100))
    for name in ("x", "y"):
        prepare_lang(text, tmp_path / name, LangConfig(vocab_size=50))
    for name in ("bpe.model", "words.txt", "lexicon.txt", "lm.arpa", "G.fst", "TLG.fst"):
        assert (tmp_path / "x" / name).read_bytes() == (tmp_path / "y" / name).read_bytes(), name


@pytest.mark.parametrize("content, problem", [
    (b"utt1 turn on the light\nutt2 \nutt3 open the door\n", "has no value"),
    (b"utt1 turn on the light\nutt2 open the \xff\xfe door\n", "not valid UTF-8"),
    (b"utt1 turn on the light\nutt2 open <s> door\n", "utterance 'utt2': '<s>' is a reserved"),
])
def test_bad_text_names_file_and_line(tmp_path, content, problem):
    text = tmp_path / "text"
    text.write_bytes(content)
    where = f"{text}:2: " if "utterance" not in problem else f"{text}: "
    with pytest.raises(NeuroselError, match=f"{where}.*{problem}"):
        prepare_lang(text, tmp_path / "lang", LangConfig(vocab_size=30))


def test_cli_writes_lang_dir_and_resolved_config(tmp_path, capsys):
    text = write_kaldi_text(tmp_path / "text", grammar_sentences(100))
    config = tmp_path / "lang.yaml"
    config.write_text("vocab_size: 50\nlm_order: 2\n")
    assert prepare_lang_main(["--config", str(config), "--set", "lm_order=3", str(text),
                              str(tmp_path / "lang")]) == 0
    assert "lm_order: 3" in (tmp_path / "lang" / "lang.yaml").read_text()
    assert (tmp_path / "lang" / ".done").is_file()
