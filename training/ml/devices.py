"""Where a model runs and in which dtype: device and dtype names, and freeing memory."""

from __future__ import annotations

import gc

import torch

from training.ml.model_files import ModelLoadError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/"auto" -> cuda when available else cpu; otherwise ``torch.device(name)``."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} requested but CUDA is not available")
    return device


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/"auto" -> bf16 on a CUDA device that supports it, else float32; a
    ``torch.dtype`` is returned as is."""
    if isinstance(name, torch.dtype):
        return name
    if name is None or name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def as_device(device: str | torch.device) -> torch.device:
    """A device given by name or as a ``torch.device``."""
    return device if isinstance(device, torch.device) else resolve_device(device)


def release_memory() -> None:
    """Free what dropped models held: Python's cycles, then CUDA's cached blocks."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
