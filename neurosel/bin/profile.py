"""Choose and apply a small-corpus size profile: ``python -m neurosel.bin.profile <train-hours> <conf-dir>``.

Picks the profile of ``neurosel.recipe.profiles`` for the hours of training audio, merges
``<conf-dir>/profiles/<profile>.yaml`` into ``<conf-dir>/train.yaml`` and ``lang.yaml`` and prints
the profile's name (``none`` from 30 h on: the template's sizes stay). ``utils/new_recipe.sh
--train-hours H`` runs it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neurosel.cli import run_main
from neurosel.errors import NeuroselError
from neurosel.recipe.profiles import apply_profile, choose_profile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="profile", description=__doc__.splitlines()[0])
    parser.add_argument("train_hours", type=float, help="hours of training audio")
    parser.add_argument("conf_dir", type=Path, help="a recipe's conf/ (with profiles/)")
    args = parser.parse_args(argv)
    name = choose_profile(args.train_hours)
    if name is None:
        print("none")
        return 0
    profile = args.conf_dir / "profiles" / f"{name}.yaml"
    if not profile.is_file():
        raise NeuroselError(f"{profile}: no such file")
    apply_profile(profile, args.conf_dir, f"Small-corpus profile {name} merged in by utils/new_recipe.sh "
                  f"--train-hours {args.train_hours:g}: see conf/profiles/{name}.yaml for its values and what "
                  "was measured.")
    print(name)
    return 0


if __name__ == "__main__":
    run_main(main)
