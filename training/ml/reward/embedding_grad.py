"""The trained input embedding's gradient in one persistent buffer, filled sparsely.

A step reads a few thousand rows of the (V, H) embedding (SmolLM2: 49,152 x H), yet its
dense backward allocates a fresh zero (V, H) gradient every step: on CPU the page faults
of that 50 MB allocation (H = 256) cost ~0.1 s a step at 1 thread, more than the fused
AdamW step itself. Here the embedding emits a sparse gradient (``nn.Embedding.sparse``)
and a post-accumulate hook adds it into a dense buffer kept across steps, which becomes
``weight.grad``: the same values (up to float summation order), so clipping and AdamW
(which needs a dense gradient) run unchanged. Later micro-batches of a step accumulate
straight into the buffer (dense += sparse, in place).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle


class EmbeddingGradBuffer:
    """Installed on one trained ``nn.Embedding``; ``remove()`` restores the dense path."""

    def __init__(self, embedding: nn.Embedding) -> None:
        self.embedding = embedding
        self.buffer = torch.zeros_like(embedding.weight)  # (V, H), reused every step
        embedding.sparse = True
        self._handle: RemovableHandle = embedding.weight.register_post_accumulate_grad_hook(
            self._densify
        )

    def _densify(self, weight: Tensor) -> None:
        grad = weight.grad
        if grad is None or not grad.is_sparse:
            return  # a later micro-batch: already accumulated into the buffer
        self.buffer.zero_()  # resident memory: a memset, no page faults
        self.buffer.index_add_(0, grad._indices()[0], grad._values())
        weight.grad = self.buffer

    def remove(self) -> None:
        self._handle.remove()
        self.embedding.sparse = False
        if self.embedding.weight.grad is self.buffer:
            self.embedding.weight.grad = None


def install_embedding_grad_buffer(model: nn.Module) -> EmbeddingGradBuffer | None:
    """Put the input embedding of ``model`` (a transformers model, or a module holding one)
    on the sparse-into-buffer path when it is a trained ``nn.Embedding`` of a one-process
    run; None otherwise (frozen, LoRA, or several processes, where DDP all-reduces dense
    gradient buckets)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return None
    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if type(embedding) is not nn.Embedding or not embedding.weight.requires_grad:
        return None
    return EmbeddingGradBuffer(embedding)
