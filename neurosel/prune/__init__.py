"""Structured pruning of the FC neurons of any PyTorch model described by an ``FcSpec``:
physical removal (``remove_neurons``) or the equivalent masking (``mask_neurons``)."""

from neurosel.prune.mask import NeuronMask, mask_neurons
from neurosel.prune.remove import fold_delta, kept_indices, remove_neurons, set_module
from neurosel.fc import count_parameters, fc_widths

__all__ = ["NeuronMask", "count_parameters", "fc_widths", "fold_delta", "kept_indices", "mask_neurons",
           "remove_neurons", "set_module"]
