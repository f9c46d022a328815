"""Severity sets of the shift command (``neurosel.recipe.severity``, issue 18 part 2): the plan and
its names, each degradation growing with its severity on audio made here, and on the tiny recipe's
model: built, featurised and decoded into a work dir of links (never the shared run's folders),
up to date on a second call, fitted with ``fit --severity`` in their conditions, answered by
``status``, and reported by stage 8's section."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from lhotse import CutSet

from neurosel.bin.shift import main as shift_main
from neurosel.errors import NeuroselError
from neurosel.recipe import layout
from neurosel.recipe.severity import (NoiseLevels, ReverbLevels, ReverbNoisePair, SeverityConfig, SeverityFiles,
                                      TelephoneVariant, build_severity_sets, degrade, load_severity_config, plan,
                                      stale)
from neurosel.recipe.shift import RecipeFiles, fit_recipe
from neurosel.report.shift_section import PLOT, shift_section
from neurosel.stage import STALE, UP_TO_DATE
from neurosel.synth import conditions as cond

ROOT = Path(__file__).resolve().parents[1]


def speech_like(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Amplitude-modulated harmonics with pauses: energy in speech bands and below 4 kHz mostly."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * cond.SAMPLE_RATE)) / cond.SAMPLE_RATE
    x = sum(np.sin(2 * np.pi * f * t) / k for k, f in enumerate((150, 300, 450, 900, 2500, 5000), 1))
    envelope = (np.sin(2 * np.pi * 3 * t) > -0.3).astype(float)
    return 0.1 * x * envelope + 1e-4 * rng.standard_normal(len(t))


def test_repo_config_is_the_default_and_names_every_set_once():
    cfg = load_severity_config(ROOT / "egs" / "synth" / "conf" / "severity.yaml")
    assert cfg == SeverityConfig()
    sets = plan(cfg)
    assert len(sets) == 21 and len({s.name for s in sets}) == 21
    assert all(layout.is_severity_set(s.name) and layout.severity_condition(s.name) == s.condition for s in sets)
    assert not any(layout.is_test_set(s.name) or layout.is_split_name(s.name) for s in sets)
    assert [s.name for s in sets if s.condition == "noise"][:2] == ["sev_noise.snr30", "sev_noise.snr25"]
    assert "sev_reverb.t60_0_35" in {s.name for s in sets}


def test_a_set_listed_twice_is_an_error():
    cfg = SeverityConfig(noise=NoiseLevels(snr_db=[10, 10.0]))
    with pytest.raises(NeuroselError, match="sev_noise.snr10 is listed twice"):
        plan(cfg)


def test_a_wrong_key_names_the_file(tmp_path):
    path = tmp_path / "severity.yaml"
    path.write_text("noise: {snr: [5]}\n")
    with pytest.raises(NeuroselError, match=f"{path}: noise: unknown key 'snr'"):
        load_severity_config(path)


def _degraded(cfg: SeverityConfig, condition: str, x: np.ndarray) -> list[np.ndarray]:
    babble = [speech_like(1.3, seed=k) for k in range(1, 7)]
    return [degrade(x, s, cfg, babble, np.random.default_rng(7)) for s in plan(cfg) if s.condition == condition]


def _distortion(x: np.ndarray, y: np.ndarray) -> float:
    """Energy of what the condition added or removed, relative to ``x``'s (lengths cut to ``x``'s)."""
    return float(np.sum((y[:len(x)] - x) ** 2) / np.sum(x ** 2))


def test_noise_and_reverb_distort_more_at_each_harsher_level():
    x = speech_like()
    noise = SeverityConfig(noise=NoiseLevels(snr_db=[30, 20, 10, 0], babble_share=0.0), reverb=ReverbLevels(t60_s=[]),
                           telephone=[], reverb_noise=[])
    d = [_distortion(x, y) for y in _degraded(noise, "noise", x)]
    assert all(a < b for a, b in zip(d, d[1:])), d
    assert d[-1] > 0.5 and d[0] < 0.01  # 0 dB: noise as loud as speech; 30 dB: a thousandth
    reverb = SeverityConfig(noise=NoiseLevels(snr_db=[]), reverb=ReverbLevels(t60_s=[0.2, 0.5, 1.2], drr_db=[5, 5]),
                            telephone=[], reverb_noise=[])
    tails = [float(np.sum(y[len(x):] ** 2)) for y in _degraded(reverb, "reverb", x)]
    assert all(a < b for a, b in zip(tails, tails[1:])), tails  # a longer T60 rings on longer


def test_telephone_removes_the_band_edges_it_is_told_to():
    x = speech_like()
    cfg = SeverityConfig(noise=NoiseLevels(snr_db=[]), reverb=ReverbLevels(t60_s=[]), reverb_noise=[],
                         telephone=[TelephoneVariant(200, 3700, "mulaw"), TelephoneVariant(500, 3000, "mulaw")])
    wide, narrow = _degraded(cfg, "telephone", x)
    freqs = np.fft.rfftfreq(len(x), 1 / cond.SAMPLE_RATE)

    def share(y: np.ndarray, band: tuple[float, float]) -> float:
        power = np.abs(np.fft.rfft(y)) ** 2
        return float(power[(freqs >= band[0]) & (freqs < band[1])].sum() / power.sum())

    assert share(wide, (4000, 8000)) < 1e-3 and share(narrow, (4000, 8000)) < 1e-3
    assert share(narrow, (100, 400)) < 0.1 * share(wide, (100, 400))  # 150 and 300 Hz lost below 500 Hz


SMALL = SeverityConfig(noise=NoiseLevels(snr_db=[20, 0]), reverb=ReverbLevels(t60_s=[]), reverb_noise=[],
                       telephone=[TelephoneVariant(300, 3400, "mulaw")])


def linked_workdir(workdir: Path, root: Path) -> Path:
    """A work dir under ``root`` whose stage 0-5 folders link the run's, so that what the severity
    sets and fit write lands under ``root``."""
    for sub in ("manifests", "fbank", "lang"):
        (root / "data" / sub).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / sub).symlink_to(workdir / "data" / sub)
    for sub in ("baseline", "decode", "saliency"):
        (root / "exp" / sub).parent.mkdir(parents=True, exist_ok=True)
        (root / "exp" / sub).symlink_to(workdir / "exp" / sub)
    return root


@pytest.fixture(scope="module")
def built(tiny_recipe, tmp_path_factory) -> tuple[Path, Path, list[str]]:
    """(the tiny run's work dir, a linked work dir with SMALL's severity sets built, their names)."""
    workdir, proc = tiny_recipe
    assert proc.returncode == 0, proc.stderr[-2000:]
    root = linked_workdir(workdir, tmp_path_factory.mktemp("severity"))
    return workdir, root, build_severity_sets(root, SMALL)


@pytest.mark.slow
def test_sets_are_degraded_test_utterances_with_features_and_a_decode(built):
    workdir, root, names = built
    files = SeverityFiles(root)
    assert names == ["sev_noise.snr20", "sev_noise.snr0", "sev_telephone.mulaw_300_3400"]
    test = CutSet.from_file(layout.cuts_path(workdir / "data" / "manifests", layout.TEST))
    texts = {c.id: c.supervisions[0].text for c in test}
    wers = {}
    for name in names:
        cuts = CutSet.from_file(layout.cuts_path(files.fbank, name))
        assert sorted(c.id for c in cuts) == sorted(f"{name}-{u}" for u in texts)
        for c in cuts:
            assert c.supervisions[0].text == texts[c.id[len(name) + 1:]]
            assert c.has_features and c.num_features == 80 and Path(c.recording.sources[0].source).is_file()
        wers[name] = float((files.decode / name / "wer").read_text().split()[1])
    # the tiny model is near 100% WER everywhere, so its WER need not grow with the severity here
    assert all(0.0 <= w for w in wers.values()) and len(wers) == 3
    assert (files.fbank / "cmvn.npz").read_bytes() == layout.cmvn_path(workdir / "data" / "fbank").read_bytes()
    assert layout.test_sets(workdir / "data" / "fbank") == layout.test_sets(root / "data" / "fbank")
    assert not (workdir / "data" / "severity").exists() and not (workdir / "exp" / "shift").exists()


@pytest.mark.slow
def test_a_second_build_renders_and_decodes_nothing(built):
    _, root, names = built
    files = SeverityFiles(root)
    assert stale(files, SMALL) == []
    outputs = [p for n in names for p in (files.decode / n / "wer", layout.cuts_path(files.fbank, n))]
    stamps = {p: p.stat().st_mtime_ns for p in outputs}
    build_severity_sets(root, SMALL)
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    changed = dataclasses.replace(SMALL, noise=NoiseLevels(snr_db=[20, 5]))
    assert stale(files, changed) == ["sev_noise.snr5"]


@pytest.mark.slow
def test_fit_with_severity_holds_each_condition_out_with_its_severity_sets(built, tmp_path):
    _, root, names = built
    evaluation = fit_recipe(root, tmp_path / "fit", severity=True)
    assert evaluation["severity"] is True
    sets = {s["set"]: s["condition"] for s in evaluation["sets"]}
    assert {n: sets[n] for n in names} == {"sev_noise.snr20": "noise", "sev_noise.snr0": "noise",
                                           "sev_telephone.mulaw_300_3400": "telephone"}
    for c in evaluation["candidates"]:
        for h in c.get("held_out", []):
            assert not any(sets[f] == h["condition"] for f in h["fitted_on"]), (c["name"], h)
    md, figures = shift_section(tmp_path / "fit", tmp_path / "plots")
    assert figures == [("Predicted (held-out) against true WER of every set", PLOT)]
    assert (tmp_path / "plots" / PLOT).stat().st_size > 0
    for name in names + [layout.TEST]:
        assert f"| {name} | " in md
    assert "Goals of issue 18" in md


@pytest.mark.slow
def test_status_follows_the_stage_protocol(built, tmp_path):
    _, root, _ = built
    config = tmp_path / "severity.yaml"
    config.write_text(json.dumps(dataclasses.asdict(SMALL)))
    assert shift_main(["status", "--severity", "--severity-config", str(config), str(root)]) == STALE
    fit_recipe(root, severity=True)
    assert shift_main(["status", "--severity", "--severity-config", str(config), str(root)]) == UP_TO_DATE
    assert shift_main(["status", str(root)]) == STALE  # fitted with the severity sets, asked without
    config.write_text(json.dumps(dataclasses.asdict(dataclasses.replace(SMALL, seed=1))))
    assert shift_main(["status", "--severity", "--severity-config", str(config), str(root)]) == STALE


def test_the_section_says_how_to_run_it_when_there_is_no_evaluation(tmp_path):
    md, figures = shift_section(tmp_path / "exp" / "shift", tmp_path / "plots")
    assert figures == [] and "steps/shift.sh" in md and not (tmp_path / "plots").exists()


@pytest.mark.slow
def test_the_step_launches_nothing_when_up_to_date_and_stops_on_a_bad_config(built, tmp_path):
    _, root, _ = built
    config = tmp_path / "severity.yaml"
    config.write_text(json.dumps(dataclasses.asdict(SMALL)))
    fit_recipe(root, severity=True)
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    step = ["steps/shift.sh", "--severity-config", str(config), str(root)]
    done = subprocess.run(step, cwd=ROOT, capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert not (root / "exp" / "shift" / "log").exists()  # no job: up to date
    config.write_text("noise: {snr: [5]}\n")
    broken = subprocess.run(step, cwd=ROOT, capture_output=True, text=True, env=env)
    assert broken.returncode == 1 and "no job launched" in broken.stderr
    assert f"{config}: noise: unknown key 'snr'" in broken.stderr


def test_status_of_a_run_without_a_model_is_an_error(tmp_path):
    with pytest.raises(NeuroselError, match=f"{tmp_path}/exp/baseline/model.pt: no such file"):
        shift_main(["--device", "cpu", "status", str(tmp_path)])
    with pytest.raises(NeuroselError, match="no such recipe work dir"):
        shift_main(["status", str(tmp_path / "missing")])
