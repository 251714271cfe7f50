"""Device and dtype names."""

from __future__ import annotations

import pytest
import torch

from training.ml.devices import resolve_device, resolve_dtype
from training.ml.model_files import ModelLoadError


def test_resolve_device_and_dtype():
    cpu = resolve_device("cpu")
    assert cpu == torch.device("cpu")
    assert resolve_dtype("auto", cpu) == torch.float32
    assert resolve_dtype("bf16", cpu) == torch.bfloat16 == resolve_dtype("bfloat16", cpu)
    assert resolve_dtype("fp32", cpu) == torch.float32
    with pytest.raises(ModelLoadError):
        resolve_dtype("int3", cpu)
