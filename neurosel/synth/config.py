"""Configuration of the synthetic corpus (``egs/synth/conf/corpus.yaml``), with validation that
names the offending key. Ranges are ``[low, high]`` lists; each utterance draws uniformly in them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neurosel.errors import NeuroselError
from neurosel.synth.voices import VoiceConfig, check_voice_config

CONDITIONS = ("noise", "telephone", "reverb", "reverb_noise")
CODECS = ("mulaw", "gsm")
SHIPPED_GRAMMAR = Path(__file__).resolve().parents[2] / "local" / "synth_text" / "grammar.txt"


@dataclass
class TextConfig:
    """Where sentences come from and how long they may be."""

    grammar: str | None = None  # default: local/synth_text/grammar.txt of this repository
    min_words: int = 4
    max_words: int = 12
    lm_sentences: int = 20000  # sentences in lm_text.txt: train's plus new ones, none of dev/test/OOD


@dataclass
class SplitSizes:
    """Utterances per split (train before speed perturbation); OOD sizes are per condition."""

    train: int = 2000
    dev: int = 200
    test: int = 200
    ood_adapt: int = 300
    ood_test: int = 200
    babble_sources: int = 60  # clean utterances the babble noise is built from


@dataclass
class AudioConfig:
    """What every utterance gets: level, leading/trailing silence, a coloured noise floor."""

    level_dbfs: list[float] = field(default_factory=lambda: [-32.0, -20.0])
    silence_s: list[float] = field(default_factory=lambda: [0.05, 0.3])
    floor_snr_db: list[float] = field(default_factory=lambda: [35.0, 50.0])
    floor_alpha: list[float] = field(default_factory=lambda: [0.0, 1.0])


@dataclass
class SpeedPerturbConfig:
    """Kaldi-style speed-perturbed copies of the training set."""

    enabled: bool = True
    factors: list[float] = field(default_factory=lambda: [0.9, 1.1])


@dataclass
class NoiseConfig:
    """Additive noise: babble (other synthetic talkers) or coloured Gaussian noise."""

    snr_db: list[float] = field(default_factory=lambda: [15.0, 25.0])
    babble_share: float = 0.5  # probability that an utterance gets babble rather than coloured noise
    babble_talkers: list[int] = field(default_factory=lambda: [3, 6])
    alpha: list[float] = field(default_factory=lambda: [0.0, 2.0])  # 1/f^alpha: 0 white, 1 pink, 2 brown


@dataclass
class ReverbConfig:
    """Synthetic room impulse responses (direct path kept)."""

    t60_s: list[float] = field(default_factory=lambda: [0.2, 0.5])
    drr_db: list[float] = field(default_factory=lambda: [2.0, 10.0])
    predelay_ms: list[float] = field(default_factory=lambda: [1.0, 8.0])


@dataclass
class TelephoneConfig:
    """Telephone channel: band-pass, 8 kHz, a codec drawn per utterance from ``codecs``."""

    band_hz: list[float] = field(default_factory=lambda: [200.0, 3700.0])
    codecs: list[str] = field(default_factory=lambda: ["mulaw"])


@dataclass
class CorpusConfig:
    """The whole synthetic corpus: sizes, text, voices, and the acoustic conditions."""

    seed: int = 0
    conditions: list[str] = field(default_factory=lambda: list(CONDITIONS))
    sizes: SplitSizes = field(default_factory=SplitSizes)
    utts_per_speaker: int = 10
    text: TextConfig = field(default_factory=TextConfig)
    voices: VoiceConfig = field(default_factory=VoiceConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    speed_perturb: SpeedPerturbConfig = field(default_factory=SpeedPerturbConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    reverb: ReverbConfig = field(default_factory=ReverbConfig)
    reverb_noise: NoiseConfig = field(default_factory=lambda: NoiseConfig(snr_db=[20.0, 30.0]))
    telephone: TelephoneConfig = field(default_factory=TelephoneConfig)

    def grammar_path(self) -> Path:
        """The grammar file: ``text.grammar`` (relative to the working directory) or the shipped one."""
        return Path(self.text.grammar) if self.text.grammar else SHIPPED_GRAMMAR


def check_config(cfg: CorpusConfig) -> None:
    """Raise ``NeuroselError`` naming the key of the first invalid value in ``cfg``."""
    if cfg.seed < 0:
        raise NeuroselError(f"seed: must be >= 0, got {cfg.seed}")
    for c in cfg.conditions:
        if c not in CONDITIONS:
            raise NeuroselError(f"conditions: unknown condition '{c}' (known: {', '.join(CONDITIONS)})")
    if len(set(cfg.conditions)) != len(cfg.conditions):
        raise NeuroselError(f"conditions: listed twice in {cfg.conditions}")
    for key in ("train", "dev", "test", "ood_adapt", "ood_test"):
        if getattr(cfg.sizes, key) < 1:
            raise NeuroselError(f"sizes.{key}: must be >= 1, got {getattr(cfg.sizes, key)}")
    if cfg.sizes.babble_sources < 1 and {"noise", "reverb_noise"} & set(cfg.conditions):
        raise NeuroselError("sizes.babble_sources: must be >= 1 when a noise condition is generated")
    if cfg.utts_per_speaker < 1:
        raise NeuroselError(f"utts_per_speaker: must be >= 1, got {cfg.utts_per_speaker}")
    if not 1 <= cfg.text.min_words <= cfg.text.max_words:
        raise NeuroselError(f"text.min_words/text.max_words: need 1 <= min <= max, got "
                            f"{cfg.text.min_words}, {cfg.text.max_words}")
    if cfg.text.lm_sentences < 0:
        raise NeuroselError(f"text.lm_sentences: must be >= 0, got {cfg.text.lm_sentences}")
    ranges = {
        "audio.level_dbfs": (cfg.audio.level_dbfs, -60, -6), "audio.silence_s": (cfg.audio.silence_s, 0, 5),
        "audio.floor_snr_db": (cfg.audio.floor_snr_db, 10, 80), "audio.floor_alpha": (cfg.audio.floor_alpha, 0, 2),
        "reverb.t60_s": (cfg.reverb.t60_s, 0.05, 3), "reverb.drr_db": (cfg.reverb.drr_db, -20, 40),
        "reverb.predelay_ms": (cfg.reverb.predelay_ms, 0, 100),
        "telephone.band_hz": (cfg.telephone.band_hz, 0, 4000),
    }
    for name in ("noise", "reverb_noise"):
        noise: NoiseConfig = getattr(cfg, name)
        ranges[f"{name}.snr_db"] = (noise.snr_db, -20, 80)
        ranges[f"{name}.alpha"] = (noise.alpha, 0, 2)
        ranges[f"{name}.babble_talkers"] = (noise.babble_talkers, 1, 50)
        if not 0 <= noise.babble_share <= 1:
            raise NeuroselError(f"{name}.babble_share: must be in [0, 1], got {noise.babble_share}")
    for key, (values, low, high) in ranges.items():
        if len(values) != 2 or not low <= values[0] <= values[1] <= high:
            raise NeuroselError(f"{key}: expected [low, high] with {low} <= low <= high <= {high}, got {values}")
    if cfg.telephone.band_hz[0] >= cfg.telephone.band_hz[1]:
        raise NeuroselError(f"telephone.band_hz: low must be below high, got {cfg.telephone.band_hz}")
    if not cfg.telephone.codecs or any(c not in CODECS for c in cfg.telephone.codecs):
        raise NeuroselError(f"telephone.codecs: expected a non-empty list of {', '.join(CODECS)}, "
                            f"got {cfg.telephone.codecs}")
    if any(not 0.5 <= f <= 2 or f == 1 for f in cfg.speed_perturb.factors):
        raise NeuroselError(f"speed_perturb.factors: expected factors in [0.5, 2] other than 1, "
                            f"got {cfg.speed_perturb.factors}")
    check_voice_config(cfg.voices)
