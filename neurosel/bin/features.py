"""Stage 1: log-mel fbank for every split stage 0 wrote, in Kaldi-style jobs:

``python -m neurosel.bin.features compute [cfg] --job J --num-jobs N <data-dir> <fbank-dir>``
    job J of N: features of every N-th cut of each split, stored with Lilcom
``python -m neurosel.bin.features merge [cfg] --num-jobs N <data-dir> <fbank-dir>``
    one ``cuts_<split>.jsonl.gz`` per split, ``cmvn.npz``, the ``.done`` marker
``python -m neurosel.bin.features status [cfg] <data-dir> <fbank-dir>``
    exit 0 if up to date, 3 if not, 1 on an error
``python -m neurosel.bin.features list   [cfg] <data-dir> <fbank-dir>``
    print the splits, one per line
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from neurosel import config as C
from neurosel.cli import config_args, run_main, show_progress
from neurosel.data.features import FeatureConfig, compute_job, merge_jobs, split_names
from neurosel.errors import NeuroselError
from neurosel.recipe import layout
from neurosel.stage import clear, fingerprint, mark_done, status, status_code, why_redo

log = logging.getLogger("neurosel.features")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="features", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["compute", "merge", "status", "list"])
    config_args(parser)
    parser.add_argument("--job", type=int, default=1)
    parser.add_argument("--num-jobs", type=int, default=1)
    parser.add_argument("--force", action="store_true", help="redo even if up to date")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("fbank_dir", type=Path)
    args = parser.parse_args(argv)
    cfg = C.resolve(FeatureConfig, args.config, args.overlay, "features", args.overrides)
    manifests = args.data_dir / "manifests"
    names = split_names(manifests)
    if cfg.cmvn_from and not Path(cfg.cmvn_from).is_file():
        raise NeuroselError(f"{cfg.cmvn_from}: no such file (features config, cmvn_from)")
    digest = fingerprint(C.hashed(cfg, "cmvn_from"), [layout.cuts_path(manifests, n) for n in names]
                         + ([Path(cfg.cmvn_from)] if cfg.cmvn_from else []))

    if args.action == "status":
        state = status(args.fbank_dir, digest)
        return status_code("stage 1 (features)", args.fbank_dir, [] if state == "done" else names,
                           args.force, why_redo(state))
    if args.action == "list":
        print("\n".join(names))
        return 0
    tag = digest[:12]  # the storage of a redo gets new names: earlier manifests stay readable
    if args.action == "compute":
        clear(args.fbank_dir)
        compute_job(cfg, manifests, args.fbank_dir, args.job, args.num_jobs, show_progress(args), tag)
        return 0
    merge_jobs(cfg, manifests, args.fbank_dir, args.num_jobs, tag)
    C.save(cfg, args.fbank_dir / "features.yaml")
    mark_done(args.fbank_dir, digest, stage="features", splits=names)
    return 0


if __name__ == "__main__":
    run_main(main)
