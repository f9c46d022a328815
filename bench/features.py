"""Features: stage 1's code path (Lhotse Fbank + Lilcom storage, ``neurosel.data.features``)
against kaldi-native-fbank alone, on the same audio, in seconds of audio per CPU-second.

Subject: ``compute_share`` on a subset of the run's ``train`` recordings, exactly as a stage 1 job
does it (audio read from disk, Fbank, Lilcom chunks written, the cut manifest written), with one
torch thread. Reference: ``kaldi_native_fbank.OnlineFbank`` with the same frame and mel settings
over the same audio, already in memory. Also timed, to show where the time goes: reading the
audio alone, and Lhotse's Fbank extractor alone on audio in memory.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import torch

from bench.common import Metric, Section, fmt, interleaved
from bench.inputs import Workdir, load_cuts, take_seconds, total_seconds
from neurosel import config as C
from neurosel.data.features import FeatureConfig, compute_share, extractor
from neurosel.recipe import layout

TARGET_RT = 300.0


def knf_options(cfg: FeatureConfig, sampling_rate: int) -> knf.FbankOptions:
    """kaldi-native-fbank options equal to Lhotse's ``FbankConfig`` defaults for ``cfg``."""
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = sampling_rate
    opts.frame_opts.frame_shift_ms = cfg.frame_shift * 1000
    opts.frame_opts.frame_length_ms = cfg.frame_length * 1000
    opts.frame_opts.dither = cfg.dither
    opts.frame_opts.snip_edges = False
    opts.mel_opts.num_bins = cfg.num_mel_bins
    opts.mel_opts.high_freq = -400
    return opts


def knf_fbank(audio: np.ndarray, sampling_rate: int, opts: knf.FbankOptions) -> np.ndarray:
    """(samples,) float32 in [-1, 1] -> (frames, bins) log-mel fbank with kaldi-native-fbank."""
    fbank = knf.OnlineFbank(opts)
    fbank.accept_waveform(sampling_rate, audio * 32768.0)
    fbank.input_finished()
    return np.stack([fbank.get_frame(i) for i in range(fbank.num_frames_ready)])


def feature_config(work: Workdir) -> FeatureConfig:
    """The run's resolved stage 1 config (``data/fbank/features.yaml``), else the defaults."""
    path = work.fbank / "features.yaml"
    return C.resolve(FeatureConfig, path, None, "features", []) if path.is_file() else FeatureConfig()


def run(work: Workdir, scratch: Path, quick: bool) -> Section:
    """Measure and return the Features section."""
    section = Section("features", "Features (stage 1)")
    start = time.perf_counter()
    torch.set_num_threads(1)
    cfg = feature_config(work)
    cuts = take_seconds(load_cuts(layout.cuts_path(work.manifests, "train")), 20.0 if quick else 90.0)
    seconds = total_seconds(cuts)
    rate = cuts[0].sampling_rate
    audio = [cut.load_audio()[0].astype(np.float32) for cut in cuts]
    opts = knf_options(cfg, rate)
    lhotse_fbank = extractor(cfg, rate)
    out_dir = scratch / "features"

    def stage_path() -> None:
        compute_share(cuts, cfg, out_dir, "bench", 1, 1)

    timings = interleaved({
        "kaldi-native-fbank (audio in memory)": lambda: [knf_fbank(a, rate, opts) for a in audio],
        "stage 1 path (read, Lhotse Fbank, Lilcom, manifest)": stage_path,
        "read audio only": lambda: [cut.load_audio() for cut in cuts],
        "Lhotse Fbank only (audio in memory)": lambda: [lhotse_fbank.extract(a, rate) for a in audio],
    }, repeats=3 if quick else 7)
    shutil.rmtree(out_dir, ignore_errors=True)

    rt = {name: seconds / t.median_cpu for name, t in timings.items()}
    ref = rt["kaldi-native-fbank (audio in memory)"]
    subject = rt["stage 1 path (read, Lhotse Fbank, Lilcom, manifest)"]
    section.metrics = [
        Metric("stage 1 path, seconds of audio per CPU-second (x real time per core)", subject, "x",
               f">= {TARGET_RT:g}", "features.stage1_rt"),
        Metric("kaldi-native-fbank alone, same audio", ref, "x", None, "features.knf_rt"),
        Metric("stage 1 path / kaldi-native-fbank (speed ratio)", subject / ref, "", None, "features.ratio_to_knf"),
    ]
    section.table_header = ["what", "x real time per core (CPU)", "x real time (wall)", "median CPU s",
                            "median wall s", "spread"]
    section.table = [[name, fmt(rt[name]), fmt(seconds / t.median_wall), fmt(t.median_cpu), fmt(t.median_wall),
                      f"{t.spread:.0%}"] for name, t in timings.items()]
    section.notes = [
        f"{len(cuts)} utterances of `train`, {seconds:.1f} s of {rate} Hz audio; one torch thread; "
        f"{len(timings[next(iter(timings))].wall)} interleaved repeats, medians.",
        "Per core = per CPU-second of this process (`time.process_time`), which machine load "
        "inflates far less than wall time; the wall-clock rate is beside it.",
        "kaldi-native-fbank is a pinned dependency (requirements.txt) and is called directly: "
        "Lhotse 1.33 has no extractor for it (its `KaldifeatFbank` needs kaldifeat, not installed).",
    ]
    section.seconds = time.perf_counter() - start
    return section
