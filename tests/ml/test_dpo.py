"""Listwise DPO through the trainer: the first step's loss against TRL's sigmoid DPO loss and
hand-computed Plackett-Luce cases, from log-probs computed here the plain way (prompt +
response right-padded, one full forward per sequence, as TRL's DPOTrainer does); then
learning, bf16 autocast, LoRA, freezing, cancelling and the CLI on ``tiny``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from training.ml.chat import encode_prompt
from training.ml.cli import main
from training.ml.configs import DPOConfig
from training.ml.dpo import train_dpo
from training.ml.dpo_batches import encode_rankings, evaluate_implicit_reward
from training.ml.loading import load_causal_lm
from training.ml.precision import Precision
from training.ml.preferences import RankedExample

ROOT = Path(__file__).resolve().parents[2]


def plain_logps(model, tokenizer, prompt, responses: list[str]) -> list[float]:
    """log pi(y | x) of each response, summed over its tokens (EOS included): the whole
    prompt + response right-padded, log-softmax over every position, the response's
    tokens gathered (TRL DPOTrainer's completion_mask sum)."""
    prompt_ids = encode_prompt(tokenizer, prompt, 0)
    rows = [
        prompt_ids
        + tokenizer(text, add_special_tokens=False)["input_ids"]
        + [tokenizer.eos_token_id]
        for text in responses
    ]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width))
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        completion[i, len(prompt_ids) : len(row)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * completion[:, 1:]).sum(-1).tolist()


def trl_sigmoid_dpo_loss(pc, pr, rc, rr, beta):
    """TRL DPOTrainer's `loss_type="sigmoid"` (label_smoothing 0), from its formula:
    logits = (pi_c - pi_r) - (ref_c - ref_r); loss = -logsigmoid(beta * logits), mean."""
    logits = (pc - pr) - (rc - rr)
    return float((-F.logsigmoid(beta * logits)).mean())


def first_step(policy, reference, tokenizer, examples, config, **kwargs) -> dict:
    seen: list[dict] = []
    train_dpo(
        policy, reference, tokenizer, examples, config, progress=lambda s, v: seen.append(v),
        **kwargs,
    )  # fmt: skip
    return seen[0]


def one_step(beta: float, batch: int) -> DPOConfig:
    return DPOConfig(beta=beta, lr=1e-3, batch_size=batch, epochs=1, eval_fraction=0)


def test_k2_without_ties_is_trls_sigmoid_dpo_loss_through_the_trainer() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    reference, _ = load_causal_lm("tiny:1")  # other weights: the log-ratios are not zero
    examples = [
        RankedExample(f"Name fruit number {i}.", [f"A ripe fig {i}.", f"Stone {i} " * (i + 1)],
                      [[i % 2], [1 - i % 2]])
        for i in range(4)
    ]  # fmt: skip
    pc, pr, rc, rr = [], [], [], []  # policy/reference log-probs of chosen and rejected
    for ex in examples:
        pol = plain_logps(policy, tokenizer, ex.prompt, ex.responses)
        ref = plain_logps(reference, tokenizer, ex.prompt, ex.responses)
        chosen, rejected = ex.tie_groups[0][0], ex.tie_groups[1][0]
        pc.append(pol[chosen])
        pr.append(pol[rejected])
        rc.append(ref[chosen])
        rr.append(ref[rejected])
    beta = 0.5
    expected = trl_sigmoid_dpo_loss(
        torch.tensor(pc), torch.tensor(pr), torch.tensor(rc), torch.tensor(rr), beta
    )
    got = first_step(policy, reference, tokenizer, examples, one_step(beta, 4))
    assert got["dpo/loss"] == pytest.approx(expected, abs=1e-5)
    assert abs(expected - math.log(2)) > 1e-2  # the reference makes the case non-trivial
    margins = [beta * ((a - b) - (c - d)) for a, b, c, d in zip(pc, pr, rc, rr, strict=True)]
    assert got["dpo/accuracy"] == sum(m > 0 for m in margins) / 4
    assert got["dpo/reward_margin"] == pytest.approx(sum(margins) / 4, abs=1e-5)


@pytest.mark.parametrize("tie_groups", [[[0, 1], [2]], [[2], [0, 1]], [[1], [0], [2]]])
def test_k3_with_a_tie_by_hand_through_the_trainer(tie_groups: list[list[int]]) -> None:
    policy, tokenizer = load_causal_lm("tiny")
    reference, _ = load_causal_lm("tiny:1")
    example = RankedExample("Say hi.", ["Hello there!", "Hi.", "Good day to you, friend."],
                            tie_groups)  # fmt: skip
    beta = 0.7
    pol = plain_logps(policy, tokenizer, example.prompt, example.responses)
    ref = plain_logps(reference, tokenizer, example.prompt, example.responses)
    e = [math.exp(beta * (p - r)) for p, r in zip(pol, ref, strict=True)]  # PL weights
    total = sum(e)
    if len(tie_groups) == 2 and len(tie_groups[0]) == 2:  # a tie first: either order
        (a, b), (c,) = tie_groups
        p = e[a] / total * e[b] / (e[b] + e[c]) + e[b] / total * e[a] / (e[a] + e[c])
        expected = -math.log(p) / 2
    elif len(tie_groups) == 2:  # a tie last: only the winner's draw informs
        expected = -math.log(e[tie_groups[0][0]] / total)
    else:  # no tie: Plackett-Luce's two draws
        first, second, third = (g[0] for g in tie_groups)
        expected = -math.log(e[first] / total * e[second] / (e[second] + e[third])) / 2
    got = first_step(policy, reference, tokenizer, [example], one_step(beta, 1))
    assert got["dpo/loss"] == pytest.approx(expected, abs=1e-5)


def keyword_rankings(n: int) -> list[RankedExample]:
    """K = 4: more "banana" is better, the two plain responses tie last."""
    return [
        RankedExample(
            f"Tell me about item {i}.",
            [f"banana banana item {i}", f"plain item {i}", f"banana item {i}", f"other {i}"],
            [[0], [2], [1, 3]],
        )
        for i in range(n)
    ]


def test_a_tiny_run_lowers_the_loss_and_orders_its_training_data() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    examples = keyword_rankings(8)
    config = DPOConfig(beta=0.5, lr=2e-3, batch_size=4, epochs=4, max_length=32, eval_fraction=0)
    losses: list[float] = []
    result = train_dpo(
        policy, None, tokenizer, examples, config, eval_rankings=examples,
        progress=lambda step, values: losses.append(values["dpo/loss"]),
    )  # fmt: skip
    assert result.status == "completed" and result.steps == result.total_steps == 8
    assert result.metrics["dpo/eval_accuracy_initial"] == 0.0  # pi = pi_ref: every s is 0
    assert result.metrics["dpo/eval_accuracy"] >= 0.9
    assert losses[-1] < losses[0] - 0.05
    assert result.metrics["dpo/pairs"] == 8 * 4 * 5  # 5 pairs a prompt, 4 epochs
    assert result.metrics["dpo/sequences"] == 8 * 4 * 4  # each response once a step
    assert not policy.training and all(p.requires_grad for p in policy.parameters())


def test_every_trainable_tensor_changes_in_bf16_autocast() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    config = DPOConfig(lr=1e-3, batch_size=2, epochs=1, max_length=32, eval_fraction=0)
    reference, _ = load_causal_lm("tiny", dtype="bf16")  # a frozen reference in bf16
    result = train_dpo(
        policy, reference, tokenizer, keyword_rankings(4), config,
        precision=Precision(compute=torch.bfloat16, device_type="cpu"),
    )  # fmt: skip
    assert result.steps == 2 and math.isfinite(result.metrics["dpo/loss"])
    for name, param in policy.named_parameters():
        assert param.dtype == torch.float32, name  # fp32 master weights
        assert not torch.equal(param.detach(), before[name]), f"{name} did not change"


def test_lora_trains_adapters_and_leaves_plain_merged_weights() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    config = DPOConfig(lr=1e-2, batch_size=2, epochs=1, max_length=32, eval_fraction=0, lora_r=4)
    train_dpo(policy, None, tokenizer, keyword_rankings(4), config)
    after = dict(policy.named_parameters())
    assert after.keys() == before.keys()  # no adapter left: plain transformers weights
    changed = {name for name in after if not torch.equal(after[name].detach(), before[name])}
    assert changed and all(name.split(".")[-2] in {"q_proj", "k_proj", "v_proj", "o_proj"}
                           for name in changed)  # fmt: skip


def test_train_top_layers_freezes_the_rest() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    before = {name: p.detach().clone() for name, p in policy.named_parameters()}
    config = DPOConfig(
        lr=1e-3, batch_size=2, epochs=1, max_length=32, eval_fraction=0, train_top_layers=1
    )
    train_dpo(policy, None, tokenizer, keyword_rankings(4), config)
    for name, param in policy.named_parameters():
        moved = not torch.equal(param.detach(), before[name])
        assert moved == (name.startswith("model.layers.1.") or name == "model.norm.weight"), name


def test_a_stop_cancels_before_the_next_step_and_eval_uses_held_out_prompts() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    steps: list[int] = []
    config = DPOConfig(lr=1e-3, batch_size=2, epochs=2, max_length=32, eval_fraction=0.25)
    result = train_dpo(
        policy, None, tokenizer, keyword_rankings(8), config,
        progress=lambda step, values: steps.append(step), should_stop=lambda: len(steps) >= 2,
    )  # fmt: skip
    assert (result.status, result.steps, steps) == ("cancelled", 2, [1, 2])
    assert result.total_steps == 6  # 6 training prompts, 2 epochs of 3 steps
    assert (result.metrics["dpo/train_prompts"], result.metrics["dpo/eval_prompts"]) == (6, 2)
    assert result.metrics["dpo/eval_pairs"] == 2 * 5


def test_single_group_rankings_are_left_out_and_evaluation_agrees_with_training() -> None:
    policy, tokenizer = load_causal_lm("tiny")
    tied = RankedExample("Tie?", ["a", "b"], [[0, 1]])
    encoded = encode_rankings(tokenizer, [tied, *keyword_rankings(2)], 32)
    assert len(encoded) == 2
    for ranking in encoded:
        ranking.ref_logps = [0.0] * len(ranking.responses)
    figures = evaluate_implicit_reward(policy, encoded, tokenizer.pad_token_id, 0.1)
    assert figures["pairs"] == 10 and 0.0 <= figures["accuracy"] <= 1.0
    with pytest.raises(ValueError, match="no training ranking orders anything"):
        train_dpo(policy, None, tokenizer, [tied], DPOConfig(eval_fraction=0))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RLHF_STUDIO_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "training.ml", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def write_rankings(path: Path, examples: list[RankedExample]) -> Path:
    """The K-wise rankings format: responses with ids, ``order`` as tie groups of ids."""
    records = [
        {
            "prompt": ex.prompt,
            "responses": [{"id": f"r{i}", "text": t} for i, t in enumerate(ex.responses)],
            "order": [[f"r{i}" for i in group] for group in ex.tie_groups],
        }
        for ex in examples
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_the_cli_trains_with_a_reference_and_lora_and_saves_plain_weights(tmp_path: Path) -> None:
    data = write_rankings(tmp_path / "rankings.jsonl", keyword_rankings(6))
    out = tmp_path / "policy"
    completed = run_cli(
        "dpo", "--model", "tiny", "--reference", "tiny:1", "--data", str(data), "--out", str(out),
        "--device", "cpu", "--batch-size", "2", "--lr", "1e-3", "--epochs", "1", "--beta", "0.2",
        "--max-length", "32", "--lora-r", "4", "--eval-fraction", "0.34",
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["out"] == str(out)
    assert (result["dpo/train_prompts"], result["dpo/eval_prompts"], result["steps"]) == (4, 2, 2)
    assert 0.0 <= result["dpo/eval_accuracy"] <= 1.0
    weights = load_file(out / "model.safetensors")
    assert not any("lora" in key for key in weights)
    saved = json.loads((out / "dpo_metrics.json").read_text())
    assert saved["config"]["beta"] == 0.2 and saved["config"]["lora_r"] == 4
    reloaded, _ = load_causal_lm(str(out))
    original, _ = load_causal_lm("tiny")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(reloaded.state_dict()[q], original.state_dict()[q])


def test_the_cli_refuses_rankings_that_order_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_rankings(tmp_path / "ties.jsonl", [RankedExample("Tie?", ["a", "b"], [[0, 1]])])
    out = tmp_path / "policy"
    assert main(["dpo", "--model", "tiny", "--data", str(data), "--out", str(out)]) == 2
    assert "no ranking orders anything" in capsys.readouterr().err
    assert not out.exists()
