"""Small-corpus size profiles: chosen from the training hours, merged by utils/new_recipe.sh into
configs that stages 2 and 3 accept, with no wall-time cap and more training for less data."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from neurosel import config as C
from neurosel.errors import NeuroselError
from neurosel.lang.prepare import LangConfig
from neurosel.recipe.profiles import PROFILES, apply_profile, choose_profile
from neurosel.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "egs" / "TEMPLATE" / "conf"


def test_profile_chosen_from_training_hours():
    assert [choose_profile(h) for h in (0.2, 1.0, 1.99, 2.0, 2.6, 5.9, 6.0, 10.0, 29.9, 30.0, 300.0)] == \
        ["1h", "1h", "1h", "3h", "3h", "3h", "10h", "10h", "10h", None, None]
    for hours in (0.0, -1.0, float("nan")):
        with pytest.raises(NeuroselError, match="positive number"):
            choose_profile(hours)


@pytest.mark.parametrize("name", [p[0] for p in PROFILES])
def test_profile_gives_valid_configs_without_a_time_cap(tmp_path, name):
    conf = tmp_path / "conf"
    shutil.copytree(TEMPLATE, conf)
    written = apply_profile(conf / "profiles" / f"{name}.yaml", conf, f"profile {name}")
    assert sorted(p.name for p in written) == ["lang.yaml", "train.yaml"]
    train = C.resolve(TrainConfig, conf / "train.yaml")
    lang = C.resolve(LangConfig, conf / "lang.yaml")
    assert train.max_minutes == 0 and train.max_steps == 0 and train.num_epochs >= 25
    assert train.spec_augment.enabled and train.feature_warp.enabled
    template_lang = C.resolve(LangConfig, TEMPLATE / "lang.yaml")
    assert lang.vocab_size < template_lang.vocab_size
    text = (conf / "train.yaml").read_text()
    assert text.startswith("# Stage 3 (train)") and f"# profile {name}" in text  # comments kept
    assert all(len(line) <= 120 for line in text.splitlines())


def test_less_data_trains_more_epochs_with_fewer_units(tmp_path):
    epochs, units = [], []
    for name, _, _ in PROFILES:
        conf = tmp_path / name
        shutil.copytree(TEMPLATE, conf)
        apply_profile(conf / "profiles" / f"{name}.yaml", conf, name)
        epochs.append(C.resolve(TrainConfig, conf / "train.yaml").num_epochs)
        units.append(C.resolve(LangConfig, conf / "lang.yaml").vocab_size)
    assert epochs == sorted(epochs, reverse=True) and units == sorted(units)


def test_bad_profile_writes_nothing(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(TEMPLATE, conf)
    before = (conf / "train.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text("lang:\n  vocab_size: 100\ntrain:\n  num_epoch: 3\n")
    with pytest.raises(NeuroselError, match="unknown key 'num_epoch'"):
        apply_profile(bad, conf, "bad")
    assert (conf / "train.yaml").read_text() == before
    assert C.resolve(LangConfig, conf / "lang.yaml").vocab_size == 500  # lang not written either


def test_new_recipe_applies_the_profile_of_the_hours():
    name = "zz_profile_test"
    target = ROOT / "egs" / name
    shutil.rmtree(target, ignore_errors=True)
    try:
        done = subprocess.run(["utils/new_recipe.sh", "--train-hours", "2.6", name], cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert "small-corpus profile 3h" in done.stderr
        assert C.resolve(TrainConfig, target / "conf" / "train.yaml").num_epochs == 40
        assert C.resolve(LangConfig, target / "conf" / "lang.yaml").vocab_size == 200
    finally:
        shutil.rmtree(target, ignore_errors=True)
    bad = subprocess.run(["utils/new_recipe.sh", "--train-hours", "lots", name], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 1 and "expected a positive number of hours" in bad.stderr
    assert not target.exists()
