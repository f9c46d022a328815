"""The FC neurons of any PyTorch model: their description (``FcSpec``), discovery on a sample input
(``find_fc_layers``) and validation (``check_spec``, ``verify_spec``). Imports torch only."""

from neurosel.fc.spec import (ACTIVATIONS, FcSpec, activation_kind, check_spec, count_parameters,
                              default_threshold, fc_widths, get_linear)

__all__ = ["ACTIVATIONS", "FcSpec", "activation_kind", "check_spec", "count_parameters", "default_threshold",
           "fc_widths", "get_linear"]
