"""Stage 3: CTC training of the acoustic model (data, a reusable optimisation loop, resumable
checkpoints, and the trainer)."""

from neurosel.train.data import (Batch, CtcDataset, FeatureWarpConfig, SpecAugmentConfig, apply_cmvn, load_bpe,
                                 load_cmvn, make_sampler)
from neurosel.train.loop import ctc_loss_sum, evaluate, train_step
from neurosel.train.trainer import TrainConfig, train

__all__ = ["Batch", "CtcDataset", "FeatureWarpConfig", "SpecAugmentConfig", "TrainConfig", "apply_cmvn", "ctc_loss_sum",
           "evaluate", "load_bpe", "load_cmvn", "make_sampler", "train", "train_step"]
