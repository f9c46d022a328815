"""The one owner of a recipe run's on-disk names (DESIGN.md, "Names that tests and users rely on").

Every other module, ``steps/*.sh`` and ``run.sh`` get these names from here (the shell through
``python -m neurosel.bin.layout``), so a name is spelled once. Imports the standard library only:
the shell asks it at every stage, and it must start fast.

Splits: ``train``, ``dev``, ``test`` (in-domain) and per OOD condition ``c`` (lower-case letters
and ``_``) ``ood_adapt_<c>`` (adaptation audio) and ``ood_<c>`` (its test set).

Files of a data dir (stage 0's ``manifests/``, stage 1's ``fbank/``): ``cuts_<split>.jsonl.gz``;
the fbank dir also ``cmvn.npz`` and the jobs' ``parts/cuts_<split>.<job>.jsonl.gz``.

Systems and where they go under ``exp/``:

- a system id is ``<system>`` (run once), ``<system>.s<seed>`` (one seed of several) or, for an
  adaptation to every condition's data at once, ``<system>_pooled.s<seed>``;
- ``baseline/`` (stage 3), ``saliency/<reference-set>/`` (stage 5; reference sets ``dev``, each
  ``ood_adapt_<c>`` and ``pooled``), ``prune/<system-id>/`` (stage 6; a ``condprune_*`` system,
  pruned per OOD condition, has ``adapted_<c>/`` per condition), ``adapt/<system-id>/``
  with ``adapted_<c>/`` per condition, ``adapt/lr/<system>/`` and ``adapt/shift_scores/<set>/`` (stage 7);
- ``decode/<system-id>/<set>/`` and, for a model adapted to condition ``c``,
  ``decode/<system-id>/adapted_<c>/<set>/``.
"""

from __future__ import annotations

import re
from pathlib import Path

TRAIN, DEV, TEST = "train", "dev", "test"
POOLED = "pooled"
BASELINE = "baseline"
_ADAPT, _OOD = "ood_adapt_", "ood_"
_ADAPTED = "adapted_"
SPLIT_NAME = re.compile(r"^(train|dev|test|ood_adapt_[a-z][a-z_]*|ood_[a-z][a-z_]*)$")
_CUTS = re.compile(r"^cuts_(?P<split>.+)\.jsonl\.gz$")
_SYSTEM_ID = re.compile(r"^(?P<system>.+?)(\.s(?P<seed>\d+))?$")


def adapt_set(condition: str) -> str:
    """``ood_adapt_<condition>``: the condition's adaptation audio."""
    return f"{_ADAPT}{condition}"


def ood_set(condition: str) -> str:
    """``ood_<condition>``: the condition's test set."""
    return f"{_OOD}{condition}"


def is_adapt_set(name: str) -> bool:
    """True for ``ood_adapt_<c>``."""
    return name.startswith(_ADAPT)


def is_ood_set(name: str) -> bool:
    """True for an OOD test set ``ood_<c>`` (not an adaptation set)."""
    return name.startswith(_OOD) and not is_adapt_set(name)


def is_test_set(name: str) -> bool:
    """``test`` and every ``ood_<c>``: the sets results are reported on (not dev, nor the
    adaptation sets, nor an adapted model's in-domain ``test.<c>``)."""
    return name == TEST or is_ood_set(name)


def is_split_name(name: str) -> bool:
    """True for a split name of DESIGN.md: ``train``, ``dev``, ``test``, ``ood_adapt_<c>``,
    ``ood_<c>``, a condition ``c`` being lower-case letters and underscores."""
    return SPLIT_NAME.match(name) is not None


def condition_of(name: str) -> str:
    """``c`` of ``ood_adapt_<c>`` or ``ood_<c>``; ValueError for an in-domain split."""
    for prefix in (_ADAPT, _OOD):
        if name.startswith(prefix):
            return name[len(prefix):]
    raise ValueError(f"'{name}' is not an OOD split")


def cuts_name(split: str) -> str:
    """``cuts_<split>.jsonl.gz``."""
    return f"cuts_{split}.jsonl.gz"


def cuts_path(data_dir: str | Path, split: str) -> Path:
    """``<data_dir>/cuts_<split>.jsonl.gz`` (a manifests or fbank dir)."""
    return Path(data_dir) / cuts_name(split)


def parts_dir(fbank_dir: str | Path) -> Path:
    """``<fbank_dir>/parts``: the feature jobs' shares until they are merged."""
    return Path(fbank_dir) / "parts"


def cuts_part_path(fbank_dir: str | Path, split: str, job: int) -> Path:
    """``<fbank_dir>/parts/cuts_<split>.<job>.jsonl.gz``: one feature job's share of a split."""
    return parts_dir(fbank_dir) / f"cuts_{split}.{job}.jsonl.gz"


def cmvn_path(fbank_dir: str | Path) -> Path:
    """``<fbank_dir>/cmvn.npz``: the global CMVN statistics."""
    return Path(fbank_dir) / "cmvn.npz"


def bpe_model(lang_dir: str | Path) -> Path:
    """``<lang_dir>/bpe.model``."""
    return Path(lang_dir) / "bpe.model"


def decoding_graph(lang_dir: str | Path) -> Path:
    """``<lang_dir>/TLG.fst``."""
    return Path(lang_dir) / "TLG.fst"


def splits(data_dir: str | Path) -> list[str]:
    """The splits with a ``cuts_<split>.jsonl.gz`` in ``data_dir``, sorted; none if it does not exist."""
    found = (_CUTS.match(p.name) for p in Path(data_dir).glob("cuts_*.jsonl.gz"))
    return sorted(m.group("split") for m in found if m)


def conditions(data_dir: str | Path) -> list[str]:
    """The OOD conditions of the ``ood_adapt_<c>`` splits in ``data_dir``, sorted."""
    return sorted(condition_of(s) for s in splits(data_dir) if is_adapt_set(s))


def adapt_sets(data_dir: str | Path) -> list[str]:
    """The ``ood_adapt_<c>`` splits in ``data_dir``, sorted."""
    return [adapt_set(c) for c in conditions(data_dir)]


def test_sets(data_dir: str | Path) -> list[str]:
    """The test sets (``is_test_set``) in ``data_dir``, sorted."""
    return [s for s in splits(data_dir) if is_test_set(s)]


def system_id(system: str, seed: int | None = None, pooled: bool = False) -> str:
    """``<system>[_pooled][.s<seed>]``."""
    return system + ("_pooled" if pooled else "") + ("" if seed is None else f".s{seed}")


def parse_system_id(name: str) -> tuple[str, int | None]:
    """(system, seed) of a system id: ``prune_random.s2`` -> (``prune_random``, 2),
    ``adapt_all_pooled.s42`` -> (``adapt_all_pooled``, 42), ``baseline`` -> (``baseline``, None)."""
    m = _SYSTEM_ID.match(name)
    if m is None:
        raise ValueError("an empty system id")
    return m.group("system"), None if m.group("seed") is None else int(m.group("seed"))


def is_pooled(name: str) -> bool:
    """True for the id (or the system part of one) of a pooled adaptation system."""
    return parse_system_id(name)[0].endswith("_pooled")


def adapted_name(condition: str) -> str:
    """``adapted_<c>``: the sub-folder of a model adapted to condition ``c``."""
    return f"{_ADAPTED}{condition}"


def adapted_condition(name: str) -> str | None:
    """``c`` of ``adapted_<c>``, None for any other folder name."""
    return name[len(_ADAPTED):] if name.startswith(_ADAPTED) else None


def adapted_test_set(test_set: str, condition: str) -> str:
    """The reported name of a model adapted to ``c`` on ``test_set``: ``ood_<c>`` itself; the
    in-domain ``test`` as ``test.<c>`` (what adapting to ``c`` costs in-domain)."""
    return test_set if is_ood_set(test_set) else f"{test_set}.{condition}"


def is_in_domain_after(name: str) -> bool:
    """True for ``test.<c>`` (``adapted_test_set``): in-domain test of a model adapted or pruned
    for condition ``c``."""
    return name.startswith(TEST + ".")


def baseline_dir(exp_dir: str | Path) -> Path:
    """``<exp>/baseline``: stage 3."""
    return Path(exp_dir) / BASELINE


def decode_root(exp_dir: str | Path) -> Path:
    """``<exp>/decode``: every system's decode dirs."""
    return Path(exp_dir) / "decode"


def decode_dir(exp_dir: str | Path, system: str) -> Path:
    """``<exp>/decode/<system-id>``."""
    return decode_root(exp_dir) / system


def saliency_dir(exp_dir: str | Path) -> Path:
    """``<exp>/saliency``: stage 5, one sub-folder per reference set."""
    return Path(exp_dir) / "saliency"


def prune_dir(exp_dir: str | Path) -> Path:
    """``<exp>/prune``: stage 6, one sub-folder per system id."""
    return Path(exp_dir) / "prune"


def adapt_dir(exp_dir: str | Path) -> Path:
    """``<exp>/adapt``: stage 7, one sub-folder per system id."""
    return Path(exp_dir) / "adapt"


BASELINE_FT = "baseline_ft"


def retrain_dir(exp_dir: str | Path) -> Path:
    """``<exp>/retrain``: pruned systems fine-tuned on train, and ``baseline_ft`` (opt-in)."""
    return Path(exp_dir) / "retrain"


def retrained(system: str) -> str:
    """``<system>_retrain``: a pruned system fine-tuned after removal (its ids carry the
    retraining seed: ``<system>_retrain.s<k>``, ``baseline_ft.s<k>``)."""
    return f"{system}_retrain"


def is_retrained(system: str) -> bool:
    """True for a pruned system fine-tuned after removal (``retrained``), without its seed."""
    return system.endswith(retrained(""))


def retrain_lr_dir(retrain_dir: str | Path) -> Path:
    """``<retrain>/lr``: the retraining's learning-rate search on dev (``lr.json``, its marker and
    the search's best fine-tuned baseline, which is ``baseline_ft`` of the first seed)."""
    return Path(retrain_dir) / "lr"


CONDITION_PRUNED = "condprune_"


def condition_pruned(selection: str) -> str:
    """``condprune_<selection>``: removal as unsupervised adaptation. For each OOD condition ``c``
    the baseline pruned of the neurons that ``ood_adapt_<c>``'s statistics select (no transcript
    read): one model per condition in ``prune/<system-id>/adapted_<c>/``, decoded like an adapted
    system into ``decode/<system-id>/adapted_<c>/{ood_<c>,test}``."""
    return f"{CONDITION_PRUNED}{selection}"


def is_condition_pruned(name: str) -> bool:
    """True for the id (or the system part of one) of a ``condprune_*`` system, retrained or not."""
    return parse_system_id(name)[0].startswith(CONDITION_PRUNED)


SELECTED_FROM = "_from_"


def selected_from(system: str, reference: str) -> str:
    """``<system>_from_<reference>``: ``system`` with its hyper/hypo neurons chosen from stage 5's
    statistics of the set ``reference`` (e.g. ``dev``) instead of its own source: stage 6's
    ``prune_hyper_hypo_from_dev``, stage 7's ``adapt_selective_full_from_dev`` (each condition's
    own adaptation audio otherwise)."""
    return f"{system}{SELECTED_FROM}{reference}"


def selection_source(name: str) -> tuple[str, str] | None:
    """(system, reference set) of a ``<system>_from_<reference>`` name (seed and a retraining
    suffix aside), or None."""
    base = parse_system_id(name)[0].removesuffix(retrained(""))
    if SELECTED_FROM not in base:
        return None
    system, reference = base.rsplit(SELECTED_FROM, 1)
    return (system, reference) if system and reference else None


def condition_sets(condition: str, sets: list[str]) -> list[str]:
    """The sets among ``sets`` that a model of ``condition`` is scored on: ``ood_<c>`` and ``test``."""
    return [s for s in sets if s in (ood_set(condition), TEST)]


def rates_path(adapt_root: str | Path, system: str) -> Path:
    """``<exp>/adapt/lr/<system>/rates.json``: the learning rates chosen for ``system``."""
    return Path(adapt_root) / "lr" / system / "rates.json"


def adapt_shift_scores_path(adapt_root: str | Path, set_name: str) -> Path:
    """``<exp>/adapt/shift_scores/<set>/scores.tsv``: the per-utterance shift score of an
    adaptation set that stage 7's ``*_shift<NN>`` systems keep the least shifted utterances by."""
    return Path(adapt_root) / "shift_scores" / set_name / "scores.tsv"


def pending_jobs_path(adapt_root: str | Path, what: str) -> Path:
    """``<exp>/adapt/log/pending.<what>``: stage 7's plan of the jobs left to run (``tunes`` or
    ``units``), one line of unit numbers per launcher job."""
    return Path(adapt_root) / "log" / f"pending.{what}"


# The shift command (neurosel.recipe.shift, issue 18): exp/shift/ holds what ``fit`` writes, a
# scored audio's out dir what ``score`` writes. Severity sets (neurosel.recipe.severity, opt-in)
# are test-only sets ``sev_<c>.<level>`` made from ``test``: their features in data/severity/,
# their baseline decodes in exp/shift/severity/decode/<set>/.
SHIFT_SIGNALS, SHIFT_EVALUATION, SHIFT_PREDICTOR = "signals.tsv", "evaluation.json", "predictor.json"
SHIFT_UTTERANCES, SHIFT_SUMMARY, SHIFT_PLOT = "utterances.tsv", "summary.json", "shift.png"
_SEVERITY = "sev_"
SEVERITY_NAME = re.compile(r"^sev_(?P<condition>[a-z][a-z_]*)\.(?P<level>[a-z0-9_]+)$")


def shift_dir(exp_dir: str | Path) -> Path:
    """``<exp>/shift``: the shift command's fitted predictor and its evaluation."""
    return Path(exp_dir) / "shift"


def severity_set(condition: str, level: str) -> str:
    """``sev_<condition>.<level>``: a test-only set of ``test`` degraded by ``condition`` at ``level``."""
    name = f"{_SEVERITY}{condition}.{level}"
    if SEVERITY_NAME.match(name) is None:
        raise ValueError(f"'{name}' is not a severity set name (sev_<condition>.<level>, [a-z0-9_])")
    return name


def is_severity_set(name: str) -> bool:
    """True for ``sev_<c>.<level>``."""
    return SEVERITY_NAME.match(name) is not None


def severity_condition(name: str) -> str:
    """``c`` of ``sev_<c>.<level>``; ValueError for any other name."""
    m = SEVERITY_NAME.match(name)
    if m is None:
        raise ValueError(f"'{name}' is not a severity set")
    return m.group("condition")


def severity_data_dir(workdir: str | Path) -> Path:
    """``<workdir>/data/severity``: the severity sets' wavs, cuts and features (CMVN: stage 1's)."""
    return Path(workdir) / "data" / "severity"


def severity_decode_dir(exp_dir: str | Path) -> Path:
    """``<exp>/shift/severity/decode``: the baseline's decodes of the severity sets."""
    return shift_dir(exp_dir) / "severity" / "decode"
