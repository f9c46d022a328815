"""Stage 3 from a model trained elsewhere (``train.yaml``'s ``init``): used as is, or fine-tuned on
this recipe's train, with stage 1's ``cmvn_from`` and stage 2's ``bpe_from`` keeping the model's input
normalisation and output units; every mismatch a one-line error naming the file and the setting.
The model, lang dir and features of the session's tiny recipe run play the model trained elsewhere."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from neurosel.bin import prepare_lang as lang_cli
from neurosel.bin import train as train_cli
from neurosel.data.features import copy_cmvn
from neurosel.errors import NeuroselError
from neurosel.model import load_model

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "egs" / "synth" / "conf"


@pytest.fixture(scope="module")
def source(tiny_recipe) -> Path:
    workdir, first = tiny_recipe
    assert first.returncode == 0, first.stderr[-3000:]
    return workdir


def fbank_with_cmvn(src: Path, dst: Path, cmvn: Path | None = None) -> Path:
    """A fbank dir of ``src``'s cut manifests (links) with ``cmvn`` (default: ``src``'s)."""
    dst.mkdir(parents=True)
    for name in ("cuts_train.jsonl.gz", "cuts_dev.jsonl.gz"):
        (dst / name).symlink_to(src / name)
    shutil.copyfile(cmvn or src / "cmvn.npz", dst / "cmvn.npz")
    return dst


def train(w: Path, fbank: Path, lang: Path, exp: Path, *sets: str, mode: str = "as_is") -> int:
    init = [f"init.model={w / 'exp' / 'baseline' / 'model.pt'}", f"init.lang_dir={w / 'data' / 'lang'}",
            f"init.cmvn={w / 'data' / 'fbank' / 'cmvn.npz'}", f"init.mode={mode}"]
    args = ["--config", str(CONF / "train.yaml"), "--overlay", str(CONF / "tiny.yaml"), "--quiet"]
    for kv in [*init, *sets]:
        args += ["--set", kv]
    return train_cli.main([*args, str(fbank), str(lang), str(exp)])


def other_lang(w: Path, out: Path, *sets: str) -> Path:
    args = ["--config", str(CONF / "lang.yaml"), "--overlay", str(CONF / "tiny.yaml")]
    for kv in sets:
        args += ["--set", kv]
    assert lang_cli.main([*args, str(w / "data" / "local" / "lm_text"), str(out)]) == 0
    return out


@pytest.mark.slow
def test_as_is_writes_the_model_unchanged_and_is_up_to_date_after(source: Path, tmp_path: Path) -> None:
    exp = tmp_path / "exp"
    assert train(source, source / "data" / "fbank", source / "data" / "lang", exp) == 0
    mine, _ = load_model(exp / "model.pt")
    theirs, _ = load_model(source / "exp" / "baseline" / "model.pt")
    for (k, a), b in zip(mine.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), k
    assert not list(exp.glob("checkpoint-*.pt"))  # nothing was trained
    before = (exp / "model.pt").stat().st_mtime_ns
    assert train(source, source / "data" / "fbank", source / "data" / "lang", exp) == 0
    assert (exp / "model.pt").stat().st_mtime_ns == before  # up to date


@pytest.mark.slow
def test_bpe_from_gives_the_models_units_and_as_is_refuses_others(source: Path, tmp_path: Path) -> None:
    lang = source / "data" / "lang"
    copied = other_lang(source, tmp_path / "copied", f"bpe_from={lang}", "vocab_size=50")
    assert (copied / "bpe.model").read_bytes() == (lang / "bpe.model").read_bytes()
    assert (copied / "TLG.fst").is_file()
    assert train(source, source / "data" / "fbank", copied, tmp_path / "ok") == 0
    smaller = other_lang(source, tmp_path / "smaller", "vocab_size=50")
    with pytest.raises(NeuroselError, match=f"set lang's bpe_from: {lang}"):
        train(source, source / "data" / "fbank", smaller, tmp_path / "exp")
    assert not (tmp_path / "exp" / "model.pt").exists()
    with pytest.raises(NeuroselError, match="no such file"):
        lang_cli.main(["--set", f"bpe_from={tmp_path / 'nowhere'}", str(source / "data" / "local" / "lm_text"),
                       str(tmp_path / "lang2")])


@pytest.mark.slow
def test_as_is_refuses_other_cmvn_and_cmvn_from_copies_it(source: Path, tmp_path: Path) -> None:
    theirs = source / "data" / "fbank" / "cmvn.npz"
    shifted = tmp_path / "shifted.npz"
    with np.load(theirs) as stats:
        np.savez(shifted, mean=stats["mean"] + 1.0, std=stats["std"], frames=stats["frames"])
    fbank = fbank_with_cmvn(source / "data" / "fbank", tmp_path / "fbank", shifted)
    with pytest.raises(NeuroselError, match=f"set features' cmvn_from: {theirs}"):
        train(source, fbank, source / "data" / "lang", tmp_path / "exp")
    copy_cmvn(theirs, fbank / "cmvn.npz", 80)
    assert (fbank / "cmvn.npz").read_bytes() == theirs.read_bytes()
    with pytest.raises(NeuroselError, match="CMVN of 80 features, this recipe computes 40"):
        copy_cmvn(theirs, tmp_path / "cmvn40.npz", 40)
    assert not (tmp_path / "cmvn40.npz").exists()


@pytest.mark.slow
def test_finetune_with_other_units_starts_a_new_output_layer(source: Path, tmp_path: Path, caplog) -> None:
    smaller = other_lang(source, tmp_path / "smaller", "vocab_size=50")
    exp = tmp_path / "exp"
    with caplog.at_level(logging.INFO):
        assert train(source, source / "data" / "fbank", smaller, exp, "max_steps=2", "num_epochs=0",
                     "max_minutes=0", mode="finetune") == 0
    assert "the output layer starts afresh" in caplog.text
    model, cfg = load_model(exp / "model.pt")
    theirs, their_cfg = load_model(source / "exp" / "baseline" / "model.pt")
    assert cfg.vocab_size == 50 and their_cfg.vocab_size != 50 and cfg.fc_dims == their_cfg.fc_dims
    # two steps moved the weights a little from the model's, not from a fresh initialisation
    a, b = model.fc[0].weight.detach(), theirs.fc[0].weight.detach()
    assert float((a - b).norm() / b.norm()) < 0.1


def test_init_needs_its_lang_dir_and_cmvn(tmp_path: Path) -> None:
    with pytest.raises(NeuroselError, match="init.model needs init.lang_dir and init.cmvn"):
        train_cli.main(["--config", str(CONF / "train.yaml"), "--set", "init.model=m.pt", str(tmp_path / "fbank"),
                        str(tmp_path / "lang"), str(tmp_path / "exp")])
