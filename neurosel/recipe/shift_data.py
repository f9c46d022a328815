"""Audio for the shift command (``neurosel.recipe.shift``): any unlabeled Kaldi data dir or Lhotse
cut set, turned into cuts with features computed exactly as stage 1 computed the recipe's.

- A Kaldi data dir needs ``wav.scp`` (files or pipe commands ``cmd ... |``) and may have
  ``segments``; ``text`` and ``utt2spk`` are neither needed nor read. It is checked like stage 0's
  input (``neurosel.data.prepare.import_kaldi_dir``: sorted unique ids, readable audio of the
  recipe's sample rate, neither truncated nor practically silent, durations within the recipe's
  limits) and imported with Lhotse; one cut per utterance.
- A cut set (``*.jsonl.gz``, e.g. ``data/fbank/cuts_<set>.jsonl.gz``) is used as it is when every
  cut has features; otherwise the features of all its cuts are computed from their recordings.

Features come from ``neurosel.data.features`` (Lhotse's Fbank with the settings stage 1 saved in
``data/fbank/features.yaml``, stored with Lilcom as stage 1 stores them) into a scratch folder the
caller owns and deletes. Transcripts are never read.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lhotse import CutSet, LilcomChunkyWriter, load_manifest

from neurosel.config import from_dict, load_yaml
from neurosel.data.features import FeatureConfig, extractor
from neurosel.data.kaldi_dir import AudioCheck, read_table
from neurosel.data.prepare import PrepareConfig, import_kaldi_dir
from neurosel.errors import NeuroselError

# What the validation of a Kaldi data dir needs and an unlabeled dir need not have: the staging copy
# gets one placeholder word per utterance (never read) and each utterance as its own speaker.
_PLACEHOLDER = "<unlabeled>"


def feature_config(path: Path) -> FeatureConfig:
    """Stage 1's resolved ``features.yaml``."""
    return from_dict(FeatureConfig, load_yaml(path), str(path))


def audio_check(path: Path) -> AudioCheck:
    """The audio limits of stage 0's resolved ``prepare.yaml``."""
    cfg = from_dict(PrepareConfig, load_yaml(path), str(path))
    return AudioCheck(cfg.sampling_rate, cfg.min_duration, cfg.max_duration, cfg.min_peak_dbfs)


def kaldi_cuts(data_dir: Path, check: AudioCheck) -> CutSet:
    """The utterances of an unlabeled Kaldi data dir as cuts without features (see the module
    docs). ``NeuroselError`` naming the file for a missing or empty ``wav.scp`` and for every
    problem stage 0 would refuse."""
    wav_scp = data_dir / "wav.scp"
    if not wav_scp.is_file():
        raise NeuroselError(f"{wav_scp}: no such file ({data_dir} is not a Kaldi data dir)")
    recordings = read_table(wav_scp)
    if not recordings:
        raise NeuroselError(f"{wav_scp}: empty data dir (no recordings)")
    segments = data_dir / "segments"
    utterances = list(read_table(segments)) if segments.is_file() else list(recordings)
    if not utterances:
        raise NeuroselError(f"{segments}: empty data dir (no utterances)")
    with tempfile.TemporaryDirectory(prefix="shift_kaldi.") as tmp:
        staging = Path(tmp)
        for name in ("wav.scp", "segments"):
            if (data_dir / name).is_file():
                os.symlink((data_dir / name).resolve(), staging / name)
        (staging / "text").write_text("".join(f"{u} {_PLACEHOLDER}\n" for u in utterances), encoding="utf-8")
        (staging / "utt2spk").write_text("".join(f"{u} {u}\n" for u in utterances), encoding="utf-8")
        try:
            recs, sups = import_kaldi_dir(staging, check)
        except NeuroselError as e:  # name the user's files, not the staging copy
            raise NeuroselError(str(e).replace(str(staging), str(data_dir))) from e
    return CutSet.from_manifests(recordings=recs, supervisions=sups).trim_to_supervisions(
        keep_overlapping=False).to_eager()


def manifest_cuts(path: Path) -> CutSet:
    """A Lhotse cut set manifest, eagerly; ``NeuroselError`` naming it if it is not one or is empty."""
    try:
        cuts = load_manifest(path)
    except Exception as e:  # Lhotse raises several types for a file that is not a manifest
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NeuroselError(f"{path}: not a Lhotse manifest ({first})") from e
    if not isinstance(cuts, CutSet):
        raise NeuroselError(f"{path}: a {type(cuts).__name__}, not a cut set")
    cuts = cuts.to_eager()
    if len(cuts) == 0:
        raise NeuroselError(f"{path}: empty cut set (no cuts)")
    return cuts


def with_features(cuts: CutSet, cfg: FeatureConfig, scratch: Path, where: Path) -> CutSet:
    """``cuts`` with stage 1's features: as they are when every cut has features, else computed
    for all of them into ``scratch``."""
    if all(c.has_features for c in cuts):
        return cuts
    if not all(c.has_recording for c in cuts):
        bare = next(c for c in cuts if not c.has_recording)
        raise NeuroselError(f"{where}: cut '{bare.id}' has neither features nor a recording")
    rates = sorted({c.sampling_rate for c in cuts})
    if len(rates) > 1:
        raise NeuroselError(f"{where}: cuts of several sample rates ({', '.join(map(str, rates))} Hz)")
    return cuts.compute_and_store_features(extractor=extractor(cfg, rates[0]), storage_path=scratch / "feats",
                                           num_jobs=1, storage_type=LilcomChunkyWriter,
                                           progress_bar=False).to_eager()


def load_audio(source: Path, features_yaml: Path, prepare_yaml: Path, scratch: Path) -> CutSet:
    """Cuts with features of ``source``, a Kaldi data dir or a cut set manifest (module docs)."""
    if source.is_dir():
        cuts = kaldi_cuts(source, audio_check(prepare_yaml))
    elif source.is_file():
        cuts = manifest_cuts(source)
    else:
        raise NeuroselError(f"{source}: no such Kaldi data dir or cut set")
    return with_features(cuts, feature_config(features_yaml), scratch, source)
