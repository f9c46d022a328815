"""``neurosel.recipe.layout``, the one owner of on-disk names, and ``neurosel.bin.layout``, which
the shell asks instead of listing files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from neurosel.recipe import layout

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ["train", "dev", "test", "ood_adapt_noise", "ood_noise", "ood_adapt_tel_codec", "ood_tel_codec"]


def fbank_dir(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        layout.cuts_path(tmp_path, split).touch()
    layout.cmvn_path(tmp_path).touch()
    return tmp_path


def test_splits_conditions_and_sets_come_from_the_cut_files(tmp_path: Path) -> None:
    d = fbank_dir(tmp_path)
    assert layout.cuts_path(d, "dev") == d / "cuts_dev.jsonl.gz"
    assert layout.splits(d) == sorted(SPLITS)
    assert layout.conditions(d) == ["noise", "tel_codec"]
    assert layout.adapt_sets(d) == ["ood_adapt_noise", "ood_adapt_tel_codec"]
    assert layout.test_sets(d) == ["ood_noise", "ood_tel_codec", "test"]
    assert layout.splits(tmp_path / "missing") == []
    assert all(layout.SPLIT_NAME.match(s) for s in SPLITS) and not layout.SPLIT_NAME.match("ood_Noise")
    assert layout.condition_of("ood_adapt_tel_codec") == layout.condition_of("ood_tel_codec") == "tel_codec"


def test_system_ids_round_trip() -> None:
    for system, seed, pooled in [("baseline", None, False), ("prune_random_nofold", 2, False),
                                 ("adapt_all", 42, True), ("curve_random_5", 1, False)]:
        name = layout.system_id(system, seed, pooled)
        assert layout.parse_system_id(name) == (system + ("_pooled" if pooled else ""), seed)
        assert layout.is_pooled(name) == pooled
    assert layout.system_id("adapt_all", 42, pooled=True) == "adapt_all_pooled.s42"
    assert layout.adapted_condition(layout.adapted_name("noise")) == "noise"
    assert layout.adapted_condition("ood_noise") is None
    assert layout.adapted_test_set("ood_noise", "noise") == "ood_noise"
    assert layout.adapted_test_set("test", "noise") == "test.noise"


def test_the_shell_asks_for_test_and_adaptation_sets(tmp_path: Path) -> None:
    d = fbank_dir(tmp_path / "fbank")

    def ask(query: str, where: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "neurosel.bin.layout", query, str(where)], cwd=ROOT,
                              capture_output=True, text=True)

    assert ask("test-sets", d).stdout == "ood_noise,ood_tel_codec,test\n"
    assert ask("adapt-sets", d).stdout == "ood_adapt_noise,ood_adapt_tel_codec\n"
    missing = ask("test-sets", tmp_path / "nothing")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and str(tmp_path / "nothing") in missing.stderr
