"""Rankings as token ids, and batches that forward each response of a prompt once.

A step's B prompts with K_b responses each become ONE right-padded batch of
N = sum(K_b) sequences; ``slots`` maps each row back to its (prompt, response) cell of a
(B, K) score grid, and the rankings become a (B, K, K) preference matrix.

The K sequences of a prompt start with the same tokens (the chat-templated prompt), and
under causal attention those tokens' hidden states do not depend on what follows. So the
batch holds each prompt's shared prefix once (``SharedPrefix``, B rows) and each
sequence's remainder (N rows); ``RewardModel`` forwards the prefixes once and the
remainders on their prefix's key/value cache: the same scores and gradients as the flat
batch, without computing the prompt K times.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from transformers import PreTrainedTokenizerBase

from training.ml.chat import encode_prompt
from training.ml.losses import preference_matrix
from training.ml.preferences import RankedExample
from training.ml.reward.model import RewardModel


@dataclass
class EncodedRanking:
    """One ranking as token ids: K sequences ``prompt + response + EOS``."""

    sequences: list[list[int]]
    tie_groups: list[list[int]]
    labeler: str | None = None

    @property
    def pair_count(self) -> int:
        sizes = [len(group) for group in self.tie_groups]
        return (sum(sizes) ** 2 - sum(size * size for size in sizes)) // 2


def join_prompt_response(
    prompt_ids: Sequence[int], response_ids: Sequence[int], max_length: int
) -> list[int]:
    """``prompt + response`` in at most ``max_length`` tokens, keeping what the score needs.

    The response keeps its start and at least half the window; the prompt loses its
    beginning (the turns furthest from the response) first.
    """
    room = max(max_length - len(prompt_ids), max_length // 2)
    response = list(response_ids[:room])
    prompt = list(prompt_ids[len(prompt_ids) - (max_length - len(response)) :])
    return (prompt if max_length > len(response) else []) + response


def encode_response(tokenizer: PreTrainedTokenizerBase, response: str) -> list[int]:
    """A response's ids as the policy would emit them: its tokens then EOS."""
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return [*ids, tokenizer.eos_token_id]


def encode_sequence(
    tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int], response: str, max_length: int
) -> list[int]:
    return join_prompt_response(prompt_ids, encode_response(tokenizer, response), max_length)


def encode_rankings(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[RankedExample], max_length: int
) -> list[EncodedRanking]:
    """Tokenise each prompt once (chat template) and each of its responses."""
    encoded = []
    for example in examples:
        prompt_ids = encode_prompt(tokenizer, example.prompt, 0)
        sequences = [
            encode_sequence(tokenizer, prompt_ids, text, max_length) for text in example.responses
        ]
        encoded.append(EncodedRanking(sequences, example.tie_groups, example.labeler))
    return encoded


@dataclass
class SharedPrefix:
    """The tokens all K sequences of a prompt start with, one right-padded row per prompt."""

    input_ids: Tensor  # (B, P)
    attention_mask: Tensor  # (B, P)
    rows: Tensor  # (N,) the prefix row each sequence continues


@dataclass
class RankingBatch:
    """B rankings flattened into one padded batch of N = sum(K_b) sequences.

    With ``prefix`` set, ``input_ids``/``attention_mask`` hold what follows each
    sequence's shared prefix; sequence ``n`` is ``prefix[prefix.rows[n]] + input_ids[n]``.
    """

    input_ids: Tensor  # (N, T) right-padded
    attention_mask: Tensor  # (N, T)
    slots: Tensor  # (N,) index of each sequence in the (B * K) score grid
    prefer: Tensor  # (B, K, K) bool
    distance: Tensor  # (B, K, K) tie-group distance of each pair
    pairs: int
    prefix: SharedPrefix | None = None

    @property
    def tokens(self) -> int:
        """Tokens of the N sequences, a shared prefix counted in each of its sequences."""
        own = int(self.attention_mask.sum())
        if self.prefix is None:
            return own
        return own + int(self.prefix.attention_mask.sum(-1)[self.prefix.rows].sum())

    @property
    def positions(self) -> int:
        """Positions the forward computes, padding included (each shared prefix once)."""
        shared = 0 if self.prefix is None else self.prefix.input_ids.numel()
        return shared + self.input_ids.numel()


def pad_right(
    sequences: Sequence[Sequence[int]], pad_id: int, device: torch.device
) -> tuple[Tensor, Tensor]:
    """(N, T) input ids and attention mask of right-padded sequences."""
    width = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, : len(seq)] = 1
    return input_ids.to(device), attention_mask.to(device)


def shared_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """How many leading tokens all ``sequences`` share, leaving each at least one of its own
    (the score is read at a sequence's last token, which must follow the prefix)."""
    shared = 0
    for column in zip(*sequences, strict=False):
        if any(token != column[0] for token in column):
            break
        shared += 1
    return min(shared, min(len(seq) for seq in sequences) - 1)


def collate_rankings(
    rankings: Sequence[EncodedRanking],
    pad_id: int,
    device: torch.device,
    *,
    share_prefix: bool = True,
) -> RankingBatch:
    """One batch of every sequence of ``rankings``. With ``share_prefix`` (and when every
    ranking's sequences share at least one leading token: a prompt cut differently for
    two responses shares none) each prompt's common prefix is a ``SharedPrefix`` row."""
    k = max(len(r.sequences) for r in rankings)
    slots = [b * k + i for b, r in enumerate(rankings) for i in range(len(r.sequences))]
    prefer, distance = preference_matrix([r.tie_groups for r in rankings], k, device=device)
    sequences = [seq for r in rankings for seq in r.sequences]
    shared = [shared_prefix_length(r.sequences) for r in rankings] if share_prefix else [0]
    prefix = None
    if min(shared) >= 1:
        prefix_ids, prefix_mask = pad_right(
            [r.sequences[0][:c] for r, c in zip(rankings, shared, strict=True)], pad_id, device
        )
        rows = [b for b, r in enumerate(rankings) for _ in r.sequences]
        prefix = SharedPrefix(prefix_ids, prefix_mask, torch.tensor(rows, device=device))
        cut = [shared[b] for b in rows]
        sequences = [seq[c:] for seq, c in zip(sequences, cut, strict=True)]
    input_ids, attention_mask = pad_right(sequences, pad_id, device)
    return RankingBatch(
        input_ids,
        attention_mask,
        torch.tensor(slots, device=device),
        prefer,
        distance,
        int(prefer.sum()),
        prefix,
    )


def score_rankings(model: RewardModel, batch: RankingBatch) -> Tensor:
    """(B, K) scores: every response forwarded once in ONE flat batch (each prompt's shared
    prefix once, when the batch has one), then regrouped."""
    flat = model(batch.input_ids, batch.attention_mask, batch.prefix)  # (N,)
    b, k = batch.prefer.shape[:2]
    grid = flat.new_zeros(b * k).index_copy(0, batch.slots, flat)  # padding slots stay 0
    return grid.view(b, k)


def length_bucketed_batches(
    rankings: Sequence[EncodedRanking], batch_size: int, rng: random.Random, bucket: int = 50
) -> list[list[EncodedRanking]]:
    """Shuffled batches of similar length: shuffle, sort within windows of ``bucket``
    batches by longest sequence, cut, then shuffle the batch order (less padding)."""
    order = list(rankings)
    rng.shuffle(order)
    batches: list[list[EncodedRanking]] = []
    window = batch_size * bucket
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda r: max(map(len, r.sequences)))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def micro_batches(
    rankings: list[EncodedRanking], max_sequences: int | None
) -> list[list[EncodedRanking]]:
    """Split a step's prompts so one forward holds at most ``max_sequences`` sequences."""
    if not max_sequences:
        return [rankings]
    groups: list[list[EncodedRanking]] = [[]]
    for ranking in rankings:
        if (
            groups[-1]
            and sum(len(r.sequences) for r in groups[-1]) + len(ranking.sequences) > max_sequences
        ):
            groups.append([])
        groups[-1].append(ranking)
    return groups
