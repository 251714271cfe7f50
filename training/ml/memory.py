"""What a trainer trains, and what it keeps in memory: freezing, LoRA, checkpointing.

``MemoryConfig`` holds the options every trainer shares (train only the top blocks, LoRA
adapters through peft, gradient checkpointing); ``prepare_for_training`` applies them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn
from transformers import PreTrainedModel


def unwrap_peft(model: nn.Module) -> Any:
    """The transformers model inside a peft wrapper (or ``model`` itself), typed loosely."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (``model.model.layers`` for Llama-like models)."""
    base = unwrap_peft(model)
    backbone = getattr(base, "base_model", base)
    for holder in (backbone, getattr(backbone, "model", None)):
        layers = getattr(holder, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}")


def freeze_all_but_top_layers(model: nn.Module, n: int) -> int:
    """Freeze everything except the top ``n`` blocks, the final norm and any head.

    ``n = 0`` trains only the norm and the head; ``n >= len(blocks)`` trains every block.
    A head is a top-level module outside the backbone (``lm_head``, ``score``, a value
    head). Parameters tied to the input embedding stay frozen: a tied ``lm_head`` would
    otherwise unfreeze the whole vocabulary matrix at the bottom of the network.
    Returns the number of trainable parameters.
    """
    layers = decoder_layers(model)
    for param in model.parameters():
        param.requires_grad_(False)
    trainable: list[nn.Module] = list(layers[max(len(layers) - n, 0) :]) if n > 0 else []
    backbone = layers_owner(model, layers)
    norm = getattr(backbone, "norm", None)
    if isinstance(norm, nn.Module):
        trainable.append(norm)
    trainable.extend(_heads(model, backbone))
    base = unwrap_peft(model)
    embedding = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    frozen_ids = {id(p) for p in embedding.parameters()} if embedding is not None else set()
    for module in trainable:
        for param in module.parameters():
            if id(param) not in frozen_ids:
                param.requires_grad_(True)
    return count_trainable(model)


def layers_owner(model: nn.Module, layers: nn.ModuleList) -> nn.Module:
    """The module whose ``layers`` attribute is ``layers`` (the backbone)."""
    for module in model.modules():
        if getattr(module, "layers", None) is layers:
            return module
    raise ValueError("decoder blocks have no owner module")


def _heads(model: nn.Module, backbone: nn.Module) -> list[nn.Module]:
    base = unwrap_peft(model)
    inside = {id(m) for m in backbone.modules()}
    return [m for _, m in base.named_children() if id(m) not in inside and m is not backbone]


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute block activations in backward (non-reentrant) and turn the KV cache off."""
    base = unwrap_peft(model)
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # the transformers >= 5.x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base.config.use_cache = False


def disable_gradient_checkpointing(model: nn.Module) -> None:
    """Undo :func:`enable_gradient_checkpointing` (turns the KV cache back on)."""
    base = unwrap_peft(model)
    if hasattr(base, "activation_checkpointing_disable"):
        base.activation_checkpointing_disable()
    else:
        base.gradient_checkpointing_disable()
    base.config.use_cache = True


def is_gradient_checkpointing(model: nn.Module) -> bool:
    base = unwrap_peft(model)
    return bool(getattr(base, "is_activation_checkpointing", False))


DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def lora_targets(spec: str) -> str | list[str]:
    """The ``target_modules`` of a comma-separated setting ("q_proj,v_proj"); peft's own
    "all-linear" (every linear layer but the output head) passes through."""
    if spec.strip() == "all-linear":
        return "all-linear"
    return [name.strip() for name in spec.split(",") if name.strip()]


def apply_lora(
    model: nn.Module,
    r: int,
    alpha: int,
    target_modules: str | list[str] | tuple[str, ...] = DEFAULT_LORA_TARGETS,
    *,
    modules_to_save: list[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (peft); only adapters and ``modules_to_save`` train.

    The adapters are injected into ``model``'s own layers (the wrapper shares them); their
    B matrices start at zero, so the wrapped model computes exactly what ``model`` did."""
    from peft import LoraConfig, get_peft_model  # optional path: imported only when used

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=target_modules if isinstance(target_modules, str) else list(target_modules),
        modules_to_save=modules_to_save,
    )
    return get_peft_model(model, config)


def is_peft(model: nn.Module) -> bool:
    """True for a peft wrapper (a model with LoRA adapters)."""
    return hasattr(model, "peft_config") and callable(getattr(model, "disable_adapter", None))


class AdaptersDisabled(nn.Module):
    """The frozen base under a LoRA-wrapped model, without a copy of it: a forward runs
    ``model`` in eval mode inside peft's ``disable_adapter()``, so every LoRA layer computes
    its base layer alone and a ``modules_to_save`` head answers with its original copy.

    PPO's reference (the SFT base under the policy's adapters) and RM scorer (the RM base
    under the critic's) are such views. ``model`` is not registered as a submodule, so the
    view owns no parameters: freezing it, or moving it to eval mode, leaves the trained
    model alone."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        wrappers = [m for m in model.modules() if is_peft(m)]
        if not wrappers:
            raise ValueError(f"{type(model).__name__} has no LoRA adapters to disable")
        self.__dict__["model"] = model  # unregistered: see the class docstring
        self.__dict__["_peft"] = wrappers[0]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        model: nn.Module = self.__dict__["model"]
        was_training = model.training
        model.eval()
        try:
            with self.__dict__["_peft"].disable_adapter():
                return model(*args, **kwargs)
        finally:
            model.train(was_training)


@dataclass
class MemoryConfig:
    """CPU/GPU budget options shared by every trainer (see ``prepare_for_training``)."""

    train_top_layers: int | None = None
    """Freeze all but the top N blocks, the final norm and the head (None: train all)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    lora_r: int | None = None
    """LoRA rank through peft (None: full fine-tuning)."""
    lora_alpha: int = 16
    """LoRA scaling numerator (effective scale alpha / r)."""
    lora_target_modules: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS)
    """Linear layers that get LoRA adapters."""
    lora_modules_to_save: list[str] | None = None
    """Extra modules trained in full with LoRA (e.g. ``["score"]`` for a reward head)."""


def prepare_for_training(model: PreTrainedModel, memory: MemoryConfig) -> nn.Module:
    """Apply the memory options; returns the model to train (a peft wrapper with LoRA)."""
    prepared: nn.Module = model
    if memory.train_top_layers is not None:
        freeze_all_but_top_layers(model, memory.train_top_layers)
    if memory.lora_r:
        prepared = apply_lora(
            model,
            memory.lora_r,
            memory.lora_alpha,
            memory.lora_target_modules,
            modules_to_save=memory.lora_modules_to_save,
        )
    if memory.gradient_checkpointing:
        enable_gradient_checkpointing(prepared)
    return prepared
