"""Listwise DPO's batches: K-wise rankings as token ids, one flat forward per step, and
the implicit reward's sequence log-probs and held-out accuracy.

A step's B prompts with K_b responses each become ONE batch of N = sum(K_b) rows, each
prompt left-padded and each response right-padded, so every response starts at column
P and only the last R + 1 positions reach the LM head (``logits_to_keep``). ``slots``
maps each row back to its (prompt, response) cell of a (B, K) score grid.

Shapes: N rows, P prompt tokens, R response tokens, V vocabulary.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase

from training.ml.chat import encode_prompt
from training.ml.distributed import SINGLE, Distributed
from training.ml.listwise import dpo_scores, listwise_loss
from training.ml.losses import correct_pairs, preference_matrix
from training.ml.ppo_rollout import pack_episodes, response_logits, token_logprobs
from training.ml.precision import FP32, Precision
from training.ml.preferences import RankedExample
from training.ml.reward.batches import encode_response

REFERENCE_SEQUENCES = 64  # rows per no-grad forward (reference, evaluation) without a cap
Tally = defaultdict[str, float]


@dataclass
class EncodedList:
    """One ranking as token ids: a prompt shared by its K responses (each ending in EOS)."""

    prompt: list[int]
    responses: list[list[int]]
    tie_groups: list[list[int]]
    ref_logps: list[float] = field(default_factory=list)  # (K,) log pi_ref(y_i | x)


def encode_ranking(
    tokenizer: PreTrainedTokenizerBase, example: RankedExample, max_length: int
) -> EncodedList:
    """The chat-templated prompt and the responses in at most ``max_length`` tokens each.

    A response keeps its start and at least half the window; the prompt, shared by all K,
    keeps its last tokens (its assistant opening) in what the longest response leaves."""
    prompt = encode_prompt(tokenizer, example.prompt, 0)
    room = max(max_length - len(prompt), max_length // 2)
    responses = [encode_response(tokenizer, text)[:room] for text in example.responses]
    keep = max_length - max(len(r) for r in responses)
    return EncodedList(prompt[max(0, len(prompt) - keep) :], responses, example.tie_groups)


def encode_rankings(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[RankedExample], max_length: int
) -> list[EncodedList]:
    """Every ranking that orders something (two or more tie groups), encoded."""
    return [
        encode_ranking(tokenizer, example, max_length)
        for example in examples
        if len(example.tie_groups) > 1
    ]


@dataclass
class PackedRankings:
    """B rankings flattened into ONE batch of N = sum(K_b) prompt + response rows."""

    input_ids: Tensor  # (N, P + R) prompt left-padded, response right-padded
    attention_mask: Tensor  # (N, P + R)
    response_mask: Tensor  # (N, R) 1.0 on response tokens (EOS included)
    slots: Tensor  # (N,) index of each row in the (B * K) grid
    ref_logps: Tensor  # (N,) reference sequence log-probs (zeros before they are computed)
    tie_groups: list[list[list[int]]]
    k: int

    @property
    def tokens(self) -> Tensor:
        """(N, R) the response tokens, the targets of the log-probs."""
        return self.input_ids[:, -self.response_mask.shape[1] :]

    def grid(self, flat: Tensor) -> Tensor:
        """(B, K) from per-row values (N,); padding slots hold 0 and are in no ranking."""
        b = len(self.tie_groups)
        return flat.new_zeros(b * self.k).index_copy(0, self.slots, flat).view(b, self.k)


def pack_rankings(
    rankings: Sequence[EncodedList], pad_id: int, device: torch.device
) -> PackedRankings:
    k = max(len(r.responses) for r in rankings)
    prompts = [r.prompt for r in rankings for _ in r.responses]
    responses = [resp for r in rankings for resp in r.responses]
    input_ids, attention_mask, response_mask = pack_episodes(prompts, responses, pad_id)
    slots = [b * k + i for b, r in enumerate(rankings) for i in range(len(r.responses))]
    ref = [lp for r in rankings for lp in (r.ref_logps or [0.0] * len(r.responses))]
    return PackedRankings(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        response_mask=response_mask.to(device),
        slots=torch.tensor(slots, device=device),
        ref_logps=torch.tensor(ref, dtype=torch.float32, device=device),
        tie_groups=[r.tie_groups for r in rankings],
        k=k,
    )


def sequence_logps(model: nn.Module, batch: PackedRankings) -> Tensor:
    """(N,) log pi(y | x): the summed log-probs of each row's response tokens, in fp32."""
    r_len = batch.response_mask.shape[1]
    logits = response_logits(model, batch.input_ids, batch.attention_mask, r_len)  # (N, R, V)
    logp, _ = token_logprobs(logits, batch.tokens, 1.0, entropy=False)  # (N, R)
    return (logp * batch.response_mask).sum(-1)


def micro_batches(
    rankings: list[EncodedList], max_sequences: int | None
) -> list[list[EncodedList]]:
    """Consecutive groups of prompts with at most ``max_sequences`` responses each (a
    prompt's K responses stay together); one group when ``max_sequences`` is None."""
    if not max_sequences:
        return [rankings]
    groups: list[list[EncodedList]] = [[]]
    for ranking in rankings:
        size = sum(len(r.responses) for r in groups[-1])
        if groups[-1] and size + len(ranking.responses) > max_sequences:
            groups.append([])
        groups[-1].append(ranking)
    return groups


# --------------------------------------------------------------------------- reference


@torch.no_grad()
def attach_reference_logps(
    reference: nn.Module,
    rankings: list[EncodedList],
    pad_id: int,
    *,
    precision: Precision = FP32,
    dist: Distributed = SINGLE,
    max_sequences: int | None = None,
) -> None:
    """Fill each ranking's ``ref_logps`` with the reference's sequence log-probs, once.

    Every rank forwards its slice of the rankings and the ranks share their results, so
    each holds all of them."""
    device = next(reference.parameters()).device
    was_training = reference.training
    reference.eval()
    mine = dist.shard(list(range(len(rankings))))
    found: list[float] = []
    for part in micro_batches([rankings[i] for i in mine], max_sequences or REFERENCE_SEQUENCES):
        if part:
            with precision.autocast():
                found += sequence_logps(reference, pack_rankings(part, pad_id, device)).tolist()
    reference.train(was_training)
    sizes = [len(r.responses) for r in rankings]
    offsets = [0, *itertools.accumulate(sizes)]
    flat = [0.0] * offsets[-1]
    cursor = 0
    for index in mine:  # place this rank's values; the other ranks' are 0 here
        flat[offsets[index] : offsets[index + 1]] = found[cursor : cursor + sizes[index]]
        cursor += sizes[index]
    flat = dist.sum(flat)  # each entry is non-zero on one rank only
    for index, ranking in enumerate(rankings):
        ranking.ref_logps = flat[offsets[index] : offsets[index + 1]]


# --------------------------------------------------------------------------- metrics


def pair_tally(scores: Tensor, tie_groups: list[list[list[int]]]) -> dict[str, float]:
    """Pairs between tie groups, how many the implicit reward orders correctly (a tie in
    score counts as wrong), and their summed margin s_w - s_l; ``scores`` (B, K)."""
    prefer, _ = preference_matrix(tie_groups, scores.shape[1], device=scores.device)
    diff = scores[:, :, None] - scores[:, None, :]  # (B, K, K) s_row - s_col
    return {
        "pairs": float(prefer.sum()),
        "correct": float(correct_pairs(scores, prefer).sum()),
        "margin": float((diff * prefer).sum()),
    }


@torch.no_grad()
def evaluate_implicit_reward(
    policy: nn.Module,
    rankings: list[EncodedList],
    pad_id: int,
    beta: float,
    *,
    precision: Precision = FP32,
    dist: Distributed = SINGLE,
    max_sequences: int | None = None,
) -> dict[str, float]:
    """Held-out figures of the implicit reward beta * (log pi - log pi_ref) on rankings
    whose ``ref_logps`` are attached: ``accuracy`` (pairs ordered right), ``loss`` (the
    listwise loss, mean over prompts), ``margin`` (mean s_w - s_l), ``pairs``; NaN when
    there are no rankings. Each rank evaluates its slice; the figures are global."""
    if not rankings:
        return {"accuracy": math.nan, "loss": math.nan, "margin": math.nan, "pairs": 0.0}
    device = next(policy.parameters()).device
    was_training = policy.training
    policy.eval()
    tally: Tally = defaultdict(float)
    local = dist.shard(rankings)
    for part in micro_batches(local, max_sequences or REFERENCE_SEQUENCES):
        if not part:
            continue
        batch = pack_rankings(part, pad_id, device)
        with precision.autocast():
            logps = sequence_logps(policy, batch)
        scores = batch.grid(dpo_scores(logps, batch.ref_logps, beta))
        tally["loss"] += float(listwise_loss(scores, batch.tie_groups)) * len(part)
        for key, value in pair_tally(scores, batch.tie_groups).items():
            tally[key] += value
    policy.train(was_training)
    keys = ("loss", "pairs", "correct", "margin")
    loss, pairs, correct, margin = dist.sum([tally[key] for key in keys])
    return {
        "accuracy": correct / pairs if pairs else math.nan,
        "loss": loss / len(rankings),
        "margin": margin / pairs if pairs else math.nan,
        "pairs": pairs,
    }
