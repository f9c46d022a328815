"""The FC neurons of any PyTorch model: their description (``FcSpec``), discovery on a sample input
(``find_fc_layers``) and validation (``check_spec``, ``verify_spec``). Imports torch only."""

from neurosel.fc.discover import FcLayer, FcTrace, find_fc_layers, trace_fc, verify_spec
from neurosel.fc.spec import (ACTIVATIONS, FcSpec, activation_kind, check_spec, count_parameters,
                              default_threshold, fc_widths, get_linear)

__all__ = ["ACTIVATIONS", "FcLayer", "FcSpec", "FcTrace", "activation_kind", "check_spec", "count_parameters",
           "default_threshold", "fc_widths", "find_fc_layers", "get_linear", "trace_fc", "verify_spec"]
