"""RLOO: REINFORCE with a leave-one-out baseline, no critic (Ahmadian et al. 2024).

Each step samples N responses for each of B prompts from the policy. Response i of a
prompt gets the sequence reward

    r_i = score_i - beta * sum_t (log pi(y_t) - log pi_ref(y_t))

(score: RM + rule terms + reward_fn - missing-EOS penalty, as PPO scores; beta from the
same adaptive KL controller as PPO, `training.ml.kl`), and the advantage

    A_i = r_i - 1/(N-1) * sum_{j != i} r_j

The whole response is one action: the loss is -mean_i A_i * sum_t log pi(y_t), one
optimizer step per rollout, so the samples are always on-policy (TRL's RLOOTrainer with
one PPO epoch and one mini-batch, where the clipped ratio is 1). Shapes: E episodes
(B x N, prompt-major: row p * N + j is sample j of prompt p), P prompt tokens
(left-padded), R response tokens (right-padded).

Under several processes (`training.ml.distributed`) `batch_size` prompts are the global
step: each rank samples, scores and backpropagates its contiguous slice of the prompts
(all N samples of a prompt stay on one rank, so the baselines are local), its loss
normalised by the GLOBAL episode count and scaled by the world size so DDP's average is
the one-process gradient; the metrics and the KL fed to the controller are global.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from training.ml.chat import encode_prompt
from training.ml.configs import RLOOConfig
from training.ml.data import PromptInput
from training.ml.distributed import SINGLE, Distributed
from training.ml.kl import KLController, kl_k3, kl_penalty, make_kl_controller
from training.ml.memory import (
    AdaptersDisabled,
    apply_lora,
    disable_gradient_checkpointing,
    enable_gradient_checkpointing,
    freeze_all_but_top_layers,
    is_peft,
    lora_targets,
)
from training.ml.ppo_losses import prompt_batch
from training.ml.ppo_rollout import RewardFn, pack_episodes, response_logits, token_logprobs
from training.ml.precision import FP32, Precision, float_in_place, master_weights
from training.ml.rules import Rule, rule_rewards
from training.ml.sampling import GenerationSettings, SamplingStopped, sample_responses

__all__ = [
    "RLOOConfig",
    "leave_one_out_advantages",
    "reinforce_loss",
    "rloo_kl_horizon",
    "sequence_rewards",
    "train_rloo",
]

MetricsCallback = Callable[[int, dict[str, float]], None]


# --------------------------------------------------------------------------- pure pieces


def leave_one_out_advantages(
    rewards: torch.Tensor, group_sizes: Sequence[int] | torch.Tensor
) -> torch.Tensor:
    """(E,) A_i = r_i - mean of the other rewards of i's group.

    `rewards` holds the groups one after the other (`group_sizes` of them, summing to E).
    A group of one has no other sample to compare with: its advantage is 0."""
    sizes = torch.as_tensor(group_sizes, dtype=torch.long, device=rewards.device)
    if rewards.dim() != 1 or int(sizes.sum()) != rewards.numel():
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {sizes.tolist()}")
    if bool((sizes < 1).any()):
        raise ValueError("every group needs at least one reward")
    group = torch.repeat_interleave(torch.arange(len(sizes), device=rewards.device), sizes)
    sums = torch.zeros(len(sizes), dtype=rewards.dtype, device=rewards.device)
    sums.index_add_(0, group, rewards)
    n = sizes[group].to(rewards.dtype)
    others = (sums[group] - rewards) / (n - 1).clamp(min=1)
    return torch.where(n > 1, rewards - others, torch.zeros_like(rewards))


def sequence_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """(E,) score - beta * sum_t (log pi - log pi_ref) over the response tokens: PPO's
    per-token rewards (`ppo_losses.token_rewards`) summed over the response."""
    return scores - kl_coef * (kl_penalty(logprobs, ref_logprobs) * response_mask).sum(-1)


def reinforce_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    normaliser: float,
) -> torch.Tensor:
    """-sum_i A_i * sum_t log pi(y_t) / normaliser: the REINFORCE loss of these rows, the
    response's summed log-prob being the log-prob of the one action."""
    return -(advantages * (logprobs * response_mask).sum(-1)).sum() / normaliser


def rloo_kl_horizon(config: RLOOConfig) -> int:
    """The controller's horizon in episodes: `kl_horizon`, or a quarter of the run's
    episodes (as `training.ml.ppo.kl_horizon`, every sample an episode), rounded up so a
    step moves beta by at most a factor 1 +- 0.2 * 4 / steps (it stays positive)."""
    if config.kl_horizon is not None:
        return config.kl_horizon
    return max(1, math.ceil(config.steps * config.batch_size * config.num_samples / 4))


def sample_seed(config: RLOOConfig, step: int, position: int) -> int:
    """The seed of sample 0 of the prompt at `position` of `step`'s global batch; sample j
    uses seed + j. The ranges of all episodes of a run are disjoint, and independent of
    the number of processes."""
    return config.seed * 1_000_003 + (step * config.batch_size + position) * config.num_samples


# --------------------------------------------------------------------------- models


@dataclass
class RLOOModels:
    """The trained policy (`trained`: the model, or its peft wrapper with LoRA), what the
    gradient pass runs (`runner`: DDP-wrapped under several processes), and the frozen
    reference and reward model (absent when rules or a reward_fn score)."""

    policy: nn.Module
    trained: nn.Module
    runner: nn.Module
    ref_policy: nn.Module
    reward_model: nn.Module | None

    @property
    def device(self) -> torch.device:
        return next(self.trained.parameters()).device


def prepare_models(
    policy: nn.Module,
    ref_policy: nn.Module,
    reward_model: nn.Module | None,
    config: RLOOConfig,
    dist: Distributed = SINGLE,
) -> tuple[RLOOModels, list[nn.Parameter]]:
    """Freeze the reference and the RM, apply the memory options; returns the models and
    the trainable parameters, in fp32 (master weights; with LoRA only the adapters)."""
    trained = policy
    if config.lora_r is not None:
        if is_peft(policy):
            raise ValueError("the policy must be a plain model: LoRA RLOO adds the adapters")
        targets = lora_targets(config.lora_target_modules)
        trained = apply_lora(policy, config.lora_r, config.lora_alpha, targets)
        if ref_policy is policy:  # the reference is the base under the adapters
            ref_policy = AdaptersDisabled(trained)
    else:
        if ref_policy is policy or reward_model is policy:
            raise ValueError(
                "the reference (or RM) is the trained policy itself: pass a separate frozen "
                "copy, or set lora_r to share the base"
            )
        master_weights(policy)
        if config.train_top_layers is not None:
            freeze_all_but_top_layers(policy, config.train_top_layers)
    for frozen in (ref_policy, reward_model):
        if frozen is not None:
            frozen.eval().requires_grad_(False)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(trained)
    params = [p for p in trained.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    for param in params:  # LoRA on a low-precision base: the adapters still train in fp32
        param.data = param.data.float()
    runner = dist.prepare_model(trained)
    return RLOOModels(policy, trained, runner, ref_policy, reward_model), params


def _finish(models: RLOOModels, config: RLOOConfig) -> None:
    """Merge LoRA into `policy` (in fp32), undo checkpointing and freezing; eval mode."""
    if config.gradient_checkpointing:
        disable_gradient_checkpointing(models.trained)
    if config.lora_r is not None:
        float_in_place(models.trained)
        models.trained.merge_and_unload()  # type: ignore[operator]  # a PeftModel
    for param in models.policy.parameters():
        param.requires_grad_(True)
    models.policy.eval()


# --------------------------------------------------------------------------- rollout


@dataclass
class RLOORollout:
    """This rank's episodes of one step, tensors on the training device."""

    input_ids: torch.Tensor  # (E, P + R)
    attention_mask: torch.Tensor  # (E, P + R)
    response_mask: torch.Tensor  # (E, R) 1.0 on response tokens (EOS included)
    logprobs: torch.Tensor  # (E, R) log pi(y_t), no grad
    ref_logprobs: torch.Tensor  # (E, R) log pi_ref(y_t)
    entropy: torch.Tensor  # (E, R) entropy of pi at each response position
    scores: torch.Tensor  # (E,) RM + rules + reward_fn - missing-EOS penalty
    rm_scores: torch.Tensor  # (E,) the reward model's part of `scores`
    finished: torch.Tensor  # (E,) bool: the response ended with EOS
    texts: list[str]
    generate_s: float


@torch.no_grad()
def _forwards(
    models: RLOOModels,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    r_len: int,
    config: RLOOConfig,
) -> tuple[torch.Tensor, ...]:
    """(logprobs, ref_logprobs, entropy, rm_scores) of every row, `forward_batch_size`
    rows at a time. Policy and reference run the same code on the same rows, so when they
    are equal the KL is exactly 0."""
    parts = []
    models.trained.eval()
    for start in range(0, input_ids.shape[0], config.forward_batch_size):
        ids = input_ids[start : start + config.forward_batch_size]
        mask = attention_mask[start : start + config.forward_batch_size]
        tokens = ids[:, -r_len:]
        logits = response_logits(models.trained, ids, mask, r_len)
        logp, entropy = token_logprobs(logits, tokens, config.temperature)
        assert entropy is not None
        ref_logits = response_logits(models.ref_policy, ids, mask, r_len)
        ref_logp, _ = token_logprobs(ref_logits, tokens, config.temperature, entropy=False)
        if models.reward_model is None:
            rm = torch.zeros(ids.shape[0], device=ids.device)
        else:
            rm = models.reward_model(ids, mask).float()  # (b,) at the final token
        parts.append((logp, ref_logp, entropy, rm))
    return tuple(torch.cat(column) for column in zip(*parts, strict=True))


def collect_rollout(
    models: RLOOModels,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    seeds: Sequence[int],
    config: RLOOConfig,
    rules: Sequence[Rule],
    reward_fn: RewardFn | None,
    should_stop: Callable[[], bool] | None = None,
) -> RLOORollout:
    """`num_samples` responses per prompt (sample j of prompt p from seeds[p] + j), scored,
    with the policy's and the reference's log-probs. `should_stop` is the sampler's (True
    raises `SamplingStopped`)."""
    started = time.perf_counter()
    settings = GenerationSettings(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        max_prompt_tokens=config.max_prompt_length,
    )
    groups = sample_responses(
        models.trained,
        tokenizer,
        prompts,
        k=config.num_samples,
        settings=settings,
        batch_size=config.forward_batch_size,
        seeds=seeds,
        should_stop=should_stop,
    )
    generate_s = time.perf_counter() - started
    samples = [sample for group in groups for sample in group]
    episode_prompts = [p for p in prompts for _ in range(config.num_samples)]
    prompt_ids = [encode_prompt(tokenizer, p, config.max_prompt_length) for p in prompts]
    input_ids, attention_mask, response_mask = (
        t.to(models.device)
        for t in pack_episodes(
            [ids for ids in prompt_ids for _ in range(config.num_samples)],
            [s.token_ids for s in samples],
            tokenizer.pad_token_id,
        )
    )
    logp, ref_logp, entropy, rm_scores = _forwards(
        models, input_ids, attention_mask, response_mask.shape[1], config
    )
    texts = [s.text for s in samples]
    extra = torch.tensor(
        rule_rewards(texts, [len(s.token_ids) for s in samples], rules), device=models.device
    )
    if reward_fn is not None:
        extra += torch.tensor(
            reward_fn(texts, episode_prompts), device=models.device, dtype=extra.dtype
        )
    finished = torch.tensor([s.finished for s in samples], device=models.device)
    missing_eos = config.missing_eos_penalty * (~finished).to(extra.dtype)
    return RLOORollout(
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        logprobs=logp,
        ref_logprobs=ref_logp,
        entropy=entropy,
        scores=rm_scores + extra - missing_eos,
        rm_scores=rm_scores,
        finished=finished,
        texts=texts,
        generate_s=generate_s,
    )


# --------------------------------------------------------------------------- one step


def _normalised(advantages: torch.Tensor, dist: Distributed) -> torch.Tensor:
    """Advantages divided by their standard deviation over the global step (their mean,
    0 within every group, is kept)."""
    a = advantages.double()
    n, total, squares = dist.sum([float(a.numel()), float(a.sum()), float((a * a).sum())])
    variance = max(squares / n - (total / n) ** 2, 0.0)
    return advantages / (variance**0.5 + 1e-8)


def rloo_update(
    models: RLOOModels,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    rollout: RLOORollout,
    advantages: torch.Tensor,
    config: RLOOConfig,
    precision: Precision,
    scaler: torch.amp.GradScaler,
    dist: Distributed = SINGLE,
) -> dict[str, float]:
    """One optimizer step on the REINFORCE loss of the whole (global) rollout, its rows
    forwarded `forward_batch_size` at a time; returns the loss and the gradient norm."""
    models.runner.train()
    optimizer.zero_grad(set_to_none=True)
    episodes = config.batch_size * config.num_samples  # the global step's
    r_len = rollout.response_mask.shape[1]
    starts = list(range(0, rollout.input_ids.shape[0], config.forward_batch_size))
    total = 0.0
    for index, start in enumerate(starts):
        rows = slice(start, start + config.forward_batch_size)
        ids, mask = rollout.input_ids[rows], rollout.attention_mask[rows]
        with dist.no_sync(models.runner, skip=index < len(starts) - 1):
            with precision.autocast():
                logits = response_logits(models.runner, ids, mask, r_len)
                logp, _ = token_logprobs(logits, ids[:, -r_len:], config.temperature, False)
                loss = reinforce_loss(
                    logp, advantages[rows], rollout.response_mask[rows], float(episodes)
                )
            scaler.scale(loss * dist.world_size).backward()
        total += float(loss.detach())
    scaler.unscale_(optimizer)
    norm = float(torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return {"losses/policy_loss": dist.sum([total])[0], "losses/grad_norm": norm}


def rloo_step(
    models: RLOOModels,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    tokenizer: Any,
    prompts: list[PromptInput],
    config: RLOOConfig,
    step: int,
    kl_ctl: KLController,
    rules: Sequence[Rule],
    reward_fn: RewardFn | None,
    precision: Precision,
    scaler: torch.amp.GradScaler,
    dist: Distributed = SINGLE,
    should_stop: Callable[[], bool] | None = None,
) -> dict[str, float]:
    """Rollout, rewards and advantages, update, controller update; the step's metrics.
    `should_stop` is asked while sampling (True raises `SamplingStopped`)."""
    started = time.perf_counter()
    batch = prompt_batch(len(prompts), config.batch_size, step, config.seed)
    positions = dist.shard(range(config.batch_size))
    with precision.autocast():
        rollout = collect_rollout(
            models,
            tokenizer,
            [prompts[batch[p]] for p in positions],
            [sample_seed(config, step, p) for p in positions],
            config,
            rules,
            reward_fn,
            should_stop,
        )
    rollout_s = time.perf_counter() - started
    kl_coef = kl_ctl.value
    mask = rollout.response_mask
    rewards = sequence_rewards(
        rollout.scores, rollout.logprobs, rollout.ref_logprobs, mask, kl_coef
    )
    advantages = leave_one_out_advantages(rewards, [config.num_samples] * len(positions))
    if config.normalize_advantages:
        advantages = _normalised(advantages, dist)
    update = rloo_update(
        models, optimizer, params, rollout, advantages, config, precision, scaler, dist
    )
    elapsed = time.perf_counter() - started
    kl = (kl_k3(rollout.logprobs, rollout.ref_logprobs) * mask).sum(-1)
    sums = dist.sum(
        [
            float(rewards.sum()),
            float(rollout.scores.sum()),
            float(rollout.rm_scores.sum()),
            float(mask.sum()),
            float(rollout.finished.sum()),
            float(kl.sum()),
            float((rollout.entropy * mask).sum()),
            float(advantages.abs().sum()),
            rollout.generate_s,
        ]
    )
    reward, score, rm, tokens, finished, kl_sum, entropy, abs_adv, generate_s = sums
    episodes = float(config.batch_size * config.num_samples)
    metrics = {
        "env/reward_mean": reward / episodes,
        "env/score_mean": score / episodes,
        "env/response_length": tokens / episodes,
        "env/eos_rate": finished / episodes,
        "objective/kl": kl_sum / episodes,
        "objective/kl_coef": kl_coef,
        "objective/entropy": entropy / max(tokens, 1.0),
        "losses/advantage_abs_mean": abs_adv / episodes,
        **update,
        "charts/tokens_per_s": tokens / elapsed,
        "charts/rollout_s": rollout_s,
        "charts/generate_s": generate_s / dist.world_size,
        "charts/update_s": elapsed - rollout_s,
        "charts/response_tokens": tokens,
        "charts/episodes": (step + 1) * episodes,
    }
    if models.reward_model is not None:
        metrics["env/rm_score"] = rm / episodes
    kl_ctl.update(metrics["objective/kl"], int(episodes))
    return metrics


# --------------------------------------------------------------------------- the loop


def train_rloo(
    policy: nn.Module,
    ref_policy: nn.Module,
    reward_model: nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    config: RLOOConfig,
    *,
    rules: Sequence[Rule] | None = None,
    reward_fn: RewardFn | None = None,
    on_metrics: MetricsCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    precision: Precision = FP32,
    dist: Distributed = SINGLE,
) -> dict[str, Any]:
    """Run `config.steps` RLOO steps in place on `policy`.

    The score of a response is reward_model(prompt + response) + rule terms + reward_fn
    (either scorer may be absent, not all) - missing_eos_penalty. `on_metrics(step,
    values)` gets each finished step (1-based); `should_stop()` is asked before every
    step (a stop on any rank stops all). Returns {"status": "completed" | "cancelled",
    "step", "kl_coef" (beta after the last update), "trainable_params", "history" (one
    {"step", **metrics} per step), and the last step's metrics}. The policy trains in fp32
    (master weights); `precision` sets the autocast dtype of every forward; the reference
    and RM may be stored in it. With `config.lora_r` only LoRA adapters train (on a base
    that may be stored in that dtype); pass `ref_policy=policy` to use that base, adapters
    off, as the reference (one copy, not two). The adapters are merged into `policy` at
    the end. Under several processes (`dist`) `config.batch_size` is the global step.
    """
    prompts = list(prompts)
    config.validate()
    _check_inputs(
        prompts, reward_model is not None or reward_fn is not None or bool(rules), tokenizer
    )
    dist.check_global_batch(config.batch_size)
    models, params = prepare_models(policy, ref_policy, reward_model, config, dist)
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=1e-5)
    scaler = precision.grad_scaler()
    kl_ctl = make_kl_controller(config.init_kl_coef, config.kl_target, rloo_kl_horizon(config))
    metrics: dict[str, float] = {}
    history: list[dict[str, float]] = []
    status, done = "completed", 0
    # alone, a stop is also taken while sampling; several ranks stop together between steps
    sampling_stop = None if dist.enabled else should_stop
    try:
        for step in range(config.steps):
            if should_stop is not None and dist.any(should_stop()):
                status = "cancelled"
                break
            try:
                metrics = rloo_step(
                    models,
                    optimizer,
                    params,
                    tokenizer,
                    prompts,
                    config,
                    step,
                    kl_ctl,
                    rules or (),
                    reward_fn,
                    precision,
                    scaler,
                    dist,
                    sampling_stop,
                )
            except SamplingStopped:
                status = "cancelled"
                break
            done = step + 1
            history.append({"step": float(done), **metrics})
            if on_metrics is not None:
                on_metrics(done, metrics)
    finally:
        _finish(models, config)
    return {
        "status": status,
        "step": done,
        "kl_coef": kl_ctl.value,
        "trainable_params": sum(p.numel() for p in params),
        "history": history,
        **metrics,
    }


def _check_inputs(prompts: list[PromptInput], has_scorer: bool, tokenizer: Any) -> None:
    if not prompts:
        raise ValueError("RLOO needs at least one prompt")
    if not has_scorer:
        raise ValueError("RLOO needs a reward model, a reward_fn or rules to score responses")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs pad and EOS tokens")
