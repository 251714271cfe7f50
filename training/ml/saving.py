"""Writing model folders atomically: safetensors into a temporary sibling, then a rename.

A crash never leaves a half-written folder under the final name, so a folder that exists
is complete.
"""

from __future__ import annotations

import copy
import os
import shutil
import uuid
from pathlib import Path

from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from training.ml.model_files import ModelLoadError


def temp_sibling(folder: Path) -> Path:
    """A new empty hidden folder next to ``folder``, to be renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def replace_folder(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an existing folder is moved aside, then removed."""
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


def _unwrap_for_saving(model: nn.Module) -> PreTrainedModel:
    """A plain transformers model: LoRA adapters (peft) are merged into a copy."""
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        return copy.deepcopy(model).merge_and_unload()  # type: ignore[operator]
    return model  # type: ignore[return-value]


def save_pretrained_atomic(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    out_dir: str | Path,
    *,
    extra_files: dict[str, str | bytes] | None = None,
) -> Path:
    """Write a safetensors ``save_pretrained`` folder; it appears only when complete."""
    folder = Path(out_dir).expanduser()
    tmp = temp_sibling(folder)
    try:
        _unwrap_for_saving(model).save_pretrained(str(tmp))  # safetensors only in transformers 5
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for name, content in (extra_files or {}).items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        if not any(tmp.glob("*.safetensors")):
            raise ModelLoadError(f"save produced no safetensors weights for {folder}")
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
