"""PPO against a reward model with a KL penalty to the frozen SFT policy (PRODUCT.md 1.4).

InstructGPT (Ouyang et al. 2022, eq. 2) maximises
    E[r_theta(x, y) - beta * log(pi(y|x) / pi_SFT(y|x))] + gamma * E_pretrain[log pi(x)]
with beta adapted to a KL target (Ziegler et al. 2019). One step is a rollout (sample B
responses, score them, compute old log-probs, reference log-probs and critic values) and
an update (`ppo_epochs` passes over shuffled minibatches of the rollout). Shapes: B
episodes, P prompt tokens (left-padded), R response tokens (right-padded), V vocabulary.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from training.ml.data import Demonstration
from training.ml.frozen_trunk import TrunkCache, frozen_prefix, same_trunk
from training.ml.gae import compute_gae, masked_mean, masked_whiten
from training.ml.kl import KLController, kl_k3, kl_penalty, make_kl_controller
from training.ml.models import (
    enable_gradient_checkpointing,
    encode_prompt,
    freeze_all_but_top_layers,
)
from training.ml.ppo_checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from training.ml.reward_model import RewardModel
from training.ml.rules import Rule, rule_rewards
from training.ml.sampling import (
    GenerationSettings,
    position_ids_from_attention_mask,
    sample_responses,
)
from training.ml.sft import build_sft_example, collate_right_padded, response_nll

Prompt = str | list[dict]
PtxItem = str | tuple[Prompt, str] | Demonstration
PtxExample = tuple[list[int], list[int]]  # (input_ids, labels), labels -100 where no loss
RewardFn = Callable[[list[str], list[Prompt]], list[float]]
MetricsCallback = Callable[[int, dict[str, float]], None]


@dataclass
class PPOConfig:
    """Hyper-parameters of one PPO run (defaults: a CPU-sized InstructGPT recipe)."""

    steps: int = 20
    """number of PPO steps (one rollout batch + its update each)"""
    batch_size: int = 8
    """prompts (episodes) per rollout"""
    mini_batch_size: int = 4
    """episodes per gradient step in the update"""
    ppo_epochs: int = 4
    """passes over each rollout batch"""
    lr: float = 1e-5
    """Adam learning rate of policy and critic"""
    max_grad_norm: float = 1.0
    """gradient clipping of policy and critic together"""
    cliprange: float = 0.2
    """epsilon of the clipped policy ratio"""
    cliprange_value: float = 0.2
    """clip of the value prediction around the rollout's value"""
    vf_coef: float = 0.1
    """weight of the value loss"""
    gamma: float = 1.0
    """discount of GAE"""
    lam: float = 0.95
    """lambda of GAE"""
    init_kl_coef: float = 0.2
    """initial beta of the per-token KL penalty"""
    kl_target: float | None = 6.0
    """KL (nats per response) the adaptive controller aims at; None keeps beta fixed"""
    kl_horizon: int = 10_000
    """horizon of the adaptive controller, in episodes"""
    whiten_rewards: bool = False
    """scale per-token rewards to unit variance before GAE"""
    missing_eos_penalty: float = 0.0
    """subtracted from the score of a response that did not end with EOS"""
    ptx_coef: float = 0.0
    """gamma of PPO-ptx: weight of the log-likelihood of ptx texts"""
    ptx_batch_size: int = 4
    """ptx texts per gradient step"""
    max_new_tokens: int = 64
    """length limit of a sampled response"""
    max_prompt_length: int = 256
    """prompt tokens kept (the last ones)"""
    max_ptx_length: int = 256
    """tokens kept of a ptx text"""
    temperature: float = 1.0
    """sampling temperature; log-probs are taken from the same tempered distribution"""
    top_p: float = 1.0
    """nucleus sampling mass"""
    forward_batch_size: int = 8
    """episodes per no-grad forward pass in the rollout"""
    seed: int = 0
    """seed of prompt order and sampling; step s uses seed + s"""
    train_top_layers: int | None = None
    """train only the top N blocks (and head) of policy and critic"""
    gradient_checkpointing: bool = False
    """recompute activations in backward to save memory"""
    cache_frozen_trunk: bool = True
    """with frozen bottom blocks, run them once per rollout, not in every update pass"""
    checkpoint_every: int = 0
    """steps between checkpoints (0: only on cancel and at the end)"""
    keep_checkpoints: int = 2
    """complete checkpoints kept on disk"""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "mini_batch_size", "ppo_epochs", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError("temperature must be > 0 (PPO needs the sampling distribution)")


# --------------------------------------------------------------------------- rollout


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
    """The four networks of PPO (the reward model may be absent when a reward_fn scores)."""

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


def prepare_models(models: PPOModels, config: PPOConfig) -> list[nn.Parameter]:
    """Freeze the reference and the RM, apply the memory options, set up the trunk caches;
    returns the trainable parameters of policy and critic."""
    for frozen in (models.ref_policy, models.reward_model):
        if frozen is not None:
            frozen.eval().requires_grad_(False)
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
    if config.cache_frozen_trunk:
        models.policy_trunk = _trunk_cache(models.policy)
        models.critic_trunk = _trunk_cache(critic)
        models.ref_trunk = _shared_trunk(models.policy_trunk, models.ref_policy)
        models.rm_trunk = _shared_trunk(models.critic_trunk, _inner(models.reward_model))
    return params


def _inner(model: nn.Module | None) -> nn.Module | None:
    """The transformers model: a RewardModel wraps it in `.seq`."""
    return model.seq if isinstance(model, RewardModel) else model


def _trunk_cache(model: nn.Module) -> TrunkCache | None:
    try:
        k = frozen_prefix(model)
    except (AttributeError, ValueError):  # not a transformers model with findable blocks
        return None
    return TrunkCache(model, k) if k else None


def _shared_trunk(cache: TrunkCache | None, other: nn.Module | None) -> TrunkCache | None:
    """A cache that runs `other`'s top blocks on `cache`'s trunk, if their bottoms are equal."""
    if cache is None or other is None:
        return None
    try:
        return TrunkCache(other, cache.k) if same_trunk(cache.model, other, cache.k) else None
    except (AttributeError, ValueError):
        return None


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
    """(log pi(y_t), entropy_t or None), both (B, R), of the tempered softmax(z / T)."""
    z = logits / temperature  # (B, R, V)
    log_norm = z.logsumexp(-1)  # (B, R)
    logp = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - log_norm
    if not entropy:
        return logp, None
    return logp, log_norm - (torch.softmax(z, dim=-1) * z).sum(-1)


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


def _top_only(
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
            parts.append(_forward_chunk(models, ids, mask, r_len, temperature,
                                        policy_recorded, critic_recorded))  # fmt: skip
    logp, ref_logp, values, entropy, rm_scores = (torch.cat(c) for c in zip(*parts, strict=True))
    return Forwards(
        logp, ref_logp, values, entropy, rm_scores,
        _concat_if_verified(models.policy_trunk, policy_recorded),
        _concat_if_verified(models.critic_trunk, critic_recorded),
    )  # fmt: skip


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
    trunk = _checked_trunk(models.policy_trunk, policy_recorded, logits,
                           lambda: response_logits(models.policy, ids, mask, r_len))  # fmt: skip
    with _top_only(models.ref_trunk, trunk):
        ref_logits = response_logits(models.ref_policy, ids, mask, r_len)
    ref_logp, _ = token_logprobs(ref_logits, tokens, temperature, entropy=False)
    values = response_values(models.critic, ids, mask, r_len)
    trunk = _checked_trunk(models.critic_trunk, critic_recorded, values,
                           lambda: response_values(models.critic, ids, mask, r_len))  # fmt: skip
    if models.reward_model is None:
        rm_scores = torch.zeros(ids.shape[0], device=ids.device)
    else:
        with _top_only(models.rm_trunk, trunk):
            rm_scores = models.reward_model(ids, mask).float()  # (B,) at the final token
    return logp, ref_logp, values, entropy, rm_scores


def _concat_if_verified(
    cache: TrunkCache | None, recorded: list[torch.Tensor]
) -> torch.Tensor | None:
    return torch.cat(recorded) if cache is not None and cache.verified and recorded else None


def token_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    response_mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """(B, R) per-token reward: -beta * (log pi - log pi_SFT) on every response token, plus
    the sequence score at the final response token (InstructGPT eq. 2, Ziegler 2019)."""
    rewards = -kl_coef * kl_penalty(logprobs, ref_logprobs) * response_mask
    last = (response_mask.sum(-1).long() - 1).clamp(min=0)  # (B,) index of the final token
    has_tokens = response_mask.sum(-1) > 0
    rewards[torch.arange(rewards.shape[0]), last] += torch.where(has_tokens, scores, 0.0)
    return rewards


# --------------------------------------------------------------------------- losses


def policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped surrogate (Schulman et al. 2017, eq. 7) over masked tokens, all (B, R)."""
    log_ratio = new_logprobs - old_logprobs
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((clipped > unclipped).float(), mask).item(),
            "approx_kl": masked_mean((ratio - 1) - log_ratio, mask).item(),  # k3, CleanRL
        }
    return loss, stats


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped value loss 0.5 * max((V - R)^2, (V_clip - R)^2) over masked tokens."""
    clipped = old_values + (new_values - old_values).clamp(-cliprange_value, cliprange_value)
    losses = torch.maximum((new_values - returns) ** 2, (clipped - returns) ** 2)
    loss = 0.5 * masked_mean(losses, mask)
    with torch.no_grad():
        frac = masked_mean(((clipped - returns) ** 2 > (new_values - returns) ** 2).float(), mask)
    return loss, {"vf_clipfrac": frac.item()}


# --------------------------------------------------------------------------- data


def prompt_batch(n_items: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Indices of the items of `step`: epochs over the set, each in its own shuffled order
    (seeded by seed and epoch), so a resumed run sees exactly the same batches."""
    orders: dict[int, list[int]] = {}
    indices = []
    for i in range(step * batch_size, (step + 1) * batch_size):
        epoch, position = divmod(i, n_items)
        if epoch not in orders:
            orders[epoch] = list(range(n_items))
            random.Random(seed * 1_000_003 + epoch).shuffle(orders[epoch])
        indices.append(orders[epoch][position])
    return indices


def ptx_examples(tokenizer: Any, items: Sequence[PtxItem], max_length: int) -> list[PtxExample]:
    """(input_ids, labels) of each PPO-ptx item, as SFT builds them. A str is pretraining
    text (every token is a label); a (prompt, response) pair or a Demonstration is chat-
    templated with the loss on the response and its EOS."""
    examples = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            ids = tokenizer(item, add_special_tokens=False)["input_ids"][:max_length]
            example = (list(ids), list(ids))
        elif isinstance(item, Demonstration):
            example = build_sft_example(tokenizer, item, max_length)
        elif isinstance(item, tuple | list) and len(item) == 2 and isinstance(item[1], str):
            demo = Demonstration(prompt=item[0], response=item[1])
            example = build_sft_example(tokenizer, demo, max_length)
        else:
            raise ValueError(f"ptx item {i}: expected a text or a (prompt, response) pair")
        if len(example[0]) < 2:
            raise ValueError(f"ptx item {i}: fewer than 2 tokens, nothing to predict")
        examples.append(example)
    return examples


def ptx_loss(
    policy: nn.Module,
    examples: list[PtxExample],
    draw: int,
    config: PPOConfig,
    pad_id: int,
) -> torch.Tensor:
    """PPO-ptx: mean NLL of the labelled tokens of the `draw`-th ptx batch (InstructGPT
    eq. 2's gamma * E[log pi(x)] term, as a loss)."""
    picks = prompt_batch(len(examples), config.ptx_batch_size, draw, config.seed)
    device = next(policy.parameters()).device
    batch = collate_right_padded([examples[i] for i in picks], pad_id, device)
    nll, count = response_nll(policy, batch)
    return nll / max(count, 1)


# --------------------------------------------------------------------------- one step


def collect_rollout(
    models: PPOModels,
    tokenizer: Any,
    prompts: list[Prompt],
    config: PPOConfig,
    step: int,
    rules: Sequence[Rule],
    reward_fn: RewardFn | None,
) -> Rollout:
    """Sample one response per prompt, then score it and recompute log-probs and values."""
    models.policy.eval()
    started = time.perf_counter()
    settings = GenerationSettings(
        max_new_tokens=config.max_new_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=config.seed + step,
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
        extra += torch.tensor(reward_fn(texts, prompts), device=models.device, dtype=extra.dtype)
    finished = torch.tensor([s.finished for s in samples], device=models.device)
    missing_eos = config.missing_eos_penalty * (~finished).to(extra.dtype)
    scores = forwards.rm_scores + extra - missing_eos  # (B,)
    return Rollout(
        input_ids=input_ids, attention_mask=attention_mask, response_mask=response_mask,
        scores=scores, finished=finished, texts=texts, generate_s=generate_s,
        **forwards._asdict(),
    )  # fmt: skip


def compute_advantages(
    rollout: Rollout, config: PPOConfig, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rewards, whitened advantages, returns), each (B, R)."""
    mask = rollout.response_mask
    rewards = token_rewards(rollout.scores, rollout.logprobs, rollout.ref_logprobs, mask, kl_coef)
    gae_rewards = (
        masked_whiten(rewards, mask, shift_mean=False) if config.whiten_rewards else rewards
    )
    advantages, returns = compute_gae(gae_rewards, rollout.values, mask, config.gamma, config.lam)
    return rewards, masked_whiten(advantages, mask), returns


def minibatch_loss(
    models: PPOModels,
    rollout: Rollout,
    idx: torch.Tensor,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    config: PPOConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped policy loss + vf_coef * clipped value loss on rollout rows `idx`."""
    ids, attn, mask = (
        rollout.input_ids[idx],
        rollout.attention_mask[idx],
        rollout.response_mask[idx],
    )
    r_len = mask.shape[1]
    with _top_only(models.policy_trunk, rollout.policy_trunk, idx):
        logits = response_logits(models.policy, ids, attn, r_len)
    new_logp, _ = token_logprobs(logits, ids[:, -r_len:], config.temperature, entropy=False)
    pg, stats = policy_loss(
        new_logp, rollout.logprobs[idx], advantages[idx], mask, config.cliprange
    )
    with _top_only(models.critic_trunk, rollout.critic_trunk, idx):
        new_values = response_values(models.critic, ids, attn, r_len)
    vf, vf_stats = value_loss(
        new_values, rollout.values[idx], returns[idx], mask, config.cliprange_value
    )
    stats |= vf_stats | {"policy_loss": pg.item(), "value_loss": vf.item()}
    return pg + config.vf_coef * vf, stats


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
) -> dict[str, float]:
    """`ppo_epochs` passes over shuffled minibatches; returns the mean of each loss stat."""
    models.policy.train()
    models.critic.train()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    generator = torch.Generator().manual_seed(config.seed * 7919 + step)
    n = rollout.input_ids.shape[0]
    totals: dict[str, list[float]] = {}
    draw = step * config.ppo_epochs * math.ceil(n / config.mini_batch_size)  # ptx batch index
    for _ in range(config.ppo_epochs):
        order = torch.randperm(n, generator=generator).to(models.device)
        for start in range(0, n, config.mini_batch_size):
            idx = order[start : start + config.mini_batch_size]
            loss, stats = minibatch_loss(models, rollout, idx, advantages, returns, config)
            if ptx:
                lm_loss = ptx_loss(models.policy, ptx, draw, config, pad_id)
                loss = loss + config.ptx_coef * lm_loss
                stats["ptx_loss"] = lm_loss.item()
            draw += 1
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            for key, value in stats.items():
                totals.setdefault(key, []).append(value)
    return {key: sum(values) / len(values) for key, values in totals.items()}


def step_metrics(
    rollout: Rollout,
    rewards: torch.Tensor,
    update: dict[str, float],
    kl_coef: float,
    has_reward_model: bool,
) -> dict[str, float]:
    """The per-step metrics (CleanRL/TRL names); KL is the k3 estimate summed per response."""
    mask = rollout.response_mask
    kl = (kl_k3(rollout.logprobs, rollout.ref_logprobs) * mask).sum(-1).mean().item()
    metrics = {
        "env/reward_mean": rewards.sum(-1).mean().item(),
        "env/score_mean": rollout.scores.mean().item(),
        "env/response_length": mask.sum(-1).mean().item(),
        "env/eos_rate": rollout.finished.float().mean().item(),
        "objective/kl": kl,
        "objective/kl_coef": kl_coef,
        "objective/entropy": masked_mean(rollout.entropy, mask).item(),
    }
    if has_reward_model:
        metrics["env/rm_score"] = rollout.rm_scores.mean().item()
    metrics.update({f"losses/{key}": value for key, value in update.items()})
    return metrics


# --------------------------------------------------------------------------- the loop


def train_ppo(
    policy: nn.Module,
    ref_policy: nn.Module,
    critic: nn.Module,
    reward_model: nn.Module | None,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    config: PPOConfig,
    *,
    rules: Sequence[Rule] | None = None,
    reward_fn: RewardFn | None = None,
    ptx_texts: Sequence[PtxItem] | None = None,
    on_metrics: MetricsCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = True,
) -> dict[str, Any]:
    """Run `config.steps` PPO steps in place on `policy` and `critic`.

    The score of a response is reward_model(prompt + response) + rule terms + reward_fn
    (either scorer may be absent, not both) - missing_eos_penalty. `on_metrics(step,
    values)` gets each finished step (1-based); `should_stop()` is asked before every
    step. Returns {"status": "completed" | "cancelled", "step", "kl_coef", "resumed_from",
    and the last step's metrics}. With `checkpoint_dir`, checkpoints are written every
    `checkpoint_every` steps, on cancel and at the end, and `resume` continues from the
    newest complete one.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("PPO needs at least one prompt")
    if reward_model is None and reward_fn is None and not rules:
        raise ValueError("PPO needs a reward model, a reward_fn or rules to score responses")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer needs pad and EOS tokens")
    models = PPOModels(policy, ref_policy, critic, reward_model)
    ptx = None
    if ptx_texts and config.ptx_coef:
        ptx = ptx_examples(tokenizer, ptx_texts, config.max_ptx_length)
    optimizer = torch.optim.Adam(prepare_models(models, config), lr=config.lr, eps=1e-5)
    kl_ctl = make_kl_controller(config.init_kl_coef, config.kl_target, config.kl_horizon)
    start, resumed_from = 0, None
    found = latest_checkpoint(checkpoint_dir) if checkpoint_dir and resume else None
    if found is not None:
        state = load_checkpoint(found, policy=policy, critic=critic, optimizer=optimizer)
        start = resumed_from = int(state["step"])
        kl_ctl.value = float(state["kl_coef"])

    def checkpoint(step: int) -> None:
        assert checkpoint_dir is not None
        state = {
            "step": step,
            "kl_coef": kl_ctl.value,
            "seed": config.seed,
            "config": asdict(config),
        }
        save_checkpoint(checkpoint_dir, state, policy=policy, critic=critic, tokenizer=tokenizer,
                        optimizer=optimizer, keep=config.keep_checkpoints)  # fmt: skip

    metrics: dict[str, float] = {}
    status = "completed"
    step = start
    for step in range(start, config.steps):
        if should_stop is not None and should_stop():
            status = "cancelled"
            break
        metrics = ppo_step(models, optimizer, tokenizer, prompts, config, step, kl_ctl,
                           rules or (), reward_fn, ptx)  # fmt: skip
        if on_metrics is not None:
            on_metrics(step + 1, metrics)
        every = config.checkpoint_every
        if checkpoint_dir and every and (step + 1) % every == 0 and step + 1 < config.steps:
            checkpoint(step + 1)
    else:
        step = max(config.steps, start)
    if checkpoint_dir and step > (resumed_from or 0):
        checkpoint(step)
    return {"status": status, "step": step, "kl_coef": kl_ctl.value,
            "resumed_from": resumed_from, **metrics}  # fmt: skip


def ppo_step(
    models: PPOModels,
    optimizer: torch.optim.Optimizer,
    tokenizer: Any,
    prompts: list[Prompt],
    config: PPOConfig,
    step: int,
    kl_ctl: KLController,
    rules: Sequence[Rule],
    reward_fn: RewardFn | None,
    ptx: list[PtxExample] | None,
) -> dict[str, float]:
    """Rollout, advantages, update, controller update; returns the step's metrics."""
    started = time.perf_counter()
    batch = [prompts[i] for i in prompt_batch(len(prompts), config.batch_size, step, config.seed)]
    rollout = collect_rollout(models, tokenizer, batch, config, step, rules, reward_fn)
    rollout_s = time.perf_counter() - started
    kl_coef = kl_ctl.value
    rewards, advantages, returns = compute_advantages(rollout, config, kl_coef)
    update = ppo_update(models, optimizer, rollout, advantages, returns, config, step, ptx,
                        tokenizer.pad_token_id)  # fmt: skip
    elapsed = time.perf_counter() - started
    metrics = step_metrics(rollout, rewards, update, kl_coef, models.reward_model is not None)
    kl_ctl.update(metrics["objective/kl"], config.batch_size)
    tokens = rollout.response_mask.sum().item()
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
    prompts: Sequence[Prompt],
    config: PPOConfig,
    *,
    reward_fn: RewardFn | None = None,
    warmup_steps: int = 1,
) -> dict[str, float]:
    """Time `config.steps` real PPO steps; the first `warmup_steps` are left out of rates.

    PPO tokens/s counts sampled response tokens per second of the whole step (rollout +
    update); the phase rates divide the same tokens by each phase's time (generation
    alone, the whole rollout with its scoring forwards, the update).
    """
    device = next(policy.parameters()).device
    peak_reset = reset_peak_memory(device)
    history: list[dict[str, float]] = []
    train_ppo(policy, ref_policy, critic, reward_model, tokenizer, prompts, config,
              reward_fn=reward_fn, on_metrics=lambda _, m: history.append(m))  # fmt: skip
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
        "trainable_params": float(
            sum(p.numel() for m in (policy, critic) for p in m.parameters() if p.requires_grad)
        ),
    }
