"""Stage 1: ``python -m neurosel.bin.features [--config conf/features.yaml] <data-dir> <fbank-dir>``.

Computes log-mel fbank for every split that stage 0 wrote (``<data-dir>/manifests/cuts_*``),
stores it with Lilcom under ``<fbank-dir>``, and the global CMVN statistics.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurosel import config as C
from neurosel.cli import config_args, run_main, show_progress
from neurosel.data.features import FeatureConfig, compute_features
from neurosel.errors import NeuroselError
from neurosel.stage import run_once


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="features", description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--nj", type=int, default=1, help="parallel feature extraction processes")
    parser.add_argument("--force", action="store_true", help="redo even if up to date")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("fbank_dir", type=Path)
    args = parser.parse_args(argv)
    cfg = C.resolve(FeatureConfig, args.config, args.overlay, "features", args.overrides)
    manifests = args.data_dir / "manifests"
    cut_files = sorted(manifests.glob("cuts_*.jsonl.gz"))
    if not cut_files:
        raise NeuroselError(f"{manifests}: no cuts_*.jsonl.gz (run stage 0)")
    splits = [p.name[len("cuts_"):-len(".jsonl.gz")] for p in cut_files]

    def work() -> None:
        compute_features(cfg, manifests, args.fbank_dir, splits, num_jobs=args.nj,
                         progress=show_progress(args))
        C.save(cfg, args.fbank_dir / "features.yaml")

    run_once("stage 1 (features)", args.fbank_dir, C.to_dict(cfg), cut_files, work, force=args.force)
    return 0


if __name__ == "__main__":
    run_main(main)
