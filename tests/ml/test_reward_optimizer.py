"""The RM step's speed-ups give the reference step's numbers: fused AdamW against torch's
single-tensor AdamW, the buffered sparse embedding gradient against the dense one."""

import copy

import pytest
import torch
from torch import nn

from training.ml.configs import RMConfig
from training.ml.loading import load_causal_lm
from training.ml.reward.embedding_grad import install_embedding_grad_buffer
from training.ml.reward.model import RewardModel
from training.ml.reward.train import _optimizer

# fp32 weights after 3 AdamW steps at lr 1e-2: fused and single-tensor kernels differ only in
# float rounding (~1e-7 relative); a wrong update (a missed step, weight decay on the wrong
# group, a lost gradient row) moves weights by ~lr = 1e-2
ATOL = 1e-5


@pytest.fixture
def rm() -> RewardModel:
    lm, _ = load_causal_lm("tiny")
    torch.manual_seed(0)
    return RewardModel.from_causal_lm(lm).float()


def _batches(vocab: int, steps: int) -> list[list[torch.Tensor]]:
    """``steps`` steps of two micro-batches of (3, 7) token ids each."""
    generator = torch.Generator().manual_seed(1)
    return [
        [torch.randint(0, vocab, (3, 7), generator=generator) for _ in range(2)]
        for _ in range(steps)
    ]


def _train(model: RewardModel, optimizer: torch.optim.Optimizer, batches: list) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    for micro in batches:
        optimizer.zero_grad(set_to_none=True)
        for ids in micro:
            model(ids, torch.ones_like(ids)).square().mean().backward()
        nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()


def _reference_optimizer(model: nn.Module, config: RMConfig) -> torch.optim.AdamW:
    """The AdamW torch runs by default on CPU: one tensor at a time, no foreach, no fusion."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": config.weight_decay},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.lr, foreach=False, fused=False)


def test_the_rm_step_matches_the_reference_adamw_with_a_dense_embedding_gradient(
    rm: RewardModel,
) -> None:
    config = RMConfig(lr=1e-2, weight_decay=0.1)
    reference, initial = copy.deepcopy(rm), copy.deepcopy(rm)
    batches = _batches(rm._base().config.vocab_size, steps=3)

    optimizer = _optimizer(rm, config)
    assert optimizer.defaults["fused"] is True  # the product's default path on CPU
    buffer = install_embedding_grad_buffer(rm._base())
    assert buffer is not None
    _train(rm, optimizer, batches)
    buffer.remove()
    _train(reference, _reference_optimizer(reference, config), batches)

    embedding = rm._base().get_input_embeddings()
    assert not embedding.sparse and embedding.weight.grad is None
    trained = dict(reference.named_parameters())
    for name, weight in rm.named_parameters():
        torch.testing.assert_close(weight, trained[name], rtol=0, atol=ATOL, msg=name)
    for name, weight in initial.named_parameters():  # every tensor moved far beyond ATOL
        assert (trained[name] - weight).abs().max() > 100 * ATOL, name


def test_the_buffered_embedding_gradient_equals_the_dense_one(rm: RewardModel) -> None:
    reference = copy.deepcopy(rm)
    (micro,) = _batches(rm._base().config.vocab_size, steps=1)
    buffer = install_embedding_grad_buffer(rm._base())
    assert buffer is not None
    for model in (rm, reference):
        for ids in micro:  # the second micro-batch accumulates into the buffer in place
            model(ids, torch.ones_like(ids)).square().mean().backward()
    grad = rm._base().get_input_embeddings().weight.grad
    assert grad is buffer.buffer and not grad.is_sparse
    dense = reference._base().get_input_embeddings().weight.grad
    torch.testing.assert_close(grad, dense, rtol=0, atol=1e-7)


def test_a_frozen_embedding_keeps_the_dense_path(rm: RewardModel) -> None:
    rm._base().get_input_embeddings().weight.requires_grad_(False)
    assert install_embedding_grad_buffer(rm._base()) is None
