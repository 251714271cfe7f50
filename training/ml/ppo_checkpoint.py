"""PPO checkpoints: safetensors and JSON only, written atomically, never unpickled.

    ROOT/step-NNNNNN/
        policy/                 a save_pretrained folder (usable as a model on its own)
        critic.safetensors      the whole critic module (head and offset included)
        optimizer.safetensors   Adam's per-parameter state as flat named tensors
        state.json              step, kl_coef, seed, config

A LoRA run (`PPOConfig.lora_r`) writes `policy.safetensors` in place of `policy/`, and its
`critic.safetensors`, with only the trained tensors (adapters and the critic's head): the
frozen bases are the artifacts the run loads again on resume.

A checkpoint is written under a temporary name and renamed once complete, so a folder
named step-NNNNNN with a state.json is always whole. A checkpoint that must not be resumed
from (unreadable, or trained under another config) is renamed ``.corrupt-step-NNNNNN-TIME``
or ``.superseded-step-NNNNNN-TIME``: kept to inspect, never resumed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file, save_model
from torch import nn

from training.ml.configs import PPOConfig
from training.ml.memory import is_peft
from training.ml.saving import save_pretrained_atomic

CHECKPOINT_PATTERN = "step-[0-9][0-9][0-9][0-9][0-9][0-9]"
# What a resumed run may change (how long, how often it saves, how it batches a forward
# pass); any other difference means the checkpoint trained something else.
# (gradient checkpointing and the frozen-trunk cache save memory, the resumed controller
# takes its beta from the checkpoint).
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "checkpoint_every",
        "keep_checkpoints",
        "forward_batch_size",
        "gradient_checkpointing",
        "cache_frozen_trunk",
        "init_kl_coef",
    }
)
Log = Callable[[str], None]


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
        if is_peft(policy):
            save_file(trained_tensors(policy), str(tmp / "policy.safetensors"))
            save_file(trained_tensors(critic), str(tmp / "critic.safetensors"))
        else:
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
        if is_peft(policy):
            _load_trained(policy, folder / "policy.safetensors")
            _load_trained(critic, folder / "critic.safetensors")
        else:
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


def trained_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters of `module` that train (LoRA adapters, a head), by name."""
    return {
        name: param.detach().contiguous()
        for name, param in module.named_parameters()
        if param.requires_grad
    }


def _load_trained(module: nn.Module, path: Path) -> None:
    """Copy the tensors of `trained_tensors` back; they must be exactly the ones that train."""
    params = dict(module.named_parameters())
    saved = load_file(str(path), device=str(next(module.parameters()).device))
    wanted = {name for name, param in params.items() if param.requires_grad}
    if set(saved) != wanted:
        raise ValueError(
            f"trained tensors do not match the model: missing {sorted(wanted - set(saved))}, "
            f"unexpected {sorted(set(saved) - wanted)}"
        )
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor)


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


# --------------------------------------------------------------------------- housekeeping


def run_checkpoint_dir(
    root: str | Path, *, round_id: int, reward_model_id: int | None, init_id: int, rules: Any = ()
) -> Path:
    """Where one round's PPO writes resumable checkpoints: one folder per round, RM,
    initial policy and reward rules, so a retried PPO stage continues where the failed
    attempt stopped, and never on top of another reward (a retried RM stage makes a new
    RM; rules are part of the reward but not of PPOConfig)."""
    name = f"round-{round_id}-rm-{reward_model_id}-from-{init_id}"
    if rules:
        digest = hashlib.sha256(json.dumps(rules, sort_keys=True).encode()).hexdigest()[:10]
        name += f"-rules-{digest}"
    return Path(root) / name


def set_aside_foreign_checkpoints(root: str | Path, config: PPOConfig, log: Log) -> None:
    """Checkpoints written under another PPO config (the settings changed after the
    failure) are renamed `.superseded-...`: the retry starts over instead of resuming
    weights and optimizer state that belong to a different run."""
    wanted = {k: v for k, v in asdict(config).items() if k not in RESUMABLE_CHANGES}
    for folder in sorted(Path(root).glob(CHECKPOINT_PATTERN)):
        try:
            saved = json.loads((folder / "state.json").read_text()).get("config") or {}
        except (OSError, ValueError):
            continue  # unreadable: train_ppo reports it and it is set aside as corrupt
        changed = sorted(k for k, v in wanted.items() if k in saved and saved[k] != v)
        if changed:
            _set_aside(
                folder,
                "superseded",
                log,
                f"checkpoint {folder.name} was trained "
                f"with other {', '.join(changed)}; starting over",
            )


def set_aside_newest_checkpoint(root: str | Path, error: Exception, log: Log) -> None:
    """After ``error`` (a CheckpointError) the newest checkpoint is renamed `.corrupt-...`,
    so the next attempt resumes from the one before it, or from the start; with no
    checkpoint left the error is not the checkpoint's, and is raised."""
    newest = latest_checkpoint(root)
    if newest is None:
        raise error
    message = f"{error}; set aside, going on from the checkpoint before it (or the start)"
    _set_aside(newest, "corrupt", log, message)


def remove_checkpoints(root: str | Path) -> None:
    """Delete the step folders of a finished run (the published model is its final state);
    the ones set aside stay."""
    for done in Path(root).glob("step-*"):
        shutil.rmtree(done, ignore_errors=True)


def _set_aside(folder: Path, why: str, log: Log, message: str) -> None:
    """Rename a checkpoint `.{why}-step-N-TIME`: no longer resumed from, kept to inspect."""
    folder.rename(folder.with_name(f".{why}-{folder.name}-{int(time.time())}"))
    log(message)
