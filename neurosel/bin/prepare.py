"""Stage 0: ``python -m neurosel.bin.prepare [status] [--config conf/prepare.yaml] [--set k=v] <data-dir>``.

Validates every split's source (Kaldi data dir or Lhotse manifests), writes Lhotse manifests and
cuts to ``<data-dir>/manifests`` and a Kaldi export to ``<data-dir>/kaldi``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurosel import config as C
from neurosel.cli import config_args, run_main
from neurosel.data.kaldi_dir import read_table
from neurosel.data.prepare import PrepareConfig, prepare, split_sources
from neurosel.stage import run_once, single_status, split_action


def _inputs(cfg: PrepareConfig, base_dir: Path) -> list[Path]:
    """The source dirs and every audio file they name, so regenerated audio redoes the stage."""
    files: list[Path] = []
    for source in split_sources(cfg, base_dir).values():
        for p in (source.kaldi_dir, source.recordings, source.supervisions):
            if p is not None:
                files.append(Path(p))
        if source.kaldi_dir is not None and (Path(source.kaldi_dir) / "wav.scp").is_file():
            wav = read_table(Path(source.kaldi_dir) / "wav.scp", must_sort=False)
            files += [Path(v) for v in wav.values() if not v.endswith("|")]
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="prepare", description=__doc__.splitlines()[0])
    config_args(parser)
    parser.add_argument("--nj", type=int, default=1, help="parallel jobs for audio validation")
    parser.add_argument("--force", action="store_true", help="redo even if up to date")
    parser.add_argument("--base-dir", type=Path, default=Path("."),
                        help="folder that relative paths in the config are relative to (the work dir)")
    parser.add_argument("data_dir", type=Path)
    action, argv = split_action(argv)
    args = parser.parse_args(argv)
    cfg = C.resolve(PrepareConfig, args.config, args.overlay, "prepare", args.overrides)
    out = args.data_dir / "manifests"
    if action == "status":
        return single_status("stage 0 (prepare)", out, C.to_dict(cfg), _inputs(cfg, args.base_dir), args.force)

    def work() -> None:
        prepare(cfg, args.data_dir, num_jobs=args.nj, base_dir=args.base_dir)
        C.save(cfg, out / "prepare.yaml")

    run_once("stage 0 (prepare)", out, C.to_dict(cfg), _inputs(cfg, args.base_dir), work, force=args.force)
    return 0


if __name__ == "__main__":
    run_main(main)
