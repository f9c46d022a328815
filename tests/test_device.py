"""Device selection: auto falls back to the CPU without CUDA; naming CUDA where there is none is an error."""

from __future__ import annotations

import pytest
import torch

from neurosel.device import resolve_device
from neurosel.errors import NeuroselError


def test_auto_is_cuda_only_where_torch_sees_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(NeuroselError, match="--device cuda: PyTorch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(NeuroselError, match="expected auto, cpu, cuda"):
        resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(NeuroselError, match="only 1 CUDA device"):
        resolve_device("cuda:1")
