"""Plan the synthetic corpus: which sentence, speaker and condition parameters each utterance gets.

Planning is cheap and deterministic, so every run (including a resumed one) recomputes it.
Random draws come from generators keyed by ``(seed, purpose)`` or ``(seed, split, index)``,
never from process order: the same seed and config give the same plan, and the audio rendered
for an utterance depends only on its own entry.

Sentences are drawn once, in a fixed order (test, dev, each OOD adaptation and test set, the
babble sources, train, then the extra LM text), each set excluding every sentence drawn before,
so the splits never share a sentence.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from neurosel.synth.config import CorpusConfig
from neurosel.synth.text import Grammar, draw_sentences
from neurosel.synth.voices import Speaker, assign_speakers, engine_weights, speaker_pool

BABBLE = "babble"


@dataclass
class Utterance:
    """One planned utterance; ``params`` are the drawn condition parameters (JSON-able)."""

    split: str
    index: int
    speaker: Speaker
    text: str
    condition: str  # clean, babble_source, or one of config.CONDITIONS
    params: dict[str, float | str | list[int]] = field(default_factory=dict)
    speed_factors: tuple[float, ...] = ()  # extra speed-perturbed copies (train only)

    @property
    def utt_id(self) -> str:
        """``<speaker>-<split>-<index>``: prefixed by the speaker id, unique across splits."""
        return f"{self.speaker.id}-{self.split}-{self.index:05d}"


@dataclass
class CorpusPlan:
    """Every split's utterances in order, and the LM text."""

    splits: dict[str, list[Utterance]]
    lm_text: list[str]


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """A generator determined by ``seed`` and ``keys`` (strings hashed with CRC-32)."""
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else k for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def split_names(cfg: CorpusConfig) -> list[str]:
    """The Kaldi data dirs the corpus has: train, dev, test, then ood_adapt_<c>, ood_<c> per condition."""
    names = ["train", "dev", "test"]
    for c in cfg.conditions:
        names += [f"ood_adapt_{c}", f"ood_{c}"]
    return names


def plan_corpus(cfg: CorpusConfig, grammar: Grammar) -> CorpusPlan:
    """The full plan: utterances of every split (plus ``babble`` sources when needed)."""
    sizes = cfg.sizes
    text_rng = rng_for(cfg.seed, "text")
    used: set[str] = set()

    def draw(n: int) -> list[str]:
        return draw_sentences(grammar, n, text_rng, used, cfg.text.min_words, cfg.text.max_words)

    test_text, dev_text = draw(sizes.test), draw(sizes.dev)
    ood_text = {c: (draw(sizes.ood_adapt), draw(sizes.ood_test)) for c in cfg.conditions}
    noisy = {"noise", "reverb_noise"} & set(cfg.conditions)
    babble_text = draw(sizes.babble_sources) if noisy else []
    train_text = draw(sizes.train)
    lm_text = train_text + draw(max(0, cfg.text.lm_sentences - sizes.train))

    weights = engine_weights(cfg.voices)
    seen, unseen = speaker_pool(cfg.voices, unseen=False), speaker_pool(cfg.voices, unseen=True)
    per_spk = cfg.utts_per_speaker

    def speakers(split: str, pool: dict[str, list[Speaker]], n: int, per_speaker: int = per_spk) -> list[Speaker]:
        return assign_speakers(pool, weights, n, per_speaker, rng_for(cfg.seed, split, "speakers"))

    train_spk = speakers("train", seen, sizes.train)
    train_pool = {e: sorted({s for s in train_spk if s.engine == e}, key=lambda s: s.id) for e in seen}
    # In-domain test: the voices train used, spoken by pseudo-speakers (speed x pitch) train never
    # had; an engine whose pool train used up lends its training speakers instead.
    train_voices = {s.voice for s in train_spk}
    heldout_pool = {e: [s for s in seen[e] if s.voice in train_voices and s not in train_spk] or train_pool[e]
                    for e in seen}
    factors = tuple(cfg.speed_perturb.factors) if cfg.speed_perturb.enabled else ()
    splits = {
        "train": _utterances(cfg, "train", train_text, train_spk, "clean", factors),
        "dev": _utterances(cfg, "dev", dev_text, speakers("dev", train_pool, sizes.dev), "clean"),
        "test": _utterances(cfg, "test", test_text, speakers("test", heldout_pool, sizes.test), "clean"),
    }
    for c in cfg.conditions:
        adapt_text, eval_text = ood_text[c]
        spk = speakers(f"ood_{c}", unseen, len(adapt_text) + len(eval_text))
        splits[f"ood_adapt_{c}"] = _utterances(cfg, f"ood_adapt_{c}", adapt_text, spk[: len(adapt_text)], c)
        splits[f"ood_{c}"] = _utterances(cfg, f"ood_{c}", eval_text, spk[len(adapt_text):], c)
    if babble_text:
        # one sentence per babble talker: as many different voices as the pool allows
        splits[BABBLE] = _utterances(cfg, BABBLE, babble_text, speakers(BABBLE, seen, len(babble_text), 1),
                                     "babble_source")
    return CorpusPlan(splits, lm_text)


def _utterances(cfg: CorpusConfig, split: str, texts: list[str], speakers: list[Speaker], condition: str,
                speed_factors: tuple[float, ...] = ()) -> list[Utterance]:
    return [Utterance(split, i, spk, text, condition, draw_params(cfg, condition, rng_for(cfg.seed, split, i, 0)),
                      speed_factors)
            for i, (text, spk) in enumerate(zip(texts, speakers))]


def draw_params(cfg: CorpusConfig, condition: str, rng: np.random.Generator) -> dict[str, float | str | list[int]]:
    """The scalar parameters of one utterance: level, silences, noise floor, and the condition's own."""

    def uniform(bounds: list[float]) -> float:
        return round(float(rng.uniform(bounds[0], bounds[1])), 3)

    a = cfg.audio
    if condition == "babble_source":
        return {"level_dbfs": -26.0}
    params: dict[str, float | str | list[int]] = {
        "level_dbfs": uniform(a.level_dbfs), "lead_s": uniform(a.silence_s), "trail_s": uniform(a.silence_s),
        "floor_snr_db": uniform(a.floor_snr_db), "floor_alpha": uniform(a.floor_alpha),
    }
    if condition in ("reverb", "reverb_noise"):
        r = cfg.reverb
        params |= {"t60_s": uniform(r.t60_s), "drr_db": uniform(r.drr_db), "predelay_ms": uniform(r.predelay_ms)}
    if condition in ("noise", "reverb_noise"):
        noise = cfg.noise if condition == "noise" else cfg.reverb_noise
        params["snr_db"] = uniform(noise.snr_db)
        if rng.random() < noise.babble_share:
            lo, hi = noise.babble_talkers
            talkers = int(rng.integers(lo, hi + 1))
            chosen = rng.choice(cfg.sizes.babble_sources, size=min(talkers, cfg.sizes.babble_sources), replace=False)
            params |= {"noise_type": "babble", "babble_sources": sorted(int(i) for i in chosen)}
        else:
            params |= {"noise_type": "coloured", "noise_alpha": uniform(noise.alpha)}
    if condition == "telephone":
        params["codec"] = cfg.telephone.codecs[int(rng.integers(len(cfg.telephone.codecs)))]
    return params
