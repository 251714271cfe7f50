"""The PPO rollout: sample responses, then score them and recompute, without gradients,
the policy's and reference's log-probs, the critic's values and the RM score.

Shapes: B episodes, P prompt tokens (left-padded), R response tokens (right-padded),
V vocabulary, H hidden size. With frozen bottom blocks the trunk caches of
`training.ml.frozen_trunk` record the input of the first trained block for the update.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
from torch import nn

from training.ml.chat import encode_prompt
from training.ml.data import PromptInput
from training.ml.frozen_trunk import TrunkCache
from training.ml.rules import Rule, rule_rewards
from training.ml.sampling import (
    GenerationSettings,
    position_ids_from_attention_mask,
    sample_responses,
)

if TYPE_CHECKING:
    from training.ml.ppo import PPOConfig

RewardFn = Callable[[list[str], list[PromptInput]], list[float]]


@dataclass
class Rollout:
    """One batch of B episodes, tensors on the training device."""

    input_ids: torch.Tensor  # (B, P + R) prompt left-padded, response right-padded
    attention_mask: torch.Tensor  # (B, P + R)
    response_mask: torch.Tensor  # (B, R) 1.0 on response tokens (EOS included)
    logprobs: torch.Tensor  # (B, R) log pi_old(y_t)
    ref_logprobs: torch.Tensor  # (B, R) log pi_SFT(y_t)
    values: torch.Tensor  # (B, R) V(s_t) of the critic
    entropy: torch.Tensor  # (B, R) entropy of pi_old at each response position
    scores: torch.Tensor  # (B,) reward of the whole response (RM + rules + fn - EOS penalty)
    rm_scores: torch.Tensor  # (B,) the reward model's part of `scores`
    finished: torch.Tensor  # (B,) bool: response ended with EOS
    texts: list[str]
    generate_s: float  # seconds spent sampling (the rest of the rollout is forwards)
    policy_trunk: torch.Tensor | None = None  # (B, P + R, H) input of the policy's block k
    critic_trunk: torch.Tensor | None = None  # (B, P + R, H) input of the critic's block k


@dataclass
class PPOModels:
    """The four networks of PPO (the reward model may be absent when a reward_fn scores).

    With LoRA (`training.ml.ppo.share_bases`) the reference and the reward model are
    `AdaptersDisabled` views of the policy and the critic: the same forwards, on the
    frozen bases under the adapters, so the rollout and update code does not branch."""

    policy: nn.Module
    ref_policy: nn.Module
    critic: nn.Module
    reward_model: nn.Module | None
    policy_trunk: TrunkCache | None = None  # set by prepare_models when blocks are frozen
    critic_trunk: TrunkCache | None = None
    ref_trunk: TrunkCache | None = None  # the reference's top on the policy's trunk
    rm_trunk: TrunkCache | None = None  # the RM's top on the critic's trunk

    @property
    def device(self) -> torch.device:
        return next(self.policy.parameters()).device


def pack_episodes(
    prompt_ids: Sequence[Sequence[int]], response_ids: Sequence[Sequence[int]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, response_mask): prompts left-padded to P, responses
    right-padded to R, so every response starts at column P."""
    p_len = max(len(p) for p in prompt_ids)
    r_len = max(1, max(len(r) for r in response_ids))
    rows, masks, resp_masks = [], [], []
    for prompt, response in zip(prompt_ids, response_ids, strict=True):
        left, right = p_len - len(prompt), r_len - len(response)
        rows.append([pad_id] * left + list(prompt) + list(response) + [pad_id] * right)
        masks.append([0] * left + [1] * (len(prompt) + len(response)) + [0] * right)
        resp_masks.append([1.0] * len(response) + [0.0] * right)
    return torch.tensor(rows), torch.tensor(masks), torch.tensor(resp_masks)


def response_logits(
    model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, r_len: int
) -> torch.Tensor:
    """(B, R, V) logits predicting each response token (from the position before it)."""
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_attention_mask(attention_mask),
        use_cache=False,
        logits_to_keep=r_len + 1,  # only the last R + 1 positions are ever needed
    )
    return out.logits[:, -(r_len + 1) : -1].float()


def token_logprobs(
    logits: torch.Tensor, tokens: torch.Tensor, temperature: float, entropy: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log pi(y_t), entropy_t or None), both (B, R), of the tempered softmax(z / T).

    The full-vocabulary maths runs one row at a time, so besides `logits` it holds a few
    (R, V) temporaries, never several (B, R, V) ones (z = logits / T is not materialised
    at T = 1). Every caller (rollout policy and reference, the update's loss) goes through
    this one code path, so equal models give bitwise equal log-probs (KL exactly 0)."""
    logps: list[torch.Tensor] = []
    entropies: list[torch.Tensor] = []
    for row, row_tokens in zip(logits, tokens, strict=True):
        z = row if temperature == 1.0 else row / temperature  # (R, V)
        log_norm = z.logsumexp(-1)  # (R,)
        logps.append(z.gather(-1, row_tokens.unsqueeze(-1)).squeeze(-1) - log_norm)
        if entropy:
            entropies.append(log_norm - (torch.softmax(z, dim=-1) * z).sum(-1))
    return torch.stack(logps), torch.stack(entropies) if entropy else None


def response_values(
    critic: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, r_len: int
) -> torch.Tensor:
    """(B, R) V(s_t): the critic's head at the position before response token t."""
    values = critic.token_values(input_ids, attention_mask)  # type: ignore[operator]  # RewardModel
    return values[:, -(r_len + 1) : -1].float()


@contextmanager
def _recording(cache: TrunkCache | None) -> Iterator[list[torch.Tensor]]:
    """Record the input of the cache's block k, unless there is no (working) cache."""
    if cache is None or cache.verified is False:
        yield []
        return
    with cache.record() as captured:
        yield captured


def top_only(
    cache: TrunkCache | None, hidden: torch.Tensor | None, rows: torch.Tensor | None = None
) -> AbstractContextManager[None]:
    """Run only the blocks above the frozen trunk, on its recorded output (for `rows`)."""
    if cache is None or hidden is None:
        return nullcontext()
    return cache.top_only(hidden if rows is None else hidden[rows])


def _checked_trunk(
    cache: TrunkCache | None,
    recorded: list[torch.Tensor],
    full: torch.Tensor,
    top_forward: Callable[[], torch.Tensor],
) -> torch.Tensor | None:
    """The trunk the last forward recorded, once the cache is known to reproduce that
    forward's output `full` (checked on the first batch of the run; if it fails, the
    cache is off for good)."""
    if cache is None or not recorded:
        return None
    if cache.verified is None:
        with cache.top_only(recorded[-1]):
            cache.verify(full, top_forward())
    return recorded[-1] if cache.verified else None


class Forwards(NamedTuple):
    """The no-grad forwards of a rollout: (B, R) each, rm_scores (B,), trunks (B, P + R, H)
    or None."""

    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    entropy: torch.Tensor
    rm_scores: torch.Tensor
    policy_trunk: torch.Tensor | None
    critic_trunk: torch.Tensor | None


@torch.no_grad()
def forward_rollout(
    models: PPOModels,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    r_len: int,
    config: PPOConfig,
) -> Forwards:
    """Policy, reference, critic and RM over the rollout, `forward_batch_size` rows at a
    time. With trunk caches the policy's and critic's trunks are recorded for the update,
    and the reference and RM run only their top blocks on them when their bottoms are
    the same. Policy and reference go through the same code on the same batch, so when
    they are equal the log-probs agree and the KL is 0."""
    chunk, temperature = config.forward_batch_size, config.temperature
    parts: list[tuple[torch.Tensor, ...]] = []
    with (
        _recording(models.policy_trunk) as policy_recorded,
        _recording(models.critic_trunk) as critic_recorded,
    ):
        for start in range(0, input_ids.shape[0], chunk):
            ids, mask = input_ids[start : start + chunk], attention_mask[start : start + chunk]
            parts.append(
                _forward_chunk(
                    models, ids, mask, r_len, temperature, policy_recorded, critic_recorded
                )
            )
    logp, ref_logp, values, entropy, rm_scores = (torch.cat(c) for c in zip(*parts, strict=True))
    return Forwards(
        logp,
        ref_logp,
        values,
        entropy,
        rm_scores,
        _concat_if_verified(models.policy_trunk, policy_recorded),
        _concat_if_verified(models.critic_trunk, critic_recorded),
    )


def _forward_chunk(
    models: PPOModels,
    ids: torch.Tensor,
    mask: torch.Tensor,
    r_len: int,
    temperature: float,
    policy_recorded: list[torch.Tensor],
    critic_recorded: list[torch.Tensor],
) -> tuple[torch.Tensor, ...]:
    """(logprobs, ref_logprobs, values, entropy, rm_scores) of one chunk of rows."""
    tokens = ids[:, -r_len:]
    logits = response_logits(models.policy, ids, mask, r_len)
    logp, entropy = token_logprobs(logits, tokens, temperature)
    assert entropy is not None
    trunk = _checked_trunk(
        models.policy_trunk,
        policy_recorded,
        logits,
        lambda: response_logits(models.policy, ids, mask, r_len),
    )
    del logits  # one (B, R, V) logits tensor alive at a time
    with top_only(models.ref_trunk, trunk):
        ref_logits = response_logits(models.ref_policy, ids, mask, r_len)
    ref_logp, _ = token_logprobs(ref_logits, tokens, temperature, entropy=False)
    del ref_logits
    values = response_values(models.critic, ids, mask, r_len)
    trunk = _checked_trunk(
        models.critic_trunk,
        critic_recorded,
        values,
        lambda: response_values(models.critic, ids, mask, r_len),
    )
    if models.reward_model is None:
        rm_scores = torch.zeros(ids.shape[0], device=ids.device)
    else:
        with top_only(models.rm_trunk, trunk):
            rm_scores = models.reward_model(ids, mask).float()  # (B,) at the final token
    return logp, ref_logp, values, entropy, rm_scores


def _concat_if_verified(
    cache: TrunkCache | None, recorded: list[torch.Tensor]
) -> torch.Tensor | None:
    return torch.cat(recorded) if cache is not None and cache.verified and recorded else None


def collect_rollout(
    models: PPOModels,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    config: PPOConfig,
    step: int,
    rules: Sequence[Rule],
    reward_fn: RewardFn | None,
    *,
    offset: int = 0,
    global_batch: int | None = None,
) -> Rollout:
    """Sample one response per prompt, then score it and recompute log-probs and values.

    `prompts` are the episodes `offset ..` of the step's `global_batch` (default: all of
    them), so a rank's slice samples what one process samples for those episodes."""
    models.policy.eval()
    started = time.perf_counter()
    episodes = len(prompts) if global_batch is None else global_batch
    settings = GenerationSettings(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        # episode i of step s gets seed base + i: disjoint ranges, so no two episodes of
        # a run share a random stream (seed + step would reuse row i + 1's stream next step)
        seed=config.seed * 1_000_003 + step * episodes + offset,
        max_prompt_tokens=config.max_prompt_length,
    )
    samples = [
        group[0]
        for group in sample_responses(
            models.policy, tokenizer, prompts, k=1, settings=settings,
            batch_size=config.forward_batch_size,
        )
    ]  # fmt: skip
    generate_s = time.perf_counter() - started
    prompt_ids = [encode_prompt(tokenizer, p, config.max_prompt_length) for p in prompts]
    input_ids, attention_mask, response_mask = (
        t.to(models.device)
        for t in pack_episodes(prompt_ids, [s.token_ids for s in samples], tokenizer.pad_token_id)
    )
    forwards = forward_rollout(models, input_ids, attention_mask, response_mask.shape[1], config)
    texts = [s.text for s in samples]
    extra = torch.tensor(
        rule_rewards(texts, [len(s.token_ids) for s in samples], rules), device=models.device
    )
    if reward_fn is not None:
        extra += torch.tensor(
            reward_fn(texts, list(prompts)), device=models.device, dtype=extra.dtype
        )
    finished = torch.tensor([s.finished for s in samples], device=models.device)
    missing_eos = config.missing_eos_penalty * (~finished).to(extra.dtype)
    scores = forwards.rm_scores + extra - missing_eos  # (B,)
    return Rollout(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        scores=scores,
        finished=finished,
        texts=texts,
        generate_s=generate_s,
        **forwards._asdict(),
    )
