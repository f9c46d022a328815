"""Is the baseline strong enough to be studied? Stage 4 prints, and stage 8's RESULTS.md opens
with, a warning when the baseline's WER on the tuning set (dev) is above ``weak_baseline_wer`` of
its tuned ``decode.yaml`` (conf/decode.yaml, default 40%).

A model that gets most words wrong has pseudo-labels that are mostly wrong, and neuron statistics
of a model that has not learned the task: stages 5-8 then run without a hitch and their tables
look like findings. Issue 17's recorded corpus (2.6 h, 7 epochs capped at 5 minutes) ended at dev
WER 85.5% and nothing said so.
"""

from __future__ import annotations

import re
from pathlib import Path

from neurosel.decode.run import DecodeStageConfig
from neurosel.decode.stage import load_decode_config
from neurosel.errors import NeuroselError

_WER = re.compile(r"%WER\s+([0-9.]+)")


def baseline_wer(decode_dir: str | Path) -> tuple[float, DecodeStageConfig]:
    """The baseline's WER on its tuning set and the tuned config, from a stage 4 decode dir
    (``decode.yaml`` and ``<tune_set>/wer``)."""
    decode_dir = Path(decode_dir)
    cfg_path = decode_dir / "decode.yaml"
    if not cfg_path.is_file():
        raise NeuroselError(f"{cfg_path}: no such file (has stage 4 tuned the decoding?)")
    cfg = load_decode_config(cfg_path)
    wer_path = decode_dir / cfg.tune_set / "wer"
    if not wer_path.is_file():
        raise NeuroselError(f"{wer_path}: no such file (is {cfg.tune_set} decoded?)")
    m = _WER.search(wer_path.read_text(encoding="utf-8"))
    if m is None:
        raise NeuroselError(f"{wer_path}: no '%WER <number>' line")
    return float(m.group(1)), cfg


def weak_baseline_warning(decode_dir: str | Path, missing_ok: bool = False) -> str | None:
    """The warning (one paragraph) when the baseline in ``decode_dir`` is weak, else None (also,
    with ``missing_ok``, when the tuning set is not decoded there)."""
    if missing_ok and not (Path(decode_dir) / "decode.yaml").is_file():
        return None
    wer, cfg = baseline_wer(decode_dir)
    if wer <= cfg.weak_baseline_wer:
        return None
    return (f"WARNING: weak baseline: {cfg.tune_set} WER {wer:.2f}% is above weak_baseline_wer "
            f"{cfg.weak_baseline_wer:g}% (conf/decode.yaml). The neuron statistics, pruning and adaptation "
            f"results of stages 5-8 describe a model that has not learned the task (its pseudo-labels are "
            f"mostly wrong); do not read them as findings. To get a model worth studying: train longer "
            f"(conf/train.yaml: num_epochs, max_steps, and max_minutes: 0 for no wall-time cap; check that "
            f"the validation loss in exp/baseline/log has stopped falling), bring more training data, or "
            f"start from the small-corpus profile of your amount of audio (utils/new_recipe.sh --train-hours "
            f"H; egs/TEMPLATE/conf/profiles/). Raise weak_baseline_wer only if this WER is expected.")
