"""Model-agnostic neuron saliency for the FC layers of any PyTorch model described by an
``FcSpec``: measure (``stats``, ``taylor``), score (``criteria``) and decide (``classify``,
``compare``). A recipe's files and plots of these (``neurons.tsv``, PNGs) are in ``neurosel.recipe``.
"""

from neurosel.saliency.classify import ClassifyConfig, class_counts, classify, classify_values, neurons_of
from neurosel.saliency.compare import (SelectionOverlap, compare_criteria, select_lowest,
                                       select_lowest_global, selection_jaccard)
from neurosel.saliency.criteria import CRITERIA, CriterionInputs, score, score_all
from neurosel.saliency.running import RunningOnRate
from neurosel.saliency.stats import (NeuronStats, StatsCollector, StatsConfig, collect_stats, load_stats,
                                     merge, save_stats)
from neurosel.saliency.taylor import TaylorConfig, TaylorStats, collect_taylor, load_taylor, save_taylor

__all__ = [
    "CRITERIA", "ClassifyConfig", "CriterionInputs", "NeuronStats", "RunningOnRate", "SelectionOverlap",
    "StatsCollector", "StatsConfig", "TaylorConfig", "TaylorStats", "class_counts", "classify",
    "classify_values", "collect_stats", "collect_taylor", "compare_criteria", "load_stats", "load_taylor",
    "merge", "neurons_of", "save_stats", "save_taylor", "score",
    "score_all", "select_lowest", "select_lowest_global", "selection_jaccard",
]
