"""PPO against a reward model with a KL penalty to the frozen SFT policy (PRODUCT.md 1.4).

InstructGPT (Ouyang et al. 2022, eq. 2) maximises
    E[r_theta(x, y) - beta * log(pi(y|x) / pi_SFT(y|x))] + gamma * E_pretrain[log pi(x)]
with beta adapted to a KL target (Ziegler et al. 2019). One step is a rollout (sample B
responses, score them, compute old log-probs, reference log-probs and critic values) and
an update (`ppo_epochs` passes over shuffled minibatches of the rollout). Shapes: B
episodes, P prompt tokens (left-padded), R response tokens (right-padded), V vocabulary.
"""

from __future__ import annotations

import functools
import math
import resource
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from training.ml.configs import PPOConfig
from training.ml.data import PromptInput
from training.ml.distributed import SINGLE, Distributed
from training.ml.frozen_trunk import shared_trunk_cache, trunk_cache_for
from training.ml.gae import compute_gae
from training.ml.kl import KLController, kl_k3, make_kl_controller
from training.ml.memory import (
    AdaptersDisabled,
    apply_lora,
    enable_gradient_checkpointing,
    freeze_all_but_top_layers,
    is_peft,
    lora_targets,
)
from training.ml.ppo_checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.ml.ppo_losses import (
    PtxExample,
    PtxItem,
    policy_loss,
    prompt_batch,
    ptx_examples,
    ptx_loss,
    token_rewards,
    value_loss,
)
from training.ml.ppo_ranks import (
    EpisodeShard,
    episode_shard,
    shard_episodes,
    sum_over_ranks,
    whiten_over_ranks,
)
from training.ml.ppo_rollout import (
    PPOModels,
    RewardFn,
    Rollout,
    collect_rollout,
    response_logits,
    response_values,
    token_logprobs,
    top_only,
)
from training.ml.precision import FP32, Precision, float_in_place, master_weights, store_frozen
from training.ml.reward.model import RewardModel
from training.ml.rules import Rule

MetricsCallback = Callable[[int, dict[str, float]], None]
SubstepCallback = Callable[[int, str], None]  # (step, 1-based; "rollout" | "update epoch e/E")
UPDATE_STATS = ("clipfrac", "approx_kl", "vf_clipfrac", "policy_loss", "value_loss")


def kl_horizon(config: PPOConfig) -> int:
    """The controller's horizon in episodes: `kl_horizon`, or a quarter of the run's
    episodes, rounded up.

    Ziegler et al.'s 10,000 episodes suit runs of millions of episodes; with the horizon
    tied to the run, beta *= (1 + 0.2 * 4 / steps) per step at full error, about 2.2x over
    any run length when the KL stays far from target (0.45x when far below). Rounding up
    keeps a step's gain batch_size / horizon at most 4 (rounding down gave a one-step run
    of 6 prompts horizon 1, gain 6, and a negative beta far below target)."""
    if config.kl_horizon is not None:
        return config.kl_horizon
    return max(1, math.ceil(config.steps * config.batch_size / 4))


def prepare_models(
    models: PPOModels, config: PPOConfig, precision: Precision = FP32
) -> list[nn.Parameter]:
    """Freeze the reference and the RM, apply the memory options (LoRA: `share_bases`),
    set up the trunk caches; returns the trainable parameters of policy and critic, in
    fp32 (master weights).

    Frozen weights are stored in `precision.frozen_dtype(config.frozen_dtype)` (auto: bf16
    under bf16 autocast; in fp32 training as loaded): the separate reference and RM
    copies, and with LoRA the bases under the adapters, which fp32 training keeps in fp32
    (its adapters compute on them without autocast). The trained policy's frozen bottom
    blocks in the top-layers mode stay fp32: they are saved with it. Only trained
    parameters get optimizer state."""
    frozen_dtype = precision.frozen_dtype(config.frozen_dtype)
    if config.lora_r is not None:
        if not precision.mixed:
            frozen_dtype = frozen_dtype or torch.float32
        if not precision.mixed and frozen_dtype != torch.float32:
            raise ValueError(
                f"LoRA bases stored in {frozen_dtype} compute under the adapters, which needs "
                "autocast: train with that dtype (e.g. --dtype bf16: bf16 autocast over fp32 "
                "adapters) or keep frozen_dtype auto"
            )
        share_bases(models, config)
        store_frozen(models.policy, frozen_dtype)
        store_frozen(models.critic, frozen_dtype)
    else:
        if models.ref_policy is models.policy or models.reward_model is models.critic:
            raise ValueError(
                "the reference (or RM) is the trained policy (or critic) itself: pass a "
                "separate frozen copy, or set lora_r to share the base"
            )
        master_weights(models.policy)
        master_weights(models.critic)
    for frozen in (models.ref_policy, models.reward_model):
        if frozen is not None:  # an AdaptersDisabled view owns no parameters
            store_frozen(frozen.eval().requires_grad_(False), frozen_dtype)
    critic = _inner(models.critic)
    assert critic is not None
    for module in (models.policy, critic):
        if config.train_top_layers is not None:
            freeze_all_but_top_layers(module, config.train_top_layers)
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(module)
    params = [p for m in (models.policy, critic) for p in m.parameters() if p.requires_grad]
    if not params:
        raise ValueError("policy and critic have no trainable parameters")
    for param in params:  # LoRA on a low-precision base: the adapters still train in fp32
        param.data = param.data.float()
    # With LoRA every block holds trained adapters, so there is no frozen bottom to cache
    # (`trunk_cache_for` would find none): the caches are for train_top_layers.
    if config.cache_frozen_trunk and config.lora_r is None:
        models.policy_trunk = trunk_cache_for(models.policy)
        models.critic_trunk = trunk_cache_for(critic)
        models.ref_trunk = shared_trunk_cache(models.policy_trunk, models.ref_policy)
        models.rm_trunk = shared_trunk_cache(models.critic_trunk, _inner(models.reward_model))
    return params


def _inner(model: nn.Module | None) -> nn.Module | None:
    """The transformers model: a RewardModel wraps it in `.seq`."""
    return model.seq if isinstance(model, RewardModel) else model


def share_bases(models: PPOModels, config: PPOConfig) -> None:
    """LoRA PPO in two base copies: adapters on the policy (its SFT base frozen) and on the
    critic's backbone, whose value head trains in full (`modules_to_save`; the critic
    starts from the RM, PRODUCT.md 1.4). A reference given as the policy itself becomes
    the policy with its adapters off (`AdaptersDisabled`), and an RM given as the critic
    itself the critic with its adapters off, its original head scoring. A reference or RM
    given as another model stays a separate frozen copy. The bases may be stored in a low
    precision: nothing updates them."""
    assert config.lora_r is not None
    policy, critic = models.policy, models.critic
    if not isinstance(critic, RewardModel):
        raise ValueError("with LoRA the critic must be a RewardModel")
    if is_peft(policy) or is_peft(critic.seq):
        raise ValueError("policy and critic must be plain models: LoRA PPO adds the adapters")
    targets = lora_targets(config.lora_target_modules)
    models.policy = apply_lora(policy, config.lora_r, config.lora_alpha, targets)
    critic.seq = apply_lora(
        critic.seq, config.lora_r, config.lora_alpha, targets, modules_to_save=["score"]
    )
    if models.ref_policy is policy:
        models.ref_policy = AdaptersDisabled(models.policy)
    if models.reward_model is critic:
        models.reward_model = AdaptersDisabled(critic)


def merge_adapters(models: PPOModels) -> None:
    """End of a LoRA run: merge the policy's adapters into its base weights, in fp32 and in
    place, so the policy object the caller passed is a plain trained model again, saved
    as an ordinary save_pretrained folder (a bf16 base would round most of the small
    update away, hence fp32). The shared reference view is then gone.

    The critic keeps its adapters on its stored base: nothing saves it after the run, it
    is exact as it is (`RewardModel` scores and saves through a peft wrapper, merging into
    a copy), and merging it in fp32 would hold a third full-precision base at the end of
    the run, its peak memory."""
    float_in_place(models.policy)
    merged = models.policy.merge_and_unload()  # type: ignore[operator]  # a PeftModel
    merged.requires_grad_(True)


# --------------------------------------------------------------------------- update


def compute_advantages(
    rollout: Rollout, config: PPOConfig, kl_coef: float, dist: Distributed = SINGLE
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rewards, whitened advantages, returns), each (B, R); whitened over the episodes
    of every rank (`dist`), as one process whitens its whole batch."""
    mask = rollout.response_mask
    rewards = token_rewards(rollout.scores, rollout.logprobs, rollout.ref_logprobs, mask, kl_coef)
    gae_rewards = (
        whiten_over_ranks(dist, rewards, mask, shift_mean=False)
        if config.whiten_rewards
        else rewards
    )
    advantages, returns = compute_gae(gae_rewards, rollout.values, mask, config.gamma, config.lam)
    return rewards, whiten_over_ranks(dist, advantages, mask), returns


def minibatch_backward(
    models: PPOModels,
    rollout: Rollout,
    idx: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    config: PPOConfig,
    backward: Callable[[torch.Tensor], None],
    count: float | None = None,
    precision: Precision = FP32,
) -> dict[str, float]:
    """Clipped policy loss + vf_coef * clipped value loss on rollout rows `idx` (token
    sums over `count`, the minibatch's tokens on all ranks, when given), back-propagated
    by `backward`; returns the stats.

    The policy's loss is back-propagated before the critic's forward runs, so the policy's
    graph (its activations and full-vocabulary tensors) is freed before the critic's is
    built: policy and critic share no parameter, so the gradients are those of the summed
    loss. Forwards run under `precision`'s autocast, backward outside it."""
    ids, attn, mask = (
        rollout.input_ids[idx],
        rollout.attention_mask[idx],
        rollout.response_mask[idx],
    )
    r_len = mask.shape[1]
    with precision.autocast():
        with top_only(models.policy_trunk, rollout.policy_trunk, idx):
            logits = response_logits(models.policy, ids, attn, r_len)
        new_logp, _ = token_logprobs(logits, ids[:, -r_len:], config.temperature, entropy=False)
        del logits
        pg, stats = policy_loss(
            new_logp, rollout.logprobs[idx], advantages[idx], mask, config.cliprange, count
        )
    backward(pg)
    stats["policy_loss"] = pg.item()
    del pg, new_logp
    with precision.autocast():
        with top_only(models.critic_trunk, rollout.critic_trunk, idx):
            new_values = response_values(models.critic, ids, attn, r_len)
        vf, vf_stats = value_loss(
            new_values, rollout.values[idx], returns[idx], mask, config.cliprange_value, count
        )
    backward(config.vf_coef * vf)
    return stats | vf_stats | {"value_loss": vf.item()}


def ppo_update(
    models: PPOModels,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    config: PPOConfig,
    step: int,
    ptx: list[PtxExample] | None,
    pad_id: int,
    precision: Precision = FP32,
    scaler: torch.amp.GradScaler | None = None,
    *,
    shard: EpisodeShard | None = None,
    dist: Distributed = SINGLE,
    on_epoch: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """`ppo_epochs` passes over shuffled minibatches; returns the mean of each loss stat.
    `on_epoch(epoch, epochs)` (1-based) is told as each pass begins.
    Forwards run under `precision`'s autocast (backward outside it); `scaler` scales fp16
    losses. Each loss (policy, value, ptx) is back-propagated as soon as it is computed,
    so only one model's graph is alive at a time (`minibatch_backward`).

    Under several processes (`dist`) the rollout is this rank's `shard` of the global
    batch: the minibatches are drawn from the global episodes, each rank forwards the rows
    of a minibatch it holds, with losses normalised by the minibatch's token count over
    all ranks, and the gradients are summed over the ranks before clipping, so every rank
    takes the one-process step. The stats are global too."""
    scaler = scaler or precision.grad_scaler()
    models.policy.train()
    models.critic.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if shard is None:
        shard = EpisodeShard(0, rollout.input_ids.shape[0], rollout.response_mask.sum(-1).cpu())
    generator = torch.Generator().manual_seed(config.seed * 7919 + step)
    n = shard.global_size
    totals: dict[str, list[float]] = {}
    draw = step * config.ppo_epochs * math.ceil(n / config.mini_batch_size)  # ptx batch index

    def backward(loss: torch.Tensor) -> None:
        scaler.scale(loss).backward()

    for epoch in range(config.ppo_epochs):
        if on_epoch is not None:
            on_epoch(epoch + 1, config.ppo_epochs)
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.mini_batch_size):
            rows = order[start : start + config.mini_batch_size]
            idx = shard.local_rows(rows).to(models.device)
            optimizer.zero_grad(set_to_none=True)
            stats = dict.fromkeys(UPDATE_STATS, 0.0)  # a rank holding none of the rows
            if len(idx):
                stats = minibatch_backward(
                    models, rollout, idx, advantages, returns, config, backward,
                    shard.tokens(rows), precision,
                )  # fmt: skip
            if ptx:
                with precision.autocast():
                    lm_loss = ptx_loss(
                        models.policy, ptx, draw, config.ptx_batch_size, config.seed, pad_id, dist
                    )
                stats["ptx_loss"] = 0.0 if lm_loss is None else lm_loss.item()
                if lm_loss is not None:
                    backward(config.ptx_coef * lm_loss)
                del lm_loss
            draw += 1
            dist.sum_gradients(params)
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            for key, value in stats.items():
                totals.setdefault(key, []).append(value)
    if dist.enabled:  # each rank's stats are its shares of the global minibatch's
        totals = sum_over_ranks(dist, totals)
    return {key: sum(values) / len(values) for key, values in totals.items()}


def step_metrics(
    rollout: Rollout,
    rewards: torch.Tensor,
    update: dict[str, float],
    kl_coef: float,
    has_reward_model: bool,
    dist: Distributed = SINGLE,
) -> dict[str, float]:
    """The per-step metrics (CleanRL/TRL names) over the episodes of every rank; KL is
    the k3 estimate summed per response."""
    mask = rollout.response_mask
    kl = (kl_k3(rollout.logprobs, rollout.ref_logprobs) * mask).sum(-1)  # (B,)
    sums = {  # per episode, then "tokens" for the entropy's token mean
        "env/reward_mean": rewards.sum(),
        "env/score_mean": rollout.scores.sum(),
        "env/response_length": mask.sum(),
        "env/eos_rate": rollout.finished.float().sum(),
        "objective/kl": kl.sum(),
        "objective/entropy": (rollout.entropy * mask).sum(),
        "env/rm_score": rollout.rm_scores.sum(),
        "episodes": torch.tensor(float(mask.shape[0])),
    }
    totals = dict(zip(sums, dist.sum([float(v) for v in sums.values()]), strict=True))
    episodes, tokens = max(totals.pop("episodes"), 1.0), max(totals["env/response_length"], 1.0)
    metrics = {key: value / episodes for key, value in totals.items()}
    metrics["objective/entropy"] = totals["objective/entropy"] / tokens
    metrics["objective/kl_coef"] = kl_coef
    if not has_reward_model:
        del metrics["env/rm_score"]
    metrics.update({f"losses/{key}": value for key, value in update.items()})
    return metrics


# --------------------------------------------------------------------------- the loop


def train_ppo(
    policy: nn.Module,
    ref_policy: nn.Module,
    critic: nn.Module,
    reward_model: nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    config: PPOConfig,
    *,
    rules: Sequence[Rule] | None = None,
    reward_fn: RewardFn | None = None,
    ptx_texts: Sequence[PtxItem] | None = None,
    on_metrics: MetricsCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
    on_substep: SubstepCallback | None = None,
    precision: Precision = FP32,
    dist: Distributed = SINGLE,
) -> dict[str, Any]:
    """Run `config.steps` PPO steps in place on `policy` and `critic`.

    The score of a response is reward_model(prompt + response) + rule terms + reward_fn
    (either scorer may be absent, not both) - missing_eos_penalty. `on_metrics(step,
    values)` gets each finished step (1-based); `on_substep(step, label)` is told when the
    step (1-based) starts its rollout ("rollout") and each update epoch ("update epoch
    2/4"); `should_stop()` is asked before every step. Returns {"status": "completed" |
    "cancelled", "step", "kl_coef", "resumed_from", and the last step's metrics}. With
    `checkpoint_dir`, checkpoints are written every `checkpoint_every` steps, on cancel and
    at the end, and `resume` continues from the newest complete one. Policy and critic train
    in fp32 (master weights); `precision` sets the autocast dtype of rollouts and updates;
    the reference and RM may be stored in it. With `config.lora_r` only LoRA adapters (and
    the critic's head) train, on bases that may be stored in that dtype; pass
    `ref_policy=policy` and `reward_model=critic` to score with those bases, adapters off
    (`share_bases`: two copies, not four). The policy's adapters are merged into `policy`
    (fp32) at the end; `critic` keeps its adapters (`merge_adapters`). The result's
    "trainable_params" counts the trained parameters.

    Under several processes (`dist`, every rank calling with the same arguments)
    `config.batch_size` is the global batch: each rank rolls out and trains on its slice
    of every step (`ppo_step`), the trained tensors start from rank 0's, every rank takes
    the one-process optimizer step, a stop asked on any rank stops all, and rank 0 alone
    writes checkpoints (resuming reads them on every rank).
    """
    dist.check_global_batch(config.batch_size)
    prompts = list(prompts)
    _check_inputs(
        prompts, reward_model is not None or reward_fn is not None or bool(rules), tokenizer
    )
    models = PPOModels(policy, ref_policy, critic, reward_model)
    ptx = None
    if ptx_texts and config.ptx_coef:
        ptx = ptx_examples(tokenizer, ptx_texts, config.max_ptx_length)
    params = prepare_models(models, config, precision)
    dist.broadcast([p.data for p in params])  # e.g. freshly initialised adapters and heads
    optimizer = torch.optim.Adam(params, lr=config.lr, eps=1e-5)
    scaler = precision.grad_scaler()
    kl_ctl = make_kl_controller(config.init_kl_coef, config.kl_target, kl_horizon(config))
    start, resumed_from = 0, None
    metrics: dict[str, float] = {}
    found = latest_checkpoint(checkpoint_dir) if checkpoint_dir and resume else None
    if found is not None:
        state = load_checkpoint(
            found, policy=models.policy, critic=models.critic, optimizer=optimizer
        )
        start = resumed_from = int(state["step"])
        kl_ctl.value = float(state["kl_coef"])
        metrics = dict(state.get("metrics") or {})  # the last step's, if none runs now
        if state.get("grad_scaler"):  # fp16: resume at the loss scale the run had reached
            scaler.load_state_dict(state["grad_scaler"])

    def checkpoint(step: int) -> None:
        assert checkpoint_dir is not None
        if not dist.is_main:  # every rank holds the same state
            return
        state = {
            "step": step,
            "kl_coef": kl_ctl.value,
            "seed": config.seed,
            "config": asdict(config),
            "metrics": metrics,
            "grad_scaler": scaler.state_dict(),  # {} unless fp16
        }
        save_checkpoint(
            checkpoint_dir,
            state,
            policy=models.policy,
            critic=models.critic,
            tokenizer=tokenizer,
            optimizer=optimizer,
            keep=config.keep_checkpoints,
        )

    status = "completed"
    step = start
    for step in range(start, config.steps):
        if dist.any(should_stop is not None and should_stop()):
            status = "cancelled"
            break
        metrics = ppo_step(
            models,
            optimizer,
            tokenizer,
            prompts,
            config,
            step,
            kl_ctl,
            rules or (),
            reward_fn,
            ptx,
            precision,
            scaler,
            dist,
            on_substep=on_substep,
        )
        if on_metrics is not None:
            on_metrics(step + 1, metrics)
        every = config.checkpoint_every
        if checkpoint_dir and every and (step + 1) % every == 0 and step + 1 < config.steps:
            checkpoint(step + 1)
    else:
        step = max(config.steps, start)
    if checkpoint_dir and step > (resumed_from or 0):
        checkpoint(step)
    if config.lora_r is not None:
        merge_adapters(models)
    return {"status": status, "step": step, "kl_coef": kl_ctl.value,
            "resumed_from": resumed_from, "trainable_params": sum(p.numel() for p in params),
            **metrics}  # fmt: skip


def _check_inputs(prompts: list[PromptInput], has_scorer: bool, tokenizer: Any) -> None:
    if not prompts:
        raise ValueError("PPO needs at least one prompt")
    if not has_scorer:
        raise ValueError("PPO needs a reward model, a reward_fn or rules to score responses")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs pad and EOS tokens")


def _epoch_substep(on_substep: SubstepCallback, step: int, epoch: int, epochs: int) -> None:
    on_substep(step + 1, f"update epoch {epoch}/{epochs}")


def ppo_step(
    models: PPOModels,
    optimizer: torch.optim.Optimizer,
    tokenizer: Any,
    prompts: list[PromptInput],
    config: PPOConfig,
    step: int,
    kl_ctl: KLController,
    rules: Sequence[Rule],
    reward_fn: RewardFn | None,
    ptx: list[PtxExample] | None,
    precision: Precision = FP32,
    scaler: torch.amp.GradScaler | None = None,
    dist: Distributed = SINGLE,
    *,
    on_substep: SubstepCallback | None = None,
) -> dict[str, float]:
    """Rollout, advantages, update, controller update; returns the step's metrics.
    `on_substep(step + 1, label)` is told as the rollout and each update epoch begin.

    Under several processes (`dist`) this rank rolls out its slice of the step's global
    batch of `config.batch_size` prompts (`training.ml.ppo_ranks`); the metrics and the
    controller's KL are those of the global batch."""
    started = time.perf_counter()
    batch = [prompts[i] for i in prompt_batch(len(prompts), config.batch_size, step, config.seed)]
    offset, size = shard_episodes(dist, len(batch))
    if on_substep is not None:
        on_substep(step + 1, "rollout")
    with precision.autocast():
        rollout = collect_rollout(
            models, tokenizer, batch[offset : offset + size], config, step, rules, reward_fn,
            offset=offset, global_batch=len(batch),
        )  # fmt: skip
    rollout_s = time.perf_counter() - started
    shard = episode_shard(dist, rollout.response_mask, offset, len(batch))
    kl_coef = kl_ctl.value
    rewards, advantages, returns = compute_advantages(rollout, config, kl_coef, dist)
    update = ppo_update(
        models,
        optimizer,
        rollout,
        advantages,
        returns,
        config,
        step,
        ptx,
        tokenizer.pad_token_id,
        precision,
        scaler,
        shard=shard,
        dist=dist,
        on_epoch=None
        if on_substep is None
        else functools.partial(_epoch_substep, on_substep, step),
    )
    elapsed = time.perf_counter() - started
    has_rm = models.reward_model is not None
    metrics = step_metrics(rollout, rewards, update, kl_coef, has_rm, dist)
    kl_ctl.update(metrics["objective/kl"], config.batch_size)
    tokens = float(shard.token_counts.sum())
    metrics |= {
        "charts/tokens_per_s": tokens / elapsed,
        "charts/rollout_s": rollout_s,
        "charts/generate_s": rollout.generate_s,
        "charts/update_s": elapsed - rollout_s,
        "charts/response_tokens": tokens,
        "charts/episodes": float((step + 1) * config.batch_size),
    }
    return metrics


# --------------------------------------------------------------------------- benchmark


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocator peak on a GPU, else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def reset_peak_memory(device: torch.device) -> bool:
    """Restart peak tracking; on CPU through Linux's /proc/self/clear_refs ("5" resets the
    peak RSS to the current RSS). False when the platform does not allow it."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def bench_ppo(
    policy: nn.Module,
    ref_policy: nn.Module,
    critic: nn.Module,
    reward_model: nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[PromptInput],
    config: PPOConfig,
    *,
    reward_fn: RewardFn | None = None,
    warmup_steps: int = 1,
    precision: Precision = FP32,
) -> dict[str, float]:
    """Time `config.steps` real PPO steps (under `precision`); the first `warmup_steps` are
    left out of rates.

    PPO tokens/s counts sampled response tokens per second of the whole step (rollout +
    update); the phase rates divide the same tokens by each phase's time (generation
    alone, the whole rollout with its scoring forwards, the update).
    """
    device = next(policy.parameters()).device
    peak_reset = reset_peak_memory(device)
    history: list[dict[str, float]] = []
    result = train_ppo(
        policy,
        ref_policy,
        critic,
        reward_model,
        tokenizer,
        prompts,
        config,
        reward_fn=reward_fn,
        on_metrics=lambda _, m: history.append(m),
        precision=precision,
    )
    timed = history[warmup_steps:] or history
    tokens = sum(m["charts/response_tokens"] for m in timed)
    generate_s = sum(m["charts/generate_s"] for m in timed)
    rollout_s = sum(m["charts/rollout_s"] for m in timed)
    update_s = sum(m["charts/update_s"] for m in timed)
    return {
        "steps_timed": float(len(timed)),
        "response_tokens": tokens,
        "ppo_tokens_per_s": tokens / (rollout_s + update_s),
        "rollout_tokens_per_s": tokens / rollout_s,
        "generate_tokens_per_s": tokens / generate_s,
        "update_tokens_per_s": tokens / update_s,
        "share_generate": generate_s / (rollout_s + update_s),
        "share_rollout_forwards": (rollout_s - generate_s) / (rollout_s + update_s),
        "share_update": update_s / (rollout_s + update_s),
        "seconds_per_step": (rollout_s + update_s) / len(timed),
        "peak_memory_mb": peak_memory_mb(device),
        "peak_memory_is_run_only": float(peak_reset),
        "trainable_params": float(result["trainable_params"]),
    }
