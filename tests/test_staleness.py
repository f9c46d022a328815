"""Staleness: a config change makes exactly the stages that depend on it out of date; ``--force``
redoes a stage; a changed input on disk is noticed by the hash. docs/reliability.md has the table
of which stage depends on which config and input, and why.

The recipe checks run on the session's tiny recipe run (conftest.py ``tiny_recipe``): the work dir
moves aside, a copy takes its place (same paths, so the stage hashes still match), the tests ask
every stage's ``status`` (or run the cheap stage 2 for real), and the original comes back.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from neurosel.bin import adapt as adapt_cli
from neurosel.bin import decode as decode_cli
from neurosel.bin import features as features_cli
from neurosel.bin import prepare as prepare_cli
from neurosel.bin import prepare_lang as lang_cli
from neurosel.bin import prune as prune_cli
from neurosel.bin import saliency as saliency_cli
from neurosel.bin import train as train_cli
from neurosel.cli import run_main
from neurosel.stage import STALE, UP_TO_DATE, fingerprint, run_once

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "egs" / "synth" / "conf"
OVERLAY = ["--overlay", str(CONF / "tiny.yaml")]


class Recipe:
    """The stage commands of ``./run.sh --corpus-size tiny`` on work dir ``w``, in this process."""

    def __init__(self, w: Path, seed: int) -> None:
        self.w, self.seed = w, seed
        self.data, self.exp = w / "data", w / "exp"
        self.model = self.exp / "baseline" / "model.pt"
        self.tuned = self.exp / "decode" / "baseline" / "decode.yaml"
        self.tests = sorted(p.name for p in (self.exp / "decode" / "baseline").iterdir()
                            if p.name == "test" or (p.name.startswith("ood_") and not p.name.startswith("ood_adapt_")))

    def conf(self, stage: str, changes: dict[str, list[str]]) -> list[str]:
        args = ["--config", str(CONF / f"{stage}.yaml"), *OVERLAY]
        for kv in changes.get(stage, []):
            args += ["--set", kv]
        return args

    def up_to_date(self, changes: dict[str, list[str]] | None = None) -> dict[str, bool]:
        """Whether each stage (stage 6 and 7: their models, and their decodes) would be skipped,
        with ``changes`` (stage -> ``key=value`` overrides) applied to the stage configs."""
        c, d, e = changes or {}, self.data, self.exp
        fbank, lang = str(d / "fbank"), str(d / "lang")
        status = {
            "1 features": features_cli.main(["status", *self.conf("features", c), str(d), fbank]) == 0,
            "4 decode": decode_cli.main(["status", "--config", str(self.tuned), "--sets", ",".join(["dev", *self.tests]),
                                         str(self.model), lang, fbank, str(e / "decode" / "baseline")]) == 0,
            "5 saliency": saliency_cli.main(["status", *self.conf("saliency", c), str(self.model), fbank, lang,
                                             str(e / "saliency")]) == 0,
            "6 prune": prune_cli.main(["status", *self.conf("prune", c), str(self.model), str(e / "saliency"), fbank,
                                       str(e / "prune")]) == 0,
            "7 adapt": adapt_cli.main(["status", *self.conf("adapt", c), "--seed", str(self.seed), "--decode-config",
                                       str(self.tuned), str(self.model), lang, fbank, str(e)]) == 0,
        }
        systems = sorted(p.parent.name for p in (e / "prune").glob("*/model.pt"))
        ood = [t for t in self.tests if t.startswith("ood_")]  # the pruning curve's points: OOD sets only
        status["6 prune decodes"] = all(
            decode_cli.main(["status", "--config", str(self.tuned), "--sets",
                             ",".join(ood if s.startswith("curve_") else self.tests),
                             str(e / "prune" / s / "model.pt"), lang, fbank, str(e / "decode" / s)]) == 0
            for s in systems)
        return status

    def lang(self, *extra: str) -> int:
        """Stage 2 for real (it takes a second)."""
        return lang_cli.main([*self.conf("lang", {}), *extra, str(self.data / "local" / "lm_text"),
                              str(self.data / "lang")])

    def train(self) -> int:
        """Stage 3; call it only when it is up to date (else it trains)."""
        return train_cli.main([*self.conf("train", {}), "--quiet", "--seed", str(self.seed), str(self.data / "fbank"),
                               str(self.data / "lang"), str(self.exp / "baseline")])


@pytest.fixture(scope="module")
def recipe(tiny_recipe) -> Recipe:
    workdir, first = tiny_recipe
    assert first.returncode == 0, first.stderr[-3000:]
    seed = int(sorted((workdir / "exp" / "adapt").glob("adapt_all.s*"))[0].name.rsplit(".s", 1)[1])
    reference = workdir.with_name(workdir.name + ".staleness")
    os.rename(workdir, reference)
    try:
        shutil.copytree(reference, workdir, symlinks=True)
        yield Recipe(workdir, seed)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        os.rename(reference, workdir)


ALL_UP_TO_DATE = {"1 features": True, "4 decode": True, "5 saliency": True, "6 prune": True, "7 adapt": True,
                  "6 prune decodes": True}


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("stage, change, stale", [
    ("features", "num_mel_bins=40", "1 features"),
    ("saliency", "taylor_utterances=50", "5 saliency"),
    ("prune", "speed_repeats=2", "6 prune"),  # the pruned models' decodes wait for new models
    ("adapt", "steps=9", "7 adapt"),
])
def test_a_config_change_makes_only_its_stage_stale(recipe: Recipe, stage: str, change: str, stale: str) -> None:
    assert recipe.up_to_date({stage: [change]}) == {**ALL_UP_TO_DATE, stale: False}


@pytest.mark.slow
@pytest.mark.e2e
def test_a_redone_stage_makes_exactly_its_consumers_stale(recipe: Recipe, caplog) -> None:
    assert recipe.up_to_date() == ALL_UP_TO_DATE
    lang = recipe.data / "lang"
    bpe, tlg = (lang / "bpe.model").read_bytes(), (lang / "TLG.fst").read_bytes()
    # a smaller LM: stage 2 redoes its LM and graph steps, not the BPE model
    assert recipe.lang("--set", "lm_order=2") == 0
    assert (lang / "bpe.model").read_bytes() == bpe and (lang / "TLG.fst").read_bytes() != tlg
    # training reads bpe.model (unchanged): up to date; every decode reads TLG.fst: stale
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert recipe.train() == 0
    assert "stage 3 (train): up to date" in caplog.text
    assert recipe.up_to_date() == {**ALL_UP_TO_DATE, "4 decode": False, "6 prune decodes": False, "7 adapt": False}
    # back to the recipe's LM: the graph has its old bytes and every stage is up to date again
    assert recipe.lang() == 0
    assert (lang / "TLG.fst").read_bytes() == tlg
    assert recipe.up_to_date() == ALL_UP_TO_DATE


@pytest.mark.slow
@pytest.mark.e2e
def test_force_redoes_a_stage_and_changed_input_on_disk_is_noticed(recipe: Recipe, caplog) -> None:
    marker = recipe.data / "lang" / ".done"
    before = marker.stat().st_mtime_ns
    with caplog.at_level(logging.INFO):
        assert recipe.lang() == 0
        assert "up to date" in caplog.text and marker.stat().st_mtime_ns == before
        caplog.clear()
        assert recipe.lang("--force") == 0
        assert "--force given, redoing" in caplog.text and marker.stat().st_mtime_ns != before
        # a sentence added to the LM text on disk, with the same config: redone
        lm_text = recipe.data / "local" / "lm_text"
        original = lm_text.read_bytes()
        lm_text.write_bytes(original + b"turn on the light\n")
        caplog.clear()
        assert recipe.lang() == 0
        assert "config or inputs changed since the last run, redoing" in caplog.text
        lm_text.write_bytes(original)
        assert recipe.lang() == 0
    assert recipe.up_to_date() == ALL_UP_TO_DATE


def test_large_input_changed_in_place_is_noticed(tmp_path: Path) -> None:
    """Inputs over 8 MB are hashed by size and modification time: rewriting one in place (same
    size, new content) changes its time and so the fingerprint, without reading it."""
    big = tmp_path / "feats.ark"
    big.write_bytes(bytes(9 << 20))
    calls: list[int] = []
    assert run_once("s", tmp_path / "out", {}, [big], lambda: calls.append(1))
    assert not run_once("s", tmp_path / "out", {}, [big], lambda: calls.append(1))
    stat = big.stat()
    before = fingerprint({}, [big])
    with open(big, "r+b") as f:
        f.write(b"\1")
    # the write sets the time; make sure it moved on even on a file system with coarse timestamps
    os.utime(big, ns=(stat.st_atime_ns, max(big.stat().st_mtime_ns, stat.st_mtime_ns + 1_000_000)))
    assert big.stat().st_size == stat.st_size and fingerprint({}, [big]) != before
    assert run_once("s", tmp_path / "out", {}, [big], lambda: calls.append(1))
    assert len(calls) == 2


def test_temporary_files_of_a_killed_write_are_ignored_and_cleared(tmp_path: Path) -> None:
    """A SIGKILLed ``atomic_path`` leaves ``.<name>.<random>.tmp<suffix>``: it does not make an input
    folder look changed, and redoing the stage that left it removes it."""
    from neurosel.io import atomic_path, is_temporary

    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (inputs / "a.txt").write_text("a")
    calls: list[int] = []
    assert run_once("s", out, {}, [inputs], lambda: calls.append(1))
    with atomic_path(inputs / "b.txt") as tmp:  # what a kill inside the block leaves
        left_in = tmp.with_name(tmp.name.replace("b.txt", "c.txt"))
        shutil.copy(tmp, left_in)
    with atomic_path(out / "model.pt") as tmp:
        left_out = tmp.with_name(tmp.name.replace("model.pt", "old.pt"))
        shutil.copy(tmp, left_out)
    assert is_temporary(left_in) and is_temporary(left_out) and not is_temporary(inputs / "b.txt")
    (inputs / "b.txt").unlink()
    assert not run_once("s", out, {}, [inputs], lambda: calls.append(1))  # still up to date
    assert run_once("s", out, {}, [inputs], lambda: calls.append(1), force=True)
    assert not left_out.exists() and left_in.exists() and len(calls) == 2


def test_a_manifest_written_again_has_the_same_bytes(tmp_path: Path) -> None:
    """gzip puts the time and the (temporary, random) file name in its header; atomic writes take
    both out, so a redone stage that writes the same cuts leaves the next stage up to date."""
    import gzip
    import time

    from lhotse import CutSet, MonoCut

    from neurosel.io import atomic_path

    cuts = CutSet.from_cuts([MonoCut(id=f"u{i}", start=0.0, duration=1.0, channel=0) for i in range(3)])
    path = tmp_path / "cuts_train.jsonl.gz"
    written = []
    for _ in range(2):
        with atomic_path(path) as tmp:
            cuts.to_file(tmp)
        written.append(path.read_bytes())
        time.sleep(1.1)  # gzip's header time has a resolution of one second
    assert written[0] == written[1]
    assert [c.id for c in CutSet.from_file(path)] == ["u0", "u1", "u2"]
    assert gzip.decompress(written[0]).count(b"\n") == 3


def status_code(main, argv: list[str]) -> int:
    """The exit code of a stage command line, as the shell sees it (``run_main`` turns a
    ``NeuroselError`` into exit 1)."""
    with pytest.raises(SystemExit) as e:
        run_main(main, argv)
    return e.value.code


@pytest.mark.slow
@pytest.mark.e2e
def test_status_exit_codes_tell_up_to_date_stale_and_error_apart(recipe: Recipe) -> None:
    e, fbank, lang = recipe.exp, str(recipe.data / "fbank"), str(recipe.data / "lang")
    commands = {  # stage -> (main, its arguments after the config flags)
        "features": (features_cli.main, [str(recipe.data), fbank]),
        "saliency": (saliency_cli.main, [str(recipe.model), fbank, lang, str(e / "saliency")]),
        "prune": (prune_cli.main, [str(recipe.model), str(e / "saliency"), fbank, str(e / "prune")]),
        "adapt": (adapt_cli.main, ["--seed", str(recipe.seed), "--decode-config", str(recipe.tuned),
                                   str(recipe.model), lang, fbank, str(e)]),
    }
    changes = {"features": "num_mel_bins=40", "saliency": "taylor_utterances=50", "prune": "speed_repeats=2",
               "adapt": "steps=9"}
    # the single-job stages take ``status`` as an optional first word
    single = {
        "prepare": (prepare_cli.main, ["--base-dir", str(recipe.w), str(recipe.data)], "max_duration=30"),
        "lang": (lang_cli.main, [str(recipe.data / "local" / "lm_text"), lang], "lm_order=2"),
        "train": (train_cli.main, ["--seed", str(recipe.seed), fbank, lang, str(e / "baseline")], "lr=0.5"),
    }
    for stage, (main, args, change) in single.items():
        assert status_code(main, ["status", *recipe.conf(stage, {}), *args]) == UP_TO_DATE, stage
        assert status_code(main, ["status", *recipe.conf(stage, {stage: [change]}), *args]) == STALE, stage
        assert status_code(main, ["status", *recipe.conf(stage, {stage: ["no_such_key=1"]}), *args]) == 1, stage
    assert status_code(lang_cli.main, ["status", *recipe.conf("lang", {}), str(recipe.w / "no_such_text"), lang]) == 1
    for stage, (main, args) in commands.items():
        assert status_code(main, ["status", *recipe.conf(stage, {}), *args]) == UP_TO_DATE, stage
        assert status_code(main, ["status", *recipe.conf(stage, {stage: [changes[stage]]}), *args]) == STALE, stage
        assert status_code(main, ["status", *recipe.conf(stage, {stage: ["no_such_key=1"]}), *args]) == 1, stage
    decode = ["--sets", ",".join(["dev", *recipe.tests]), str(recipe.model), lang, fbank]
    assert status_code(decode_cli.main, ["status", "--config", str(recipe.tuned), *decode,
                                         str(e / "decode" / "baseline")]) == UP_TO_DATE
    assert status_code(decode_cli.main, ["status", "--config", str(recipe.tuned), "--set", "beam=3", *decode,
                                         str(e / "decode" / "baseline")]) == STALE
    assert status_code(decode_cli.main, ["status", "--config", str(recipe.tuned), "--set", "method=beam", *decode,
                                         str(e / "decode" / "baseline")]) == 1
    tuning = [str(recipe.model), lang, fbank, str(e / "decode" / "baseline")]
    assert status_code(decode_cli.main, ["status", "--tune", *recipe.conf("decode", {}), *tuning]) == UP_TO_DATE
    assert status_code(decode_cli.main, ["status", "--tune", *recipe.conf("decode", {"decode": ["beam=3"]}),
                                         *tuning]) == STALE


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.parametrize("step", ["prepare_data", "prepare_lang", "make_fbank", "train", "decode", "saliency", "prune",
                                  "adapt"])
def test_a_step_with_a_broken_config_stops_before_launching_jobs(recipe: Recipe, step: str, tmp_path: Path) -> None:
    d, e, out = recipe.data, recipe.exp, tmp_path / "out"
    model = str(recipe.model)
    args = {
        "prepare_data": ["--base-dir", str(recipe.w), str(out)],
        "prepare_lang": [str(d / "local" / "lm_text"), str(out)],
        "make_fbank": [str(d), str(out)],
        "train": [str(d / "fbank"), str(d / "lang"), str(out)],
        "decode": ["--sets", "dev", model, str(d / "fbank"), str(d / "lang"), str(out)],
        "saliency": [model, str(d / "fbank"), str(d / "lang"), str(out)],
        "prune": [model, str(d / "fbank"), str(d / "lang"), str(e / "saliency"), str(out)],
        "adapt": ["--decode-config", str(recipe.tuned), "--pseudo-dir", str(e / "decode" / "baseline"),
                  "--saliency-dir", str(e / "saliency"), model, str(d / "fbank"), str(d / "lang"), str(out)],
    }[step]
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    r = subprocess.run([f"steps/{step}.sh", "--overrides", "no_such_key=1", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "no_such_key" in r.stderr and "no job launched" in r.stderr, r.stderr[-2000:]
    assert not list(tmp_path.glob("**/*.log")), "a job was launched"
