"""Which device a stage runs on: ``--device auto|cpu|cuda[:N]`` (``auto`` by default).

``auto`` is the first CUDA device when PyTorch sees one, else the CPU, so a machine without a GPU
runs everything on the CPU with unchanged results, and one with a GPU uses it without being told.
Naming ``cuda`` where there is none is an error, never a silent fall-back.
"""

from __future__ import annotations

import torch

from neurosel.errors import NeuroselError

CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"`` -> a ``torch.device`` that exists here."""
    if name == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise NeuroselError(f"--device {name}: PyTorch sees no CUDA device here (torch "
                                f"{torch.__version__}); use --device cpu or auto")
        index = int(name[5:]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise NeuroselError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
        return torch.device("cuda", index)
    raise NeuroselError(f"--device {name}: expected auto, cpu, cuda or cuda:<index>")
