"""PPO checkpoints: safetensors and JSON only, written atomically, never unpickled.

    ROOT/step-NNNNNN/
        policy/                 a save_pretrained folder (usable as a model on its own)
        critic.safetensors      the whole critic module (head and offset included)
        optimizer.safetensors   Adam's per-parameter state as flat named tensors
        state.json              step, kl_coef, seed, config

A checkpoint is written under a temporary name and renamed once complete, so a folder
named step-NNNNNN with a state.json is always whole.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from training.ml.models import save_pretrained_atomic

CHECKPOINT_PATTERN = "step-[0-9][0-9][0-9][0-9][0-9][0-9]"


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from; the message names its folder."""


def save_checkpoint(
    root: str | Path,
    state: dict[str, Any],
    *,
    policy: nn.Module,
    critic: nn.Module,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    keep: int = 2,
) -> Path:
    """Write `root/step-{state["step"]:06d}/`, then keep only the newest `keep` checkpoints."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{int(state['step']):06d}"
    tmp = root / f".{final.name}.tmp-{time.time_ns()}"
    tmp.mkdir()
    try:
        save_pretrained_atomic(policy, tokenizer, tmp / "policy")
        save_model(critic, str(tmp / "critic.safetensors"))
        save_file(optimizer_tensors(optimizer), str(tmp / "optimizer.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=2, default=str))
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(root.glob(CHECKPOINT_PATTERN))[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint folder under `root` (temporary folders are ignored)."""
    found = sorted(p for p in Path(root).glob(CHECKPOINT_PATTERN) if (p / "state.json").is_file())
    return found[-1] if found else None


def load_checkpoint(
    folder: Path, *, policy: nn.Module, critic: nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Load weights and optimizer state into the live objects; returns state.json.

    Raises CheckpointError naming the folder when anything is missing, unreadable or
    does not fit the models."""
    try:
        state = json.loads((folder / "state.json").read_text())
        int(state["step"]), float(state["kl_coef"])
        _load_weights(policy, sorted((folder / "policy").glob("*.safetensors")))
        _load_weights(critic, [folder / "critic.safetensors"])
        _load_optimizer(optimizer, load_file(str(folder / "optimizer.safetensors")))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        raise CheckpointError(f"cannot resume from checkpoint {folder}: {exc}") from exc
    return state


def _load_weights(module: nn.Module, files: list[Path]) -> None:
    """Copy safetensors weights into `module`; keys left out must be tied to loaded ones."""
    if not files:
        raise ValueError("no safetensors weights")
    device = next(module.parameters()).device
    state: dict[str, torch.Tensor] = {}
    for path in files:
        state.update(load_file(str(path), device=str(device)))
    missing, unexpected = module.load_state_dict(state, strict=False)
    own = module.state_dict()
    loaded = {own[key].data_ptr() for key in state if key in own}
    untied = [key for key in missing if own[key].data_ptr() not in loaded]
    if unexpected or untied:
        raise ValueError(
            f"weights do not match the model: missing {untied}, unexpected {unexpected}"
        )


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as flat named tensors ("<index>.<name>")."""
    tensors = {}
    for index, values in optimizer.state_dict()["state"].items():
        for name, value in values.items():
            tensor = value if torch.is_tensor(value) else torch.tensor(value)
            tensors[f"{index}.{name}"] = tensor.detach().contiguous()
    return tensors


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    current = optimizer.state_dict()
    n_params = sum(len(group["params"]) for group in current["param_groups"])
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        index, _, name = key.partition(".")
        if not index.isdigit() or int(index) >= n_params:
            raise ValueError(f"optimizer state {key!r} does not match the trainable parameters")
        state.setdefault(int(index), {})[name] = tensor
    optimizer.load_state_dict({"state": state, "param_groups": current["param_groups"]})
