"""The one-process side of ``training.ml.ppo_ranks`` (the two-process side runs in
``tests/ml/test_distributed.py``): a rank's rows of a global minibatch and its token count."""

from __future__ import annotations

import torch

from training.ml.distributed import SINGLE, Distributed
from training.ml.gae import masked_whiten
from training.ml.ppo_ranks import EpisodeShard, shard_episodes, whiten_over_ranks


def test_each_rank_keeps_its_rows_of_a_global_minibatch_and_counts_all_tokens() -> None:
    counts = torch.tensor([3.0, 1.0, 4.0, 2.0], dtype=torch.float64)  # 4 episodes, 2 ranks
    first, second = EpisodeShard(0, 2, counts), EpisodeShard(2, 2, counts)
    rows = torch.tensor([3, 0, 2])  # a minibatch of 3 drawn from the global order
    assert first.local_rows(rows).tolist() == [0]
    assert second.local_rows(rows).tolist() == [1, 0]  # global 3, 2 -> local 1, 0
    assert first.tokens(rows) == second.tokens(rows) == 2.0 + 3.0 + 4.0
    assert first.local_rows(torch.tensor([2, 3])).numel() == 0  # a rank may hold none


def test_the_ranks_split_a_step_into_contiguous_slices() -> None:
    slices = [shard_episodes(Distributed(world_size=2, rank=r), 8) for r in (0, 1)]
    assert slices == [(0, 4), (4, 4)]
    assert shard_episodes(SINGLE, 8) == (0, 8)


def test_alone_the_whitening_is_masked_whiten() -> None:
    values = torch.tensor([[1.0, 2.0, 5.0], [0.5, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    for shift in (True, False):
        expected = masked_whiten(values, mask, shift_mean=shift)
        assert torch.equal(whiten_over_ranks(SINGLE, values, mask, shift_mean=shift), expected)
