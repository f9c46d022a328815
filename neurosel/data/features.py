"""Stage 1: log-mel filterbank features with Lhotse, stored with Lilcom, and global CMVN.

Outputs under ``<fbank_dir>``: ``cuts_<split>.jsonl.gz`` (cuts with features attached),
``feats_<split>/<job>.<tag>.lca`` (Lilcom chunky storage, one file per job; ``tag`` names the
stage's config and inputs, so that a redo writes new files and never rewrites the ones that the
manifests of an earlier run point into; the merge deletes them once the new manifests are in
place), ``cmvn.npz`` (``mean``, ``std`` over the training features, float64), and with
``write_kaldi`` also ``kaldi/<split>/feats.{ark,scp}`` via kaldiio.
Lhotse's torch Fbank was measured at about 1700x real time on one core here, about three times
kaldi-native-fbank's speed through its Python frame loop, so it is the extractor. It runs in
one process with one torch thread: on these short FFTs a second intra-op thread made it six times
slower, and Lhotse's process pool (spawned workers, each re-importing torch) was slower still;
large corpora fan out over jobs instead (``steps/make_fbank.sh --nj``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import kaldiio
import numpy as np
from lhotse import CutSet, Fbank, FbankConfig, LilcomChunkyWriter, load_manifest

from neurosel.data.batches import load_cmvn
from neurosel.errors import NeuroselError
from neurosel.io import atomic_path
from neurosel.recipe import layout

log = logging.getLogger(__name__)


@dataclass
class FeatureConfig:
    """Stage 1 configuration (``conf/features.yaml``)."""

    num_mel_bins: int = 80
    frame_shift: float = 0.01
    frame_length: float = 0.025
    dither: float = 0.0
    write_kaldi: bool = False
    cmvn_split: str = "train"
    # another recipe's cmvn.npz to use instead of computing one from cmvn_split: a model trained
    # there (stage 3's init) must see its input normalised the same way here
    cmvn_from: str = ""


def extractor(cfg: FeatureConfig, sampling_rate: int) -> Fbank:
    """The Lhotse Fbank extractor for ``cfg``."""
    return Fbank(
        FbankConfig(
            sampling_rate=sampling_rate,
            num_filters=cfg.num_mel_bins,
            frame_shift=cfg.frame_shift,
            frame_length=cfg.frame_length,
            dither=cfg.dither,
        )
    )


def storage_name(job: int, tag: str = "") -> str:
    """File name of job ``job``'s feature storage: ``<job>.<tag>.lca`` (``<job>.lca`` untagged)."""
    return f"{job}.{tag}.lca" if tag else f"{job}.lca"


def compute_share(cuts: CutSet, cfg: FeatureConfig, fbank_dir: Path, split: str, job: int, num_jobs: int,
                  progress: bool = False, tag: str = "") -> Path:
    """Job ``job`` (1-based) of ``num_jobs``: compute and store the features of every
    ``num_jobs``-th cut of ``split`` into ``feats_<split>/<storage_name(job, tag)>``; write the
    cuts to ``parts/cuts_<split>.<job>.jsonl.gz`` atomically and return that path.

    The job's storage file is rewritten from scratch, so a killed earlier run leaves no partial
    chunks that the new manifest could point into.
    """
    if len(cuts) == 0:
        raise NeuroselError(f"split '{split}' has no cuts")
    ids = sorted(cuts.ids)[job - 1 :: num_jobs]
    lca = fbank_dir / f"feats_{split}" / storage_name(job, tag)
    storage = lca.with_name(lca.name[: -len(".lca")])  # Lhotse appends .lca
    storage.parent.mkdir(parents=True, exist_ok=True)
    lca.unlink(missing_ok=True)
    with_feats = cuts.subset(cut_ids=ids).compute_and_store_features(
        extractor=extractor(cfg, cuts[0].sampling_rate),
        storage_path=storage,
        num_jobs=1,
        storage_type=LilcomChunkyWriter,
        progress_bar=progress,
    ).to_eager()
    part = layout.cuts_part_path(fbank_dir, split, job)
    with atomic_path(part) as tmp:
        with_feats.to_file(tmp)
    return part


def merge_shares(cfg: FeatureConfig, fbank_dir: Path, split: str, num_jobs: int) -> CutSet:
    """Join the jobs' parts of ``split`` into ``cuts_<split>.jsonl.gz`` (sorted by id)."""
    parts = []
    for job in range(1, num_jobs + 1):
        path = layout.cuts_part_path(fbank_dir, split, job)
        if not path.is_file():
            raise NeuroselError(f"{path}: missing (feature job {job} of {num_jobs} did not finish)")
        parts.extend(load_manifest(path, CutSet))
    cuts = CutSet.from_cuts(sorted(parts, key=lambda c: c.id))
    with atomic_path(layout.cuts_path(fbank_dir, split)) as tmp:
        cuts.to_file(tmp)
    if cfg.write_kaldi:
        write_kaldi_feats(cuts, fbank_dir / "kaldi" / split)
    return cuts


def write_kaldi_feats(cuts: CutSet, out_dir: Path) -> None:
    """Write ``feats.ark`` + ``feats.scp`` (Kaldi float matrices) with kaldiio, atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ark, scp = out_dir / "feats.ark", out_dir / "feats.scp"
    with atomic_path(ark) as tmp_ark, atomic_path(scp) as tmp_scp:
        with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
            for cut in cuts:
                writer(cut.id, cut.load_features())
        # the scp names the temporary ark; point it at the final name
        tmp_scp.write_text(tmp_scp.read_text().replace(str(tmp_ark), str(ark)))


def copy_cmvn(source: Path, path: Path, num_mel_bins: int) -> None:
    """``source`` (another recipe's ``cmvn.npz``), checked to hold valid statistics of
    ``num_mel_bins`` features, copied to ``path``."""
    mean, _ = load_cmvn(source)
    if mean.numel() != num_mel_bins:
        raise NeuroselError(f"{source}: CMVN of {mean.numel()} features, this recipe computes {num_mel_bins} "
                            "(num_mel_bins must match the recipe the statistics come from)")
    with atomic_path(path) as tmp:
        shutil.copyfile(source, tmp)
    log.info("CMVN statistics copied from %s (cmvn_from)", source)


def compute_cmvn(cuts: CutSet, path: Path) -> dict[str, np.ndarray]:
    """Global mean and standard deviation of the features of ``cuts``, saved to ``path`` (npz)."""
    total = None
    sq = None
    frames = 0
    for cut in cuts:
        feats = cut.load_features().astype(np.float64)
        total = feats.sum(0) if total is None else total + feats.sum(0)
        sq = (feats**2).sum(0) if sq is None else sq + (feats**2).sum(0)
        frames += feats.shape[0]
    if frames == 0 or total is None or sq is None:
        raise NeuroselError(f"{path}: no frames to compute CMVN from")
    mean = total / frames
    std = np.sqrt(np.maximum(sq / frames - mean**2, 1e-10))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, mean=mean, std=std, frames=np.array(frames))
    return {"mean": mean, "std": std}


def split_names(manifest_dir: Path) -> list[str]:
    """The splits stage 0 wrote (``manifests/cuts_<split>.jsonl.gz``)."""
    names = layout.splits(manifest_dir)
    if not names:
        raise NeuroselError(f"{manifest_dir}: no {layout.cuts_name('*')} (run stage 0)")
    return names


def compute_job(cfg: FeatureConfig, manifest_dir: str | Path, fbank_dir: str | Path, job: int, num_jobs: int,
                progress: bool = False, tag: str = "") -> None:
    """Stage 1, job ``job`` of ``num_jobs``: its share of every split (storage named with ``tag``)."""
    import torch

    torch.set_num_threads(1)
    manifest_dir, fbank_dir = Path(manifest_dir), Path(fbank_dir)
    for split in split_names(manifest_dir):
        cuts = load_manifest(layout.cuts_path(manifest_dir, split), CutSet)
        compute_share(cuts, cfg, fbank_dir, split, job, num_jobs, progress, tag)


def merge_jobs(cfg: FeatureConfig, manifest_dir: str | Path, fbank_dir: str | Path, num_jobs: int,
               tag: str = "") -> None:
    """Stage 1 after its jobs: one manifest per split and the CMVN statistics; then delete the
    feature storage that no manifest points into any more (earlier runs', other tags)."""
    manifest_dir, fbank_dir = Path(manifest_dir), Path(fbank_dir)
    splits = split_names(manifest_dir)
    if cfg.cmvn_split not in splits:
        raise NeuroselError(f"CMVN split '{cfg.cmvn_split}' is not among the splits ({', '.join(splits)})")
    for split in splits:
        cuts = merge_shares(cfg, fbank_dir, split, num_jobs)
        log.info("features for %s: %d cuts", split, len(cuts))
        if split == cfg.cmvn_split and not cfg.cmvn_from:
            compute_cmvn(cuts, layout.cmvn_path(fbank_dir))
    if cfg.cmvn_from:
        copy_cmvn(Path(cfg.cmvn_from), layout.cmvn_path(fbank_dir), cfg.num_mel_bins)
    current = {storage_name(job, tag) for job in range(1, num_jobs + 1)}
    for split in splits:
        for old in (fbank_dir / f"feats_{split}").glob("*.lca"):
            if old.name not in current:
                old.unlink()
    shutil.rmtree(layout.parts_dir(fbank_dir), ignore_errors=True)
