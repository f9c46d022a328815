"""Stage 3: CTC training of the acoustic model (training-only augmentation, a reusable
optimisation loop, resumable checkpoints, and the trainer). Model input (CMVN, batches, the
sampler) lives in ``neurosel.data.batches``, shared with every other stage."""

from neurosel.train.augment import FeatureWarpConfig, SpecAugmentConfig, TrainingAugment
from neurosel.train.loop import ctc_loss_sum, evaluate, train_step
from neurosel.train.trainer import TrainConfig, train

__all__ = ["FeatureWarpConfig", "SpecAugmentConfig", "TrainConfig", "TrainingAugment", "ctc_loss_sum", "evaluate",
           "train", "train_step"]
