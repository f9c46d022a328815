"""Stage 3 from a model trained elsewhere (``train.yaml``'s ``init``), as ESPnet's ``--init_param``.

A user with little data starts from another recipe's model (egs/librispeech's, egs/synth's) and
studies their own corpus's OOD splits with it. Two modes:

- ``as_is``: the model is stage 3's model unchanged (no training); stages 4-8 study it on this
  recipe's sets. Its input and output must be this recipe's: the same CMVN statistics (stage 1's
  ``cmvn_from``) and the same BPE model (stage 2's ``bpe_from``), else a one-line error says which
  setting to add.
- ``finetune``: its weights initialise training on this recipe's ``train`` (the architecture is the
  checkpoint's; ``model`` of train.yaml does not apply). When this recipe's BPE model differs, the
  output layer is the one part re-initialised (from the seed) and the log says so; other CMVN
  statistics are allowed (training adapts to them) and logged.

The model's own lang dir and CMVN are named beside it (``lang_dir``, ``cmvn``), since a checkpoint
does not record them.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch

from neurosel.config import save
from neurosel.data.batches import load_bpe, load_cmvn
from neurosel.errors import NeuroselError
from neurosel.model import CnnCtcModel, ModelConfig, build_model, load_model, save_model
from neurosel.train.distributed import ProcessGroup

if TYPE_CHECKING:
    from neurosel.train.trainer import TrainConfig

log = logging.getLogger("neurosel.train")


@dataclass
class InitConfig:
    """``init`` of ``conf/train.yaml``: where stage 3's model starts. Paths are relative to where
    ``run.sh`` runs (the repository root); empty ``model``: train from scratch."""

    model: str = ""  # a trained model.pt, e.g. egs/synth/exp/baseline/model.pt
    lang_dir: str = ""  # the lang dir it was trained with (holds its bpe.model)
    cmvn: str = ""  # the cmvn.npz it was trained with
    mode: Literal["finetune", "as_is"] = "finetune"

    def __post_init__(self) -> None:
        if self.model and not (self.lang_dir and self.cmvn):
            raise ValueError("init.model needs init.lang_dir and init.cmvn (the lang dir and cmvn.npz the model "
                             "was trained with)")

    def files(self) -> list[Path]:
        """The files the stage depends on through ``init`` (none without a model)."""
        if not self.model:
            return []
        return [Path(self.model), Path(self.lang_dir) / "bpe.model", Path(self.cmvn)]


@dataclass
class Start:
    """What ``init`` gives training: the architecture and the weights to load (the output layer's
    left out when the vocabularies differ)."""

    model_cfg: ModelConfig
    state: dict[str, torch.Tensor]
    new_output: bool


def _same_cmvn(a: Path, b: Path) -> bool:
    (ma, sa), (mb, sb) = load_cmvn(a), load_cmvn(b)
    return ma.shape == mb.shape and torch.equal(ma, mb) and torch.equal(sa, sb)


def start_from(init: InitConfig, lang_dir: Path, cmvn_path: Path) -> Start:
    """Check ``init``'s model against this recipe's lang dir and CMVN and say how training starts;
    ``NeuroselError`` naming the file and the mismatch where they cannot work together."""
    model, model_cfg = load_model(init.model)
    source_bpe = Path(init.lang_dir) / "bpe.model"
    source_pieces = load_bpe(init.lang_dir).get_piece_size()
    pieces = load_bpe(lang_dir).get_piece_size()
    if model_cfg.vocab_size != source_pieces:
        raise NeuroselError(f"{init.model}: {model_cfg.vocab_size} output units, but {source_bpe} has "
                            f"{source_pieces} pieces (init.lang_dir is not the model's lang dir)")
    cmvn_dim = load_cmvn(cmvn_path)[0].numel()
    if model_cfg.num_features != cmvn_dim:
        raise NeuroselError(f"{init.model}: takes {model_cfg.num_features} features, {cmvn_path} has {cmvn_dim} "
                            "(set features' num_mel_bins to the model's)")
    same_bpe = source_bpe.read_bytes() == (lang_dir / "bpe.model").read_bytes()
    same_cmvn = _same_cmvn(Path(init.cmvn), cmvn_path)
    if init.mode == "as_is":
        if not same_bpe:
            raise NeuroselError(f"{lang_dir}/bpe.model is not {source_bpe}: a model used as is needs its own output "
                                f"units (set lang's bpe_from: {init.lang_dir})")
        if not same_cmvn:
            raise NeuroselError(f"{cmvn_path} is not {init.cmvn}: a model used as is needs its own input "
                                f"normalisation (set features' cmvn_from: {init.cmvn})")
    state = model.state_dict()
    if not same_bpe:
        state = {k: v for k, v in state.items() if not k.startswith("output.")}
        log.warning("init: %s has other output units than %s (%d pieces vs the model's %d): the output layer "
                    "starts afresh, every other weight from %s", lang_dir / "bpe.model", source_bpe, pieces,
                    model_cfg.vocab_size, init.model)
    if not same_cmvn:
        log.warning("init: %s differs from the model's %s; fine-tuning starts from inputs normalised otherwise "
                    "than the model was trained on (features' cmvn_from keeps them the same)", cmvn_path, init.cmvn)
    log.info("init: %s %s (its architecture; train.yaml's model section does not apply)",
             "using" if init.mode == "as_is" else "fine-tuning", init.model)
    return Start(replace(model_cfg, vocab_size=pieces), state, new_output=not same_bpe)


def load_start(model: CnnCtcModel, start: Start) -> None:
    """Load ``start``'s weights into a model built from ``start.model_cfg`` (the seeded output
    layer kept when it is new)."""
    missing, unexpected = model.load_state_dict(start.state, strict=False)
    expected = {k for k in model.state_dict() if k.startswith("output.")} if start.new_output else set()
    if set(missing) != expected or unexpected:
        raise NeuroselError(f"init: weights do not fit the model (missing {sorted(missing)[:3]}, "
                            f"unexpected {sorted(unexpected)[:3]})")


def use_as_is(cfg: TrainConfig, lang_dir: Path, cmvn_path: Path, exp_dir: Path, group: ProcessGroup) -> Path:
    """Stage 3 without training: ``init.model``, checked to take this recipe's input and output
    units (``start_from``), written as ``model.pt`` with where it came from."""
    start = start_from(cfg.init, lang_dir, cmvn_path)
    path = exp_dir / "model.pt"
    if group.is_main:
        model = build_model(start.model_cfg)
        load_start(model, start)
        save(replace(cfg, model=start.model_cfg), exp_dir / "config.yaml")
        save_model(model.eval(), path, train_config=asdict(cfg), step=0, sources=[str(cfg.init.model)],
                   stopped_by="init.mode as_is")
        log.info("wrote %s: %s used as is (no training)", path, cfg.init.model)
    group.barrier()
    return path
