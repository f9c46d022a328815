"""Severity sets (issue 18 part 2, opt-in): the in-domain ``test`` utterances degraded at graded
severities, so that the shift command's WER predictor is fitted and judged on tens of sets, not on
the recipe's five test sets.

``build_severity_sets(workdir, config)`` reads a recipe run through stage 4 and writes, for every
set ``sev_<c>.<level>`` (``neurosel.recipe.layout``) of ``conf/severity.yaml`` (``SeverityConfig``):

- ``data/severity/wav/<set>/<utt>.wav``: each ``test`` utterance (stage 0's cuts) through the
  condition, with the degradation code of the synthetic corpus (``neurosel.synth.conditions``):
  ``noise`` babble (of ``dev`` utterances, never ``test``'s) or coloured noise at one SNR per set;
  ``reverb`` a synthetic RIR of one T60 per set (DRR and pre-delay drawn per utterance), level
  restored; ``telephone`` one band and codec per set; ``reverb_noise`` one (T60, SNR) pair per set.
  Randomness comes from (seed, the set's name, utterance), so a set renders the same bytes in any
  order and whichever other sets the config lists;
- ``data/severity/fbank/cuts_<set>.jsonl.gz`` and its features, computed with stage 1's settings
  (``features.yaml``) and normalised at decoding with stage 1's CMVN (``cmvn.npz``, copied there);
  utterance ids are ``<set>-<test utterance>`` so that they are unique over all the sets;
- ``exp/shift/severity/decode/<set>/``: the baseline's decode (stage 4's tuned ``decode.yaml``:
  LM weight and blank penalty chosen on dev), scored against the test transcripts.

A set whose cuts marker matches its config and inputs is not rebuilt, and a decode that is up to
date is not redone (``neurosel.decode.stage``). The sets never enter a stage's list of test sets
(``layout.test_sets`` lists ``ood_<c>``, not ``sev_<c>.<level>``), so the default run neither
decodes nor reports them.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import soundfile as sf
import torch
from lhotse import CutSet, LilcomChunkyWriter, Recording, SupervisionSegment
from lhotse.cut import MonoCut

from neurosel import config as C
from neurosel.decode import stage as decode_stage
from neurosel.errors import NeuroselError
from neurosel.io import atomic_path
from neurosel.recipe import layout
from neurosel.recipe.shift_data import feature_config
from neurosel.data.features import extractor
from neurosel.stage import fingerprint, run_once, status
from neurosel.synth import conditions as cond

log = logging.getLogger(__name__)


@dataclass
class NoiseLevels:
    """``noise``: one set per SNR; babble of ``babble_talkers`` dev utterances with probability
    ``babble_share``, else coloured noise 1/f^alpha, alpha drawn in ``alpha``."""

    snr_db: list[float] = field(default_factory=lambda: [30.0, 25.0, 20.0, 15.0, 10.0, 5.0])
    babble_share: float = 0.5
    babble_talkers: list[int] = field(default_factory=lambda: [3, 6])
    alpha: list[float] = field(default_factory=lambda: [0.0, 2.0])


@dataclass
class ReverbLevels:
    """``reverb``: one set per T60; DRR and pre-delay drawn per utterance in their ranges."""

    t60_s: list[float] = field(default_factory=lambda: [0.2, 0.35, 0.5, 0.7, 0.9, 1.2])
    drr_db: list[float] = field(default_factory=lambda: [2.0, 10.0])
    predelay_ms: list[float] = field(default_factory=lambda: [1.0, 8.0])


@dataclass
class TelephoneVariant:
    """One telephone set: band-pass ``low_hz``-``high_hz``, 8 kHz, ``codec``."""

    low_hz: float
    high_hz: float
    codec: Literal["mulaw", "gsm"]


@dataclass
class ReverbNoisePair:
    """One ``reverb_noise`` set: reverb of ``t60_s`` then noise at ``snr_db``."""

    t60_s: float
    snr_db: float


@dataclass
class SeverityConfig:
    """``conf/severity.yaml``: the sets to build; an empty list builds none of that condition."""

    seed: int = 0
    source: str = layout.TEST
    babble_source: str = layout.DEV
    noise: NoiseLevels = field(default_factory=NoiseLevels)
    reverb: ReverbLevels = field(default_factory=ReverbLevels)
    telephone: list[TelephoneVariant] = field(default_factory=lambda: [
        TelephoneVariant(200, 3700, "mulaw"), TelephoneVariant(300, 3400, "mulaw"),
        TelephoneVariant(500, 3000, "mulaw"), TelephoneVariant(200, 3700, "gsm"),
        TelephoneVariant(300, 3400, "gsm"), TelephoneVariant(500, 3000, "gsm")])
    reverb_noise: list[ReverbNoisePair] = field(default_factory=lambda: [
        ReverbNoisePair(0.35, 25.0), ReverbNoisePair(0.5, 20.0), ReverbNoisePair(0.7, 15.0)])


@dataclass(frozen=True)
class SeveritySet:
    """One set to build: its name, condition and the degradation parameters fixed for the set."""

    name: str
    condition: str
    params: dict[str, Any]


def _level(x: float) -> str:
    return f"{x:g}".replace(".", "_").replace("-", "m")


def plan(cfg: SeverityConfig) -> list[SeveritySet]:
    """Every set of ``cfg``, in config order."""
    out = [SeveritySet(layout.severity_set("noise", f"snr{_level(s)}"), "noise", {"snr_db": float(s)})
           for s in cfg.noise.snr_db]
    out += [SeveritySet(layout.severity_set("reverb", f"t60_{_level(t)}"), "reverb", {"t60_s": float(t)})
            for t in cfg.reverb.t60_s]
    out += [SeveritySet(layout.severity_set("telephone", f"{v.codec}_{_level(v.low_hz)}_{_level(v.high_hz)}"),
                        "telephone", {"low_hz": float(v.low_hz), "high_hz": float(v.high_hz), "codec": v.codec})
            for v in cfg.telephone]
    out += [SeveritySet(layout.severity_set("reverb_noise", f"t60_{_level(p.t60_s)}_snr{_level(p.snr_db)}"),
                        "reverb_noise", {"t60_s": float(p.t60_s), "snr_db": float(p.snr_db)}) for p in cfg.reverb_noise]
    names = [s.name for s in out]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise NeuroselError(f"severity config: set {duplicate} is listed twice")
    return out


def _noise(x: np.ndarray, snr_db: float, cfg: NoiseLevels, babble: list[np.ndarray],
           rng: np.random.Generator) -> np.ndarray:
    if rng.random() < cfg.babble_share:
        talkers = int(rng.integers(cfg.babble_talkers[0], cfg.babble_talkers[1] + 1))
        picks = rng.choice(len(babble), size=min(talkers, len(babble)), replace=False)
        noise = cond.babble([babble[i] for i in picks], len(x), rng)
    else:
        noise = cond.coloured_noise(len(x), float(rng.uniform(*cfg.alpha)), rng)
    return cond.mix_at_snr(x, noise, snr_db)


def _reverb(x: np.ndarray, t60_s: float, cfg: ReverbLevels, rng: np.random.Generator) -> np.ndarray:
    rir = cond.room_impulse_response(t60_s, float(rng.uniform(*cfg.drr_db)), float(rng.uniform(*cfg.predelay_ms)),
                                     rng)
    level_dbfs = 10 * np.log10(cond.active_level(x))
    return cond.set_level(cond.reverberate(x, rir), level_dbfs)


def degrade(x: np.ndarray, s: SeveritySet, cfg: SeverityConfig, babble: list[np.ndarray],
            rng: np.random.Generator) -> np.ndarray:
    """``x`` (16 kHz float, shape ``(n,)``) through set ``s``'s condition, peak-limited."""
    p = s.params
    if s.condition in ("reverb", "reverb_noise"):
        x = _reverb(x, float(p["t60_s"]), cfg.reverb, rng)
    if s.condition in ("noise", "reverb_noise"):
        x = _noise(x, float(p["snr_db"]), cfg.noise, babble, rng)
    if s.condition == "telephone":
        x = cond.telephone(x, str(p["codec"]), float(p["low_hz"]), float(p["high_hz"]))
    return cond.peak_limit(x)


def _audio(cut: MonoCut) -> np.ndarray:
    if cut.sampling_rate != cond.SAMPLE_RATE:
        raise NeuroselError(f"cut '{cut.id}': {cut.sampling_rate} Hz audio, the severity sets need "
                            f"{cond.SAMPLE_RATE} Hz")
    return cut.load_audio()[0].astype(np.float64)


def render_set(s: SeveritySet, cfg: SeverityConfig, source: CutSet, babble: list[np.ndarray],
               wav_dir: Path) -> CutSet:
    """Write set ``s``'s wavs into ``wav_dir`` (each atomically) and return its cuts, without
    features, carrying the source cuts' transcripts (for scoring only)."""
    cuts = []
    for k, cut in enumerate(sorted(source, key=lambda c: c.id)):
        rng = np.random.default_rng([cfg.seed, zlib.crc32(s.name.encode()), k])
        utt = f"{s.name}-{cut.id}"
        path = wav_dir / f"{utt}.wav"
        with atomic_path(path) as tmp:
            sf.write(tmp, cond.to_int16(degrade(_audio(cut), s, cfg, babble, rng)), cond.SAMPLE_RATE,
                     subtype="PCM_16", format="WAV")
        recording = Recording.from_file(path, recording_id=utt)
        sup = cut.supervisions[0]
        supervision = SupervisionSegment(utt, utt, 0.0, recording.duration, text=sup.text, speaker=sup.speaker)
        cuts.append(MonoCut(utt, 0.0, recording.duration, 0, supervisions=[supervision], recording=recording))
    return CutSet.from_cuts(cuts)


@dataclass(frozen=True)
class SeverityFiles:
    """A recipe run's inputs and outputs of the severity sets, under ``workdir``."""

    workdir: Path

    @property
    def data(self) -> Path:
        return layout.severity_data_dir(self.workdir)

    @property
    def fbank(self) -> Path:
        return self.data / "fbank"

    @property
    def exp(self) -> Path:
        return self.workdir / "exp"

    @property
    def decode(self) -> Path:
        return layout.severity_decode_dir(self.exp)

    @property
    def decode_config(self) -> Path:
        """Stage 4's tuned decode config."""
        return layout.decode_dir(self.exp, layout.BASELINE) / "decode.yaml"

    @property
    def model(self) -> Path:
        return layout.baseline_dir(self.exp) / "model.pt"

    @property
    def lang(self) -> Path:
        return self.workdir / "data" / "lang"

    @property
    def stage1(self) -> Path:
        return self.workdir / "data" / "fbank"

    def manifest(self, split: str) -> Path:
        return layout.cuts_path(self.workdir / "data" / "manifests", split)


def load_severity_config(path: str | Path | None) -> SeverityConfig:
    """``conf/severity.yaml`` (the defaults when ``path`` is None)."""
    return SeverityConfig() if path is None else C.from_dict(SeverityConfig, C.load_yaml(path), str(path))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise NeuroselError(f"{path}: no such file ({what})")
    return path


def _set_inputs(files: SeverityFiles, cfg: SeverityConfig) -> list[Path]:
    return [files.manifest(cfg.source), files.manifest(cfg.babble_source), files.stage1 / "features.yaml"]


def _set_config(cfg: SeverityConfig, s: SeveritySet) -> dict[str, Any]:
    """What set ``s``'s audio depends on: its parameters and its condition's shared settings (as
    floats, so that 20 and 20.0 are one level), so that adding or removing another set leaves it
    up to date."""
    shared: dict[str, Any] = {"seed": cfg.seed, "source": cfg.source, "babble_source": cfg.babble_source}
    if s.condition in ("noise", "reverb_noise"):
        shared["noise"] = {"babble_share": float(cfg.noise.babble_share), "alpha": [float(a) for a in cfg.noise.alpha],
                           "babble_talkers": [int(t) for t in cfg.noise.babble_talkers]}
    if s.condition in ("reverb", "reverb_noise"):
        shared["reverb"] = {k: [float(x) for x in getattr(cfg.reverb, k)] for k in ("drr_db", "predelay_ms")}
    return {"set": s.name, "params": s.params, **shared}


def stale(files: SeverityFiles, cfg: SeverityConfig) -> list[str]:
    """The sets whose cuts or decode are missing or not up to date."""
    sets = plan(cfg)
    inputs = _set_inputs(files, cfg)
    out = [s.name for s in sets
           if status(files.data / "marks" / s.name, fingerprint(_set_config(cfg, s), inputs)) != "done"]
    if not (files.fbank / "cmvn.npz").is_file():
        return [s.name for s in sets]
    ready = [s.name for s in sets if s.name not in out]
    decode_cfg = decode_stage.load_decode_config(_require(files.decode_config, "stage 4's tuned decode config"))
    undecoded = decode_stage.stale_sets(decode_cfg, files.model, files.lang, files.fbank, files.decode, ready)
    return out + undecoded


def build_severity_sets(workdir: str | Path, cfg: SeverityConfig, force: bool = False,
                        device: torch.device = decode_stage.CPU) -> list[str]:
    """Render, featurise and decode every set of ``cfg`` that is not up to date (module docs; the
    decoder's forward pass on ``device``). Returns the names of all the sets."""
    files = SeverityFiles(Path(workdir))
    for path, what in ((files.manifest(cfg.source), "stage 0's cuts of the source set"),
                       (files.manifest(cfg.babble_source), "stage 0's cuts of the babble source set"),
                       (files.stage1 / "features.yaml", "stage 1's resolved config"),
                       (layout.cmvn_path(files.stage1), "stage 1's CMVN"), (files.model, "the baseline; run stage 3"),
                       (files.decode_config, "stage 4's tuned decode config; run stage 4")):
        _require(path, what)
    decode_cfg = decode_stage.load_decode_config(files.decode_config)
    sets = plan(cfg)
    source = CutSet.from_file(files.manifest(cfg.source)).to_eager()
    if len(source) == 0:
        raise NeuroselError(f"{files.manifest(cfg.source)}: empty cut set (no cuts)")
    features = feature_config(files.stage1 / "features.yaml")
    files.fbank.mkdir(parents=True, exist_ok=True)
    with atomic_path(layout.cmvn_path(files.fbank)) as tmp:
        shutil.copyfile(layout.cmvn_path(files.stage1), tmp)
    babble: list[np.ndarray] = []
    for s in sets:
        def work(s: SeveritySet = s) -> None:
            if not babble and s.condition in ("noise", "reverb_noise"):
                babble.extend(_audio(c) for c in CutSet.from_file(files.manifest(cfg.babble_source)))
            cuts = render_set(s, cfg, source, babble, files.data / "wav" / s.name)
            storage = files.fbank / f"feats_{s.name}"
            shutil.rmtree(storage, ignore_errors=True)
            with_feats = cuts.compute_and_store_features(
                extractor=extractor(features, cond.SAMPLE_RATE), storage_path=storage, num_jobs=1,
                storage_type=LilcomChunkyWriter, progress_bar=False)
            with atomic_path(layout.cuts_path(files.fbank, s.name)) as tmp:
                with_feats.to_file(tmp)
        run_once(f"severity set {s.name}", files.data / "marks" / s.name, _set_config(cfg, s),
                 _set_inputs(files, cfg), work, force=force)
        if decode_stage.decode_here(decode_cfg, files.model, files.lang, files.fbank, files.decode, [s.name], force,
                                    device):
            log.info("%s: %s", s.name, decode_stage.wer_line(files.decode / s.name))
    return [s.name for s in sets]
