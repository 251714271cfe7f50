"""Reuse the frozen bottom of a network during the PPO update (the "trunk cache").

With `train_top_layers = N`, the input embeddings and blocks 0..k-1 (k = L - N) never
change during a run, so the input of block k for a rollout batch is the same in every
epoch and minibatch of the update. The rollout's no-grad forward records it once; the
update then runs only blocks k.. and the head on it. The maths is unchanged: the frozen
blocks get no gradient either way; only k/L of every update forward is saved.

Works on any model whose blocks `training.ml.memory.decoder_layers` finds and whose input
embeddings feed block 0 directly (Llama, SmolLM2, Qwen2, Mistral). `TrunkCache.verify`
checks that on the real batch, so a model that post-processes its embeddings (Gemma
scales them) turns the cache off instead of computing something else.

A network whose bottom is equal to a cached one (`same_trunk`: the frozen reference and
the policy it started, the RM and the critic initialised from it) can run only its top
blocks on the same recorded trunk, which halves the rollout's scoring forwards.

LoRA PPO (`PPOConfig.lora_r`) runs without it: adapters train in every block, so no block
is frozen (`frozen_prefix` is 0) and there is nothing to record; `prepare_models` does not
set it up then.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from training.ml.memory import decoder_layers, layers_owner


def frozen_prefix(model: nn.Module) -> int:
    """k: the number of leading blocks that, with the input embeddings, train nothing.

    0 (no cache) when the embeddings train, when block 0 trains, or when every block is
    frozen (then nothing runs with gradients anyway)."""
    embeddings = model.get_input_embeddings()  # type: ignore[operator]  # a PreTrainedModel
    if any(p.requires_grad for p in embeddings.parameters()):
        return 0
    layers = decoder_layers(model)
    k = 0
    while k < len(layers) and not any(p.requires_grad for p in layers[k].parameters()):
        k += 1
    return k if k < len(layers) else 0


class _RecordedInput(nn.Module):
    """Stands in for the input embeddings: returns the recorded input of block k."""

    def __init__(self, hidden: torch.Tensor) -> None:
        super().__init__()
        self.hidden = hidden

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.hidden.shape[:2] != input_ids.shape:
            raise ValueError(
                f"recorded trunk {tuple(self.hidden.shape)} does not fit {tuple(input_ids.shape)}"
            )
        return self.hidden


class TrunkCache:
    """Record the input of block k (`record`) and run only blocks k.. on it (`top_only`)."""

    def __init__(self, model: nn.Module, k: int) -> None:
        if k < 1:
            raise ValueError("a trunk cache needs at least one frozen block")
        self.model = model
        self.k = k
        self.layers = decoder_layers(model)
        self.owner = layers_owner(model, self.layers)
        self.verified: bool | None = None  # None until checked on a real batch
        self._running_top_only = False

    @contextmanager
    def record(self) -> Iterator[list[torch.Tensor]]:
        """Inside, every forward appends the (B, L, H) input of block k to the list."""
        captured: list[torch.Tensor] = []

        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if not self._running_top_only:  # block k's input then IS the recorded trunk
                hidden = args[0] if args else kwargs["hidden_states"]
                captured.append(hidden.detach())

        handle = self.layers[self.k].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield captured
        finally:
            handle.remove()

    @contextmanager
    def top_only(self, hidden: torch.Tensor) -> Iterator[None]:
        """Inside, a forward of the model on (B, L) ids runs blocks k.. on `hidden` (B, L, H)
        in place of the embeddings and blocks 0..k-1."""
        model = self.model
        embeddings = model.get_input_embeddings()  # type: ignore[operator]
        all_layers = self.owner.layers
        self.owner.layers = nn.ModuleList(list(self.layers)[self.k :])
        model.set_input_embeddings(_RecordedInput(hidden))  # type: ignore[operator]
        self._running_top_only = True
        try:
            yield
        finally:
            self._running_top_only = False
            self.owner.layers = all_layers
            model.set_input_embeddings(embeddings)  # type: ignore[operator]

    def verify(self, full: torch.Tensor, top: torch.Tensor) -> bool:
        """Record whether the top-only output `top` reproduces the full forward's `full`."""
        self.verified = bool(torch.allclose(full, top, rtol=1e-3, atol=1e-3))
        return self.verified


def _trunk_parameters(model: nn.Module, k: int) -> list[torch.Tensor]:
    embeddings = model.get_input_embeddings()  # type: ignore[operator]
    blocks = decoder_layers(model)[:k]
    return [*embeddings.parameters(), *(p for block in blocks for p in block.parameters())]


def same_trunk(a: nn.Module, b: nn.Module, k: int) -> bool:
    """True when `a` and `b` hold equal input embeddings and blocks 0..k-1, so the input
    of block k is the same in both (policy and reference when PPO starts from the
    reference; critic and RM when the critic starts from the RM)."""
    pa, pb = _trunk_parameters(a, k), _trunk_parameters(b, k)
    return len(pa) == len(pb) and all(
        x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)
        for x, y in zip(pa, pb, strict=True)
    )


def trunk_cache_for(model: nn.Module) -> TrunkCache | None:
    """A cache over the model's frozen bottom blocks, or None when there are none."""
    try:
        k = frozen_prefix(model)
    except (AttributeError, ValueError):  # not a transformers model with findable blocks
        return None
    return TrunkCache(model, k) if k else None


def shared_trunk_cache(cache: TrunkCache | None, other: nn.Module | None) -> TrunkCache | None:
    """A cache that runs `other`'s top blocks on `cache`'s trunk, if their bottoms are equal."""
    if cache is None or other is None:
        return None
    try:
        return TrunkCache(other, cache.k) if same_trunk(cache.model, other, cache.k) else None
    except (AttributeError, ValueError):
        return None
