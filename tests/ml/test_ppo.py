"""PPO: the pure pieces on hand-computed numbers, then whole steps on the `tiny` model."""

import copy
import itertools
import math
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from training.ml.data import Demonstration
from training.ml.loading import load_causal_lm
from training.ml.ppo import PPOConfig, prepare_models, train_ppo
from training.ml.ppo_checkpoint import CheckpointError, latest_checkpoint
from training.ml.ppo_losses import (
    policy_loss,
    prompt_batch,
    ptx_examples,
    token_rewards,
    value_loss,
)
from training.ml.ppo_rollout import PPOModels, collect_rollout, pack_episodes, token_logprobs
from training.ml.precision import Precision
from training.ml.reward.model import RewardModel
from training.ml.rules import LengthRule
from training.ml.sft import SFTConfig, train_sft

PROMPTS = [f"Say something about topic {i}." for i in range(16)]


def spaces(texts: list[str], prompts: list) -> list[float]:
    """A synthetic reward for the mechanics tests: the spaces in the response."""
    return [float(text.count(" ")) for text in texts]


def build(seed: int = 0) -> tuple:
    """(policy, ref_policy, critic, tokenizer): SFT = tiny, critic from an RM on it."""
    policy, tokenizer = load_causal_lm("tiny")
    ref_policy, _ = load_causal_lm("tiny")
    torch.manual_seed(seed)  # the RM head's init
    critic = RewardModel.from_causal_lm(policy)
    return policy, ref_policy, critic, tokenizer


SMALL_ROLLOUT: dict[str, Any] = {"batch_size": 3, "mini_batch_size": 3, "ppo_epochs": 1}
SMALL: dict[str, Any] = {
    "batch_size": 4,
    "mini_batch_size": 2,
    "ppo_epochs": 1,
    "max_new_tokens": 4,
    "lr": 1e-3,
}


# --------------------------------------------------------------------------- pure pieces


def test_pack_episodes_left_pads_prompts_and_right_pads_responses() -> None:
    ids, attn, resp = pack_episodes([[1, 2], [3]], [[7], [8, 9]], pad_id=0)
    assert ids.tolist() == [[1, 2, 7, 0], [0, 3, 8, 9]]
    assert attn.tolist() == [[1, 1, 1, 0], [0, 1, 1, 1]]
    assert resp.tolist() == [[1.0, 0.0], [1.0, 1.0]]


def test_token_rewards_put_kl_on_every_token_and_score_on_the_last() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -5.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards = token_rewards(torch.tensor([2.0, 3.0]), logp, ref, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.05, 0.0, 0.1 + 2.0], [0.0, 3.0, 0.0]])
    torch.testing.assert_close(rewards, expected)


def test_policy_loss_clips_the_ratio_on_both_sides() -> None:
    new = torch.tensor([[math.log(1.5), math.log(0.5), 9.0]])
    old = torch.zeros(1, 3)
    advantages = torch.tensor([[1.0, -1.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third token is padding
    loss, stats = policy_loss(new, old, advantages, mask, cliprange=0.2)
    # token 1: max(-1.5, -1.2) = -1.2; token 2: max(0.5, 0.8) = 0.8
    assert loss.item() == pytest.approx((-1.2 + 0.8) / 2)
    assert stats["clipfrac"] == pytest.approx(1.0)
    k3 = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2
    assert stats["approx_kl"] == pytest.approx(k3)


def test_value_loss_takes_the_worse_of_clipped_and_unclipped() -> None:
    old = torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[2.0, 1.1]])
    returns = torch.tensor([[1.5, 2.0]])
    loss, stats = value_loss(new, old, returns, torch.ones(1, 2), cliprange_value=0.05)
    # token 1: clipped 1.05 -> max(0.25, 0.2025) = 0.25; token 2: clipped 1.05 -> 0.9025
    assert loss.item() == pytest.approx(0.5 * (0.25 + 0.9025) / 2)
    assert stats["vf_clipfrac"] == pytest.approx(0.5)


def test_prompt_batches_cover_every_prompt_each_epoch_and_repeat_exactly() -> None:
    first_epoch = [i for step in range(4) for i in prompt_batch(10, 3, step, seed=1)[:3]]
    assert sorted(first_epoch[:10]) == list(range(10))
    assert prompt_batch(10, 3, 5, seed=1) == prompt_batch(10, 3, 5, seed=1)
    assert prompt_batch(10, 3, 5, seed=1) != prompt_batch(10, 3, 5, seed=2)


def test_ptx_examples_mask_the_prompt_of_demonstrations(tiny_lm) -> None:
    _, tokenizer = tiny_lm
    (ids, labels), (raw_ids, raw_labels) = ptx_examples(
        tokenizer, [("Hi?", "Hello there"), "plain pretraining text"], max_length=64
    )
    assert labels[0] == -100 and labels[-1] == tokenizer.eos_token_id
    assert ids[-len([x for x in labels if x != -100]) :] == [x for x in labels if x != -100]
    assert raw_ids == raw_labels
    with pytest.raises(ValueError, match="ptx item 0"):
        ptx_examples(tokenizer, [42], max_length=64)  # type: ignore[list-item]  # under test


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        PPOConfig(batch_size=0)
    with pytest.raises(ValueError, match="temperature"):
        PPOConfig(temperature=0.0)


# --------------------------------------------------------------------------- on tiny


def test_rollout_scores_are_rm_plus_rules_plus_fn_minus_eos_penalty() -> None:
    policy, ref_policy, critic, tokenizer = build()
    reward_model = RewardModel.from_causal_lm(policy).eval()
    config = PPOConfig(max_new_tokens=3, missing_eos_penalty=2.0, **SMALL_ROLLOUT)
    models = PPOModels(policy, ref_policy, critic, reward_model)
    rules = [LengthRule(0.5, min_tokens=1)]
    rollout = collect_rollout(
        models, tokenizer, PROMPTS[:3], config, 0, rules, lambda t, p: [1.0] * len(t)
    )
    penalty = 2.0 * (~rollout.finished).float()
    torch.testing.assert_close(rollout.scores, rollout.rm_scores + 1.5 - penalty)
    # the RM reads the final response token whatever the padding: row 0 alone, unpadded
    row = rollout.input_ids[0][rollout.attention_mask[0].bool()][None]
    with torch.no_grad():
        alone = reward_model(row, torch.ones_like(row))
    torch.testing.assert_close(rollout.rm_scores[:1], alone, rtol=1e-4, atol=1e-5)


def test_kl_is_zero_at_the_first_step_and_every_trainable_parameter_changes() -> None:
    policy, ref_policy, critic, tokenizer = build()
    before = {
        (who, name): p.detach().clone()
        for who, model in (("policy", policy), ("critic", critic))
        for name, p in model.named_parameters()
    }
    seen: list[tuple[int, dict]] = []
    result = train_ppo(
        policy,
        ref_policy,
        critic,
        None,
        tokenizer,
        PROMPTS,
        PPOConfig(steps=1, **SMALL),
        reward_fn=spaces,
        on_metrics=lambda step, m: seen.append((step, m)),
    )
    assert result["status"] == "completed" and result["step"] == 1
    assert [step for step, _ in seen] == [1]
    metrics = seen[0][1]
    assert metrics["objective/kl"] == 0.0  # policy == reference, same forward passes
    for key in (
        "losses/policy_loss",
        "losses/value_loss",
        "losses/clipfrac",
        "losses/approx_kl",
        "objective/entropy",
        "objective/kl_coef",
        "env/reward_mean",
        "env/response_length",
        "env/eos_rate",
        "charts/tokens_per_s",
    ):
        assert math.isfinite(metrics[key]), key
    unchanged = [
        f"{who}.{name}"
        for who, model in (("policy", policy), ("critic", critic))
        for name, p in model.named_parameters()
        if p.requires_grad and torch.equal(p, before[(who, name)])
    ]
    assert unchanged == []


def test_train_top_layers_changes_only_the_top_block_and_heads() -> None:
    policy, ref_policy, critic, tokenizer = build()
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    config = PPOConfig(steps=1, train_top_layers=1, **SMALL)
    train_ppo(policy, ref_policy, critic, None, tokenizer, PROMPTS, config, reward_fn=spaces)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert any(".layers.1." in n for n in changed)
    assert not any(".layers.0." in n or "embed_tokens" in n for n in changed)


def test_frozen_trunk_cache_is_verified_and_changes_nothing() -> None:
    config = PPOConfig(steps=2, train_top_layers=1, **SMALL)
    results = []
    for cache in (True, False):
        policy, ref_policy, critic, tokenizer = build()
        reward_model = RewardModel.from_causal_lm(policy)
        reward_model.load_state_dict(critic.state_dict())  # the critic starts from the RM
        config.cache_frozen_trunk = cache
        seen: list[dict] = []
        train_ppo(
            policy,
            ref_policy,
            critic,
            reward_model,
            tokenizer,
            PROMPTS,
            config,
            on_metrics=lambda _, m: seen.append(m),  # noqa: B023  # called within the loop
        )
        results.append(([p.detach() for m in (policy, critic) for p in m.parameters()], seen))
    (cached, cached_metrics), (full, full_metrics) = results
    for a, b in zip(cached, full, strict=True):
        torch.testing.assert_close(a, b)
    for key in ("objective/kl", "env/rm_score", "losses/policy_loss", "losses/value_loss"):
        assert [m[key] for m in cached_metrics] == pytest.approx([m[key] for m in full_metrics])
    assert cached_metrics[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)


def test_trunk_caches_are_shared_only_between_equal_bottoms() -> None:
    policy, ref_policy, critic, tokenizer = build()
    reward_model = RewardModel.from_causal_lm(policy)
    reward_model.load_state_dict(critic.state_dict())
    models = PPOModels(policy, ref_policy, critic, reward_model)
    prepare_models(models, PPOConfig(train_top_layers=1))
    assert models.policy_trunk is not None and models.critic_trunk is not None
    assert models.ref_trunk is not None and models.rm_trunk is not None
    rollout = collect_rollout(
        models, tokenizer, PROMPTS[:3], PPOConfig(**SMALL_ROLLOUT), 0, [], None
    )
    assert rollout.policy_trunk is not None and rollout.critic_trunk is not None
    assert models.policy_trunk.verified and models.critic_trunk.verified
    # another reference (tiny:1 has other weights) does not share the policy's trunk
    other_ref, _ = load_causal_lm("tiny:1")
    policy, _, critic, _ = build()
    models = PPOModels(policy, other_ref, critic, None)
    prepare_models(models, PPOConfig(train_top_layers=1))
    assert models.policy_trunk is not None and models.ref_trunk is None


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs_match_one_log_softmax_over_the_whole_batch(temperature: float) -> None:
    """The row-at-a-time maths gives what a (B, R, V) log_softmax gives, entropy included."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 50, generator=gen, dtype=torch.float64) * 4
    tokens = torch.randint(0, 50, (3, 5), generator=gen)
    logp, entropy = token_logprobs(logits, tokens, temperature)
    full = torch.log_softmax(logits / temperature, dim=-1)
    torch.testing.assert_close(logp, full.gather(-1, tokens.unsqueeze(-1)).squeeze(-1))
    assert entropy is not None
    torch.testing.assert_close(entropy, -(full.exp() * full).sum(-1))
    assert token_logprobs(logits, tokens, temperature, entropy=False)[1] is None


def test_frozen_copies_are_stored_in_frozen_dtype_and_trained_models_stay_fp32() -> None:
    """Four copies: the reference and the RM take `frozen_dtype` (auto: bf16 under bf16
    autocast; fp32 training with frozen_dtype bfloat16 too); policy and critic stay fp32;
    a step trains every trainable tensor and leaves the frozen copies as stored."""
    bf16 = Precision(compute=torch.bfloat16, device_type="cpu")
    for precision, config in (
        (bf16, PPOConfig(steps=1, **SMALL)),
        (Precision(), PPOConfig(steps=1, frozen_dtype="bfloat16", **SMALL)),
    ):
        policy, ref_policy, critic, tokenizer = build()
        reward_model = RewardModel.from_causal_lm(policy)
        models = PPOModels(policy, ref_policy, critic, reward_model)
        params = prepare_models(models, config, precision)
        for frozen in (ref_policy, reward_model):
            assert all(p.dtype == torch.bfloat16 for p in frozen.parameters())
        assert all(p.dtype == torch.float32 for m in (policy, critic) for p in m.parameters())
        assert {id(p) for p in params} == {
            id(p) for m in (policy, critic) for p in m.parameters() if p.requires_grad
        }
    kept = {n: p.detach().clone() for n, p in ref_policy.named_parameters()}
    before = {n: p.detach().clone() for n, p in policy.named_parameters()}
    result = train_ppo(
        policy, ref_policy, critic, reward_model, tokenizer, PROMPTS,
        PPOConfig(steps=1, frozen_dtype="bfloat16", **SMALL), reward_fn=spaces,
    )  # fmt: skip
    assert result["status"] == "completed" and math.isfinite(result["objective/kl"])
    assert all(torch.equal(p, kept[n]) for n, p in ref_policy.named_parameters())
    assert all(not torch.equal(p, before[n]) for n, p in policy.named_parameters())


def the_count(texts: list[str], prompts: list) -> list[float]:
    """Synthetic reward: how many times the word "the" appears in the response."""
    return [float(text.split().count("the")) for text in texts]


def test_ppo_raises_a_synthetic_reward_while_kl_stays_bounded() -> None:
    # PPO starts from SFT: a few SFT steps teach tiny to answer with "the"/"a" words (a
    # random 49k-token policy would almost never sample a rewarded token)
    sft, tokenizer = load_causal_lm("tiny")
    rng = random.Random(0)
    demos = [
        Demonstration(p, " ".join(rng.choice(["the", "a"]) for _ in range(6)))
        for p in PROMPTS for _ in range(2)
    ]  # fmt: skip
    sft_config = SFTConfig(epochs=2, lr=1e-2, batch_size=4, eval_fraction=0.0, warmup_ratio=0.0)
    train_sft(sft, tokenizer, demos, sft_config)
    policy, ref_policy = copy.deepcopy(sft), copy.deepcopy(sft)
    torch.manual_seed(0)
    critic = RewardModel.from_causal_lm(sft)
    config = PPOConfig(
        steps=8,
        batch_size=16,
        mini_batch_size=8,
        ppo_epochs=2,
        lr=5e-3,
        max_new_tokens=8,
        init_kl_coef=0.05,
        kl_target=2.0,
        kl_horizon=160,
    )
    history: list[dict] = []
    result = train_ppo(
        policy,
        ref_policy,
        critic,
        None,
        tokenizer,
        PROMPTS,
        config,
        reward_fn=the_count,
        on_metrics=lambda _, m: history.append(m),
    )
    scores = [m["env/score_mean"] for m in history]
    kls = [m["objective/kl"] for m in history]
    assert sum(scores[-2:]) / 2 > sum(scores[:2]) / 2 + 3.0, scores  # of at most 8
    # bounded: far below a policy gone astray (8 tokens * log 49152 = 86 nats)
    assert all(0.0 <= kl < 30.0 for kl in kls), kls
    # the adaptive controller raised beta after each step above the target, lowered it below
    betas = [m["objective/kl_coef"] for m in history] + [result["kl_coef"]]
    for kl, before, after in zip(kls, betas, betas[1:], strict=False):
        assert (after - before) * (kl - config.kl_target) >= 0, (kls, betas)
    assert betas[-1] != betas[0]


def test_cancel_then_resume_continues_exactly_where_it_stopped(tmp_path: Path) -> None:
    config = PPOConfig(steps=3, checkpoint_every=1, **SMALL)
    # reference: three uninterrupted steps
    policy_a, ref_a, critic_a, tokenizer = build()
    straight = train_ppo(
        policy_a, ref_a, critic_a, None, tokenizer, PROMPTS, config, reward_fn=spaces
    )

    # the same run, cancelled after two steps
    policy_b, ref_b, critic_b, _ = build()
    steps: list[int] = []
    first = train_ppo(
        policy_b,
        ref_b,
        critic_b,
        None,
        tokenizer,
        PROMPTS,
        config,
        reward_fn=spaces,
        on_metrics=lambda step, _: steps.append(step),
        should_stop=lambda: len(steps) >= 2,
        checkpoint_dir=tmp_path,
    )
    assert first["status"] == "cancelled" and first["step"] == 2 and steps == [1, 2]
    assert latest_checkpoint(tmp_path) == tmp_path / "step-000002"
    assert not list(tmp_path.glob(".*"))  # no temporary folder left behind

    # resumed in fresh objects (a new worker process)
    policy_c, ref_c, critic_c, _ = build(seed=123)
    second = train_ppo(
        policy_c,
        ref_c,
        critic_c,
        None,
        tokenizer,
        PROMPTS,
        config,
        reward_fn=spaces,
        on_metrics=lambda step, _: steps.append(step),
        checkpoint_dir=tmp_path,
    )
    assert second["status"] == "completed" and second["resumed_from"] == 2
    assert steps == [1, 2, 3]
    for (name, a), c in zip(policy_a.named_parameters(), policy_c.parameters(), strict=True):
        torch.testing.assert_close(a, c, msg=name)
    for (name, a), c in zip(critic_a.named_parameters(), critic_c.parameters(), strict=True):
        torch.testing.assert_close(a, c, msg=name)
    assert second["kl_coef"] == straight["kl_coef"] != config.init_kl_coef
    # a retry after the end resumes at the end: no step runs, the last metrics come back
    policy_d, ref_d, critic_d, _ = build()
    third = train_ppo(
        policy_d,
        ref_d,
        critic_d,
        None,
        tokenizer,
        PROMPTS,
        config,
        reward_fn=spaces,
        on_metrics=lambda step, _: steps.append(step),
        checkpoint_dir=tmp_path,
    )
    assert third["resumed_from"] == 3 and steps == [1, 2, 3]
    assert third["objective/kl"] == second["objective/kl"]


def test_rm_rules_and_ptx_in_one_step() -> None:
    policy, ref_policy, critic, tokenizer = build()
    reward_model = RewardModel.from_causal_lm(policy)
    config = PPOConfig(steps=1, ptx_coef=0.5, ptx_batch_size=2, **SMALL)
    seen: list[dict] = []
    train_ppo(
        policy,
        ref_policy,
        critic,
        reward_model,
        tokenizer,
        PROMPTS,
        config,
        rules=[LengthRule(1.0, max_tokens=2)],
        ptx_texts=[("Hi?", "Hello!"), "Some text."],
        on_metrics=lambda _, m: seen.append(m),
    )
    metrics = seen[0]
    assert math.isfinite(metrics["env/rm_score"])
    assert metrics["losses/ptx_loss"] > 0.0
    assert not any(p.requires_grad for p in reward_model.parameters())


def test_bad_inputs_and_unreadable_checkpoints_fail_clearly(tmp_path: Path) -> None:
    policy, ref_policy, critic, tokenizer = build()
    config = PPOConfig(steps=1, **SMALL)
    with pytest.raises(ValueError, match="reward model, a reward_fn or rules"):
        train_ppo(policy, ref_policy, critic, None, tokenizer, PROMPTS, config)
    with pytest.raises(ValueError, match="at least one prompt"):
        train_ppo(policy, ref_policy, critic, None, tokenizer, [], config, reward_fn=spaces)
    broken = tmp_path / "step-000001"
    broken.mkdir()
    (broken / "state.json").write_text('{"step": 1, "kl_coef": 0.2}')
    with pytest.raises(ValueError, match=r"cannot resume from checkpoint .*step-000001"):
        train_ppo(
            policy,
            ref_policy,
            critic,
            None,
            tokenizer,
            PROMPTS,
            config,
            reward_fn=spaces,
            checkpoint_dir=tmp_path,
        )
    # A truncated safetensors file (a worker killed while copying a folder by hand) is a
    # CheckpointError too, not safetensors' own exception type.
    (broken / "policy").mkdir()
    (broken / "policy" / "model.safetensors").write_bytes(b"half a header")
    with pytest.raises(CheckpointError, match=r"cannot resume from checkpoint .*step-000001"):
        train_ppo(
            policy,
            ref_policy,
            critic,
            None,
            tokenizer,
            PROMPTS,
            config,
            reward_fn=spaces,
            checkpoint_dir=tmp_path,
        )


def test_default_config_with_kl_far_above_target_raises_beta_over_2x() -> None:
    """PPOConfig() as the product runs it (responses cut to 8 tokens to keep the test short;
    length does not enter the controller). The reference is a perturbed copy of the policy,
    so the KL is far above the 6-nat target from the first step: beta must climb each step
    and end at least 2x its start (the default horizon is a quarter of the run)."""
    policy, ref_policy, critic, tokenizer = build()
    torch.manual_seed(1)
    with torch.no_grad():
        for param in ref_policy.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    config = PPOConfig(max_new_tokens=8)
    history: list[dict] = []
    result = train_ppo(
        policy,
        ref_policy,
        critic,
        None,
        tokenizer,
        PROMPTS,
        config,
        reward_fn=spaces,
        on_metrics=lambda _, m: history.append(m),
    )
    assert config.kl_target is not None
    assert min(m["objective/kl"] for m in history) > 2 * config.kl_target
    betas = [m["objective/kl_coef"] for m in history] + [result["kl_coef"]]
    assert all(after > before for before, after in itertools.pairwise(betas))
    assert result["kl_coef"] >= 2 * config.init_kl_coef
