"""Best-of-N: rejection-sampling fine-tuning (Llama 2, Touvron et al. 2023, section 3.2.3).

Sample N responses for each of `num_prompts` prompts from the current policy, score each
with the reward model (plus rule terms and a reward_fn, as PPO scores), keep the
highest-scored response of each prompt and fine-tune the policy on the kept ones with
`training.ml.sft.train_sft`. Response j of the prompt at position p of the chosen prompts
is sampled from seed `seed * 1_000_003 + p * n + j`, so a prompt's candidates do not
depend on which other prompts (or processes) share the run.

Under several processes (`training.ml.distributed`) each rank samples and scores its
contiguous slice of the prompts; the kept samples are gathered on every rank in prompt
order, and SFT then shards its own batches.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from training.ml.configs import BestOfNConfig
from training.ml.data import Demonstration, PromptInput
from training.ml.distributed import SINGLE, Distributed
from training.ml.ppo_rollout import RewardFn
from training.ml.precision import FP32, Precision
from training.ml.reward.evaluate import score_texts
from training.ml.reward.model import RewardModel
from training.ml.rules import Rule, rule_rewards
from training.ml.sampling import GenerationSettings, Sample, SamplingStopped, sample_responses
from training.ml.sft import train_sft

__all__ = [
    "BestOfNConfig",
    "BestOfNResult",
    "ChosenSample",
    "best_of_n",
    "pick_best",
    "sample_and_pick",
    "select_prompts",
]


@dataclass
class ChosenSample:
    """The best of a prompt's N candidates, with every candidate's score."""

    prompt: PromptInput
    response: str  # storable text (`formats.text.storable_text`), without the EOS token
    score: float  # the best score: max(scores)
    scores: list[float]  # the N candidates' scores, in sampling order
    index: int  # which candidate was kept (the first of equal best scores)
    seed: int | None  # the kept candidate's sampling seed
    finished: bool  # the kept candidate ended with EOS
    token_count: int


@dataclass
class BestOfNResult:
    """`chosen` in prompt order; `sft` is train_sft's result ({} when cancelled before
    SFT started); `metrics` the run's scalar metrics (the SFT ones included)."""

    status: str  # "completed" or "cancelled"
    chosen: list[ChosenSample]
    sft: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


def select_prompts(
    prompts: Sequence[PromptInput], num_prompts: int | None, seed: int
) -> list[PromptInput]:
    """A seeded random subset of `num_prompts` prompts, in a seeded order (all of them
    when None or not fewer than there are)."""
    order = list(range(len(prompts)))
    random.Random(seed).shuffle(order)
    if num_prompts is not None:
        order = order[:num_prompts]
    return [prompts[i] for i in order]


def pick_best(scores: Sequence[float]) -> int:
    """Index of the highest score (the first of equals); NaN scores never win."""
    finite = [(s, -i) for i, s in enumerate(scores) if s == s]
    if not finite:
        raise ValueError("every candidate's score is NaN")
    return -max(finite)[1]


def _scores(
    reward_model: nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    groups: list[list[Sample]],
    config: BestOfNConfig,
    rules: Sequence[Rule],
    reward_fn: RewardFn | None,
) -> list[list[float]]:
    """Every candidate's score: RM(prompt + response) + rule terms + reward_fn."""
    flat = [(p, s) for p, group in zip(prompts, groups, strict=True) for s in group]
    texts = [s.text for _, s in flat]
    totals = rule_rewards(texts, [s.token_count for _, s in flat], rules)
    if reward_model is not None:
        if not isinstance(reward_model, RewardModel):
            raise ValueError("reward_model must be a training.ml.reward.model.RewardModel")
        rm = score_texts(
            reward_model,
            tokenizer,
            [(p, s.text) for p, s in flat],
            max_length=config.max_length,
            batch_size=config.sample_batch_size,
        )
        totals = [t + float(r) for t, r in zip(totals, rm.tolist(), strict=True)]
    if reward_fn is not None:
        extra = reward_fn(texts, [p for p, _ in flat])
        totals = [t + float(e) for t, e in zip(totals, extra, strict=True)]
    n = config.n
    return [totals[i * n : (i + 1) * n] for i in range(len(prompts))]


def sample_and_pick(
    policy: nn.Module,
    reward_model: nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    config: BestOfNConfig,
    *,
    first_position: int = 0,
    rules: Sequence[Rule] = (),
    reward_fn: RewardFn | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: Precision = FP32,
) -> list[ChosenSample]:
    """Sample `config.n` responses per prompt, score them, keep the best of each.

    `first_position` is the position of `prompts[0]` among the run's chosen prompts (it
    fixes the seeds); `should_stop` is the sampler's (True raises `SamplingStopped`)."""
    settings = GenerationSettings(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        max_prompt_tokens=config.max_prompt_length,
    )
    seeds = [config.seed * 1_000_003 + (first_position + i) * config.n for i in range(len(prompts))]
    with precision.autocast():
        groups = sample_responses(
            policy,
            tokenizer,
            prompts,
            k=config.n,
            settings=settings,
            batch_size=config.sample_batch_size,
            on_progress=on_progress,
            seeds=seeds,
            should_stop=should_stop,
        )
        with torch.no_grad():
            scores = _scores(reward_model, tokenizer, prompts, groups, config, rules, reward_fn)
    chosen = []
    for prompt, group, group_scores in zip(prompts, groups, scores, strict=True):
        best = pick_best(group_scores)
        sample = group[best]
        chosen.append(
            ChosenSample(
                prompt=prompt,
                response=sample.text,
                score=group_scores[best],
                scores=list(group_scores),
                index=best,
                seed=sample.seed,
                finished=sample.finished,
                token_count=sample.token_count,
            )
        )
    return chosen


def _gather(chosen: list[ChosenSample], dist: Distributed) -> list[ChosenSample]:
    """Every rank's samples on every rank, in rank order (the prompt order: each rank
    holds a contiguous slice)."""
    if not dist.enabled:
        return chosen
    parts: list[Any] = [None] * dist.world_size
    torch.distributed.all_gather_object(parts, chosen)
    return [sample for part in parts for sample in part]


def best_of_n(
    policy: nn.Module,
    reward_model: nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    config: BestOfNConfig,
    *,
    rules: Sequence[Rule] | None = None,
    reward_fn: RewardFn | None = None,
    on_metrics: Callable[[int, dict[str, Any]], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: Precision = FP32,
    dist: Distributed = SINGLE,
) -> BestOfNResult:
    """Sample, pick the best per prompt, then SFT `policy` in place on the picks.

    `reward_model` (a RewardModel), `rules` and `reward_fn` add up to a candidate's score
    (at least one of them is needed). `on_progress(done, total)` counts this rank's
    sampled responses; `on_metrics(step, values)` and `should_stop()` are train_sft's (a
    stop asked for while sampling skips SFT: status "cancelled", no `sft` result). The
    policy trains in fp32 (master weights) under `precision`'s autocast; samples come
    from the policy as given. Under several processes `config.batch_size` is SFT's global
    micro-batch.
    """
    config.validate()
    if reward_model is None and reward_fn is None and not rules:
        raise ValueError("best-of-N needs a reward model, a reward_fn or rules to score")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs pad and EOS tokens")
    dist.check_global_batch(config.batch_size)
    selected = select_prompts(list(prompts), config.num_prompts, config.seed)
    if not selected:
        raise ValueError("best-of-N needs at least one prompt")
    if reward_model is not None:
        reward_model.eval().requires_grad_(False)
    started = time.perf_counter()
    positions = dist.shard(range(len(selected)))
    try:
        local = sample_and_pick(
            policy,
            reward_model,
            tokenizer,
            [selected[p] for p in positions],
            config,
            first_position=positions[0] if positions else 0,
            rules=rules or (),
            reward_fn=reward_fn,
            on_progress=on_progress,
            # alone, a stop is also taken while sampling; several ranks stop together after
            should_stop=None if dist.enabled else should_stop,
            precision=precision,
        )
    except SamplingStopped:
        return BestOfNResult(status="cancelled", chosen=[])
    chosen = _gather(local, dist)
    metrics: dict[str, Any] = {
        "bon/prompts": len(chosen),
        "bon/n": config.n,
        "bon/score_best_mean": sum(c.score for c in chosen) / len(chosen),
        "bon/score_mean": sum(sum(c.scores) for c in chosen) / (len(chosen) * config.n),
        "bon/best_eos_rate": sum(c.finished for c in chosen) / len(chosen),
        "bon/best_length": sum(c.token_count for c in chosen) / len(chosen),
        "bon/sample_s": time.perf_counter() - started,
    }
    if should_stop is not None and dist.any(should_stop()):
        return BestOfNResult(status="cancelled", chosen=chosen, metrics=metrics)
    demos = [Demonstration(prompt=c.prompt, response=c.response) for c in chosen]
    sft = train_sft(
        policy,
        tokenizer,
        demos,
        config.sft_config(),
        on_metrics=on_metrics,
        should_stop=should_stop,
        precision=precision,
        dist=dist,
    )
    metrics.update({k: v for k, v in sft.items() if isinstance(v, int | float | str)})
    return BestOfNResult(status=sft["status"], chosen=chosen, sft=sft, metrics=metrics)
