"""RLOO: the advantages against a plain loop, then runs on the `tiny` model and the CLI."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.ml.test_distributed import max_weight_diff, result_line
from tests.ml.test_distributed import run as run_cli
from training.ml.cli import main
from training.ml.configs import RLOOConfig
from training.ml.data import Demonstration
from training.ml.loading import load_causal_lm
from training.ml.memory import is_peft
from training.ml.ppo_losses import token_rewards
from training.ml.rloo import (
    leave_one_out_advantages,
    reinforce_loss,
    rloo_kl_horizon,
    sequence_rewards,
    train_rloo,
)
from training.ml.rules import RegexRule
from training.ml.sft import SFTConfig, train_sft

PROMPTS = [f"Say something about topic {i}." for i in range(16)]
SMALL = {"batch_size": 2, "num_samples": 3, "max_new_tokens": 4, "lr": 1e-3}


def text_length(texts: list[str], prompts: list) -> list[float]:
    """A synthetic reward for the mechanics tests: characters in the response."""
    return [float(len(text)) for text in texts]


class TokenCountRM(nn.Module):
    """A scripted reward model: how often `token_id` occurs among the attended tokens."""

    def __init__(self, token_id: int) -> None:
        super().__init__()
        self.token_id = token_id
        self.bias = nn.Parameter(torch.zeros(()))  # frozen by the trainer

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hits = (input_ids == self.token_id) & attention_mask.bool()
        return hits.sum(-1).float() + self.bias


# --------------------------------------------------------------------------- pure pieces


def loop_advantages(rewards: list[float], sizes: list[int]) -> list[float]:
    """The leave-one-out advantage written out, one sample at a time."""
    out, start = [], 0
    for size in sizes:
        group = rewards[start : start + size]
        for i, r in enumerate(group):
            others = [x for j, x in enumerate(group) if j != i]
            out.append(r - sum(others) / len(others) if others else 0.0)
        start += size
    return out


@pytest.mark.parametrize("n", [2, 3, 5, 8])
def test_advantages_equal_a_plain_loop_for_equal_groups(n: int) -> None:
    rng = random.Random(n)
    sizes = [n] * 7
    rewards = [rng.gauss(0.0, 3.0) for _ in range(sum(sizes))]
    got = leave_one_out_advantages(torch.tensor(rewards, dtype=torch.float64), sizes)
    assert got.tolist() == pytest.approx(loop_advantages(rewards, sizes), abs=1e-12)
    # the closed form A_i = N / (N - 1) * (r_i - mean) and zero-sum groups
    grouped = torch.tensor(rewards, dtype=torch.float64).view(-1, n)
    closed = n / (n - 1) * (grouped - grouped.mean(-1, keepdim=True))
    torch.testing.assert_close(got.view(-1, n), closed)
    assert got.view(-1, n).sum(-1).abs().max() < 1e-9


def test_advantages_equal_a_plain_loop_for_uneven_groups() -> None:
    rng = random.Random(7)
    for _ in range(20):
        sizes = [rng.randint(1, 6) for _ in range(rng.randint(1, 9))]
        rewards = [rng.uniform(-5, 5) for _ in range(sum(sizes))]
        got = leave_one_out_advantages(torch.tensor(rewards, dtype=torch.float64), sizes)
        assert got.tolist() == pytest.approx(loop_advantages(rewards, sizes), abs=1e-12)
    with pytest.raises(ValueError, match="do not split"):
        leave_one_out_advantages(torch.zeros(5), [2, 2])


def test_sequence_rewards_are_ppo_token_rewards_summed() -> None:
    logp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -5.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    scores = torch.tensor([2.0, 3.0])
    got = sequence_rewards(scores, logp, ref, mask, kl_coef=0.1)
    # row 0: 2 - 0.1 * (0.5 + 0 - 1) = 2.05; row 1: 3 - 0.1 * (0 + 2) = 2.8 (pad ignored)
    torch.testing.assert_close(got, torch.tensor([2.05, 2.8]))
    torch.testing.assert_close(got, token_rewards(scores, logp, ref, mask, 0.1).sum(-1))


def test_reinforce_loss_pushes_each_token_by_its_sequence_advantage() -> None:
    logp = torch.tensor([[-1.0, -2.0], [-0.5, -4.0]], requires_grad=True)
    advantages = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    loss = reinforce_loss(logp, advantages, mask, normaliser=4.0)
    assert loss.item() == pytest.approx(-(2.0 * -3.0 + -1.0 * -0.5) / 4.0)
    loss.backward()
    assert logp.grad is not None
    torch.testing.assert_close(logp.grad, torch.tensor([[-0.5, -0.5], [0.25, 0.0]]))


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="num_samples must be >= 2"):
        RLOOConfig(num_samples=1)
    with pytest.raises(ValueError, match="exclude each other"):
        RLOOConfig(lora_r=4, train_top_layers=1)


# --------------------------------------------------------------------------- on tiny


def test_one_step_changes_every_trainable_tensor_and_nothing_frozen() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    ref_policy, _ = load_causal_lm("tiny")
    reward_model = TokenCountRM(tokenizer(" the", add_special_tokens=False)["input_ids"][0])
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    ref_before = [p.detach().clone() for p in ref_policy.parameters()]
    seen: list[tuple[int, dict]] = []
    result = train_rloo(
        policy,
        ref_policy,
        reward_model,
        tokenizer,
        PROMPTS,
        RLOOConfig(steps=1, **SMALL),
        reward_fn=text_length,
        on_metrics=lambda step, m: seen.append((step, m)),
    )
    assert result["status"] == "completed" and result["step"] == 1
    assert [step for step, _ in seen] == [1]
    assert result["history"] == [{"step": 1.0, **seen[0][1]}]
    metrics = seen[0][1]
    assert metrics["objective/kl"] == 0.0  # policy == reference, the same forwards
    assert metrics["charts/episodes"] == 6.0
    for key in ("env/reward_mean", "env/rm_score", "losses/policy_loss", "objective/entropy"):
        assert math.isfinite(metrics[key]), key
    unchanged = [n for n, p in policy.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    assert all(torch.equal(a, b) for a, b in zip(ref_before, ref_policy.parameters(), strict=True))
    assert not any(p.requires_grad for p in ref_policy.parameters())
    assert result["trainable_params"] == sum(p.numel() for p in policy.parameters())


def test_rloo_raises_a_scripted_rm_and_rule_reward_with_the_kl_controller_at_work() -> None:
    # RLOO starts from SFT: a few SFT steps teach tiny to answer with "the"/"a" words (a
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
    the = tokenizer(" the", add_special_tokens=False)["input_ids"]
    assert len(the) == 1
    config = RLOOConfig(
        steps=8,
        batch_size=4,
        num_samples=4,
        lr=5e-3,
        max_new_tokens=8,
        init_kl_coef=0.05,
        kl_target=2.0,
    )
    history: list[dict] = []
    result = train_rloo(
        policy,
        ref_policy,
        TokenCountRM(the[0]),
        tokenizer,
        PROMPTS,
        config,
        rules=[RegexRule(r"\bthe\b", 1.0)],
        on_metrics=lambda _, m: history.append(m),
    )
    scores = [m["env/score_mean"] for m in history]
    # of at most 8 + 1: the RM counts " the" tokens, the rule adds 1 when "the" appears
    assert sum(scores[-2:]) / 2 > sum(scores[:2]) / 2 + 2.5, scores
    kls = [m["objective/kl"] for m in history]
    assert all(0.0 <= kl < 30.0 for kl in kls), kls
    # PPO's adaptive controller: beta up after a step above the target, down below it
    betas = [m["objective/kl_coef"] for m in history] + [result["kl_coef"]]
    for kl, before, after in zip(kls, betas, betas[1:], strict=False):
        assert (after - before) * (kl - config.kl_target) > 0, (kls, betas)


def test_kl_controller_raises_beta_far_above_target_and_lowers_it_far_below() -> None:
    """A reference perturbed far from the policy keeps the KL far above the 6-nat target,
    so beta climbs every step; a reference equal to the policy (KL 0) lowers it."""
    policy, tokenizer = load_causal_lm("tiny")
    ref_policy, _ = load_causal_lm("tiny")
    torch.manual_seed(1)
    with torch.no_grad():
        for param in ref_policy.parameters():
            param.add_(torch.randn_like(param) * 0.5)
    config = RLOOConfig(steps=3, **SMALL)
    history: list[dict] = []
    result = train_rloo(
        policy,
        ref_policy,
        None,
        tokenizer,
        PROMPTS,
        config,
        reward_fn=text_length,
        on_metrics=lambda _, m: history.append(m),
    )
    assert config.kl_target is not None
    assert min(m["objective/kl"] for m in history) > 2 * config.kl_target
    betas = [m["objective/kl_coef"] for m in history] + [result["kl_coef"]]
    assert all(after > before for before, after in itertools.pairwise(betas)), betas
    # the default horizon is a quarter of the run's 18 episodes, rounded up: 5
    assert rloo_kl_horizon(config) == 5
    assert result["kl_coef"] == pytest.approx(config.init_kl_coef * (1 + 0.2 * 6 / 5) ** 3)

    policy, _ = load_causal_lm("tiny")
    ref_policy, _ = load_causal_lm("tiny")
    low = train_rloo(
        policy,
        ref_policy,
        None,
        tokenizer,
        PROMPTS,
        RLOOConfig(steps=1, **SMALL),
        reward_fn=text_length,
    )
    assert low["objective/kl"] == 0.0
    assert low["kl_coef"] == pytest.approx(config.init_kl_coef * (1 - 0.2 * 6 / 2))


def test_lora_trains_adapters_on_the_reference_base_and_merges_them() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    history: list[dict] = []
    result = train_rloo(
        policy,
        policy,  # the reference is the base with the adapters off
        None,
        tokenizer,
        PROMPTS,
        RLOOConfig(steps=2, lora_r=4, **SMALL),
        reward_fn=text_length,
        on_metrics=lambda _, m: history.append(m),
    )
    assert history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # B = 0 at the start
    assert history[1]["objective/kl"] > 0.0  # the adapters moved the policy off its base
    assert not is_peft(policy) and not any("lora_" in n for n, _ in policy.named_parameters())
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all("self_attn" in n for n in changed), changed
    assert result["trainable_params"] < sum(p.numel() for p in policy.parameters()) // 10


def test_train_top_layers_changes_only_the_top_block() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    ref_policy, _ = load_causal_lm("tiny")
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    config = RLOOConfig(steps=1, train_top_layers=1, **SMALL)
    train_rloo(policy, ref_policy, None, tokenizer, PROMPTS, config, reward_fn=text_length)
    changed = {n for n, p in policy.named_parameters() if not torch.equal(p, before[n])}
    assert any(".layers.1." in n for n in changed)
    assert not any(".layers.0." in n or "embed_tokens" in n for n in changed)


def test_should_stop_cancels_between_steps_and_bad_inputs_fail_clearly() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    ref_policy, _ = load_causal_lm("tiny")
    steps: list[int] = []
    result = train_rloo(
        policy,
        ref_policy,
        None,
        tokenizer,
        PROMPTS,
        RLOOConfig(steps=3, **SMALL),
        reward_fn=text_length,
        on_metrics=lambda step, _: steps.append(step),
        should_stop=lambda: len(steps) >= 1,
    )
    assert result["status"] == "cancelled" and result["step"] == 1 and steps == [1]
    assert len(result["history"]) == 1
    config = RLOOConfig(steps=1, **SMALL)
    with pytest.raises(ValueError, match="reward model, a reward_fn or rules"):
        train_rloo(policy, ref_policy, None, tokenizer, PROMPTS, config)
    with pytest.raises(ValueError, match="at least one prompt"):
        train_rloo(policy, ref_policy, None, tokenizer, [], config, reward_fn=text_length)
    with pytest.raises(ValueError, match="the trained policy itself"):
        train_rloo(policy, policy, None, tokenizer, PROMPTS, config, reward_fn=text_length)


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Tell me about {i}."}) + "\n" for i in range(6)))
    return path


def rloo_args(prompts: Path, out: Path) -> list[str]:
    return [
        "rloo", "--model", "tiny", "--reward-model", "tiny", "--data", str(prompts),
        "--out", str(out), "--steps", "2", "--batch-size", "2", "--num-samples", "3",
        "--max-new-tokens", "4", "--lr", "1e-3", "--rule", "length:<=3:-1",
        "--forward-batch-size", "1", "--device", "cpu", "--seed", "3",
    ]  # fmt: skip


def test_rloo_command_writes_the_policy_and_a_json_line(prompts_file, tmp_path, capsys) -> None:
    out = tmp_path / "policy"
    config = tmp_path / "rloo.json"
    config.write_text(json.dumps({"init_kl_coef": 0.1, "steps": 5}))
    argv = [*rloo_args(prompts_file, out), "--kl-target", "none", "--config", str(config)]
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["step"] == 2  # --steps beats --config
    assert result["objective/kl_coef"] == result["kl_coef"] == 0.1  # fixed beta from --config
    assert "env/rm_score" in result and "history" not in result
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    saved = json.loads((out / "rloo_metrics.json").read_text())
    assert saved["config"]["kl_target"] is None and saved["config"]["num_samples"] == 3
    assert [point["step"] for point in saved["history"]] == [1.0, 2.0]
    assert not list(out.parent.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rule", "regex:([:1"], "--rule: rule regex:([: invalid regular expression"),
        ([], "give --reward-model, --rule, or both"),
        (["--rule", "length:<=3:-1", "--num-samples", "1"], "num_samples must be >= 2"),
        (["--rule", "length:<=3:-1", "--lora-alpha", "8"], "need --lora-r"),
        (["--rule", "length:<=3:-1", "--lora-r", "4", "--ref-model", "tiny:1"], "drop --ref-model"),
        (["--rule", "length:<=3:-1", "--train-top-layers", "-1"], "--train-top-layers"),
    ],
)
def test_bad_flags_stop_with_a_clear_message(prompts_file, tmp_path, capsys, extra, message):
    out = tmp_path / "policy"
    argv = ["rloo", "--model", "tiny", "--data", str(prompts_file), "--out", str(out)]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_rloo_on_two_processes_matches_one(prompts_file: Path, tmp_path: Path) -> None:
    """--batch-size 2 prompts split over 2 gloo ranks, one prompt (and its 3 samples) each:
    the same samples (one row per forward, so no batch changes their rounding), the
    same global metrics and, up to float reduction order, the same weights."""
    one = result_line(run_cli(rloo_args(prompts_file, tmp_path / "one")))
    two = result_line(run_cli(rloo_args(prompts_file, tmp_path / "two"), processes=2))
    assert (one["processes"], two["processes"]) == (1, 2)
    for key in ("env/score_mean", "objective/kl", "kl_coef", "losses/policy_loss"):
        assert two[key] == pytest.approx(one[key], abs=1e-5), key
    assert max_weight_diff(tmp_path / "one", tmp_path / "two") < 1e-5
