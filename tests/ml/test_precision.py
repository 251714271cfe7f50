"""Mixed precision: fp32 master weights under bf16 autocast (CPU runs bf16 autocast too).

Stepping bf16 weights directly at lr 1e-5 leaves most of them unchanged (the update is
below bf16's resolution); with fp32 masters every element moves. The bf16 loss curve
tracks the fp32 one within ABS_TOLERANCE per step (bf16 keeps ~3 significant digits).
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from training.ml.chat import encode_prompt
from training.ml.configs import RMConfig
from training.ml.loading import load_causal_lm
from training.ml.ppo import PPOConfig, train_ppo
from training.ml.precision import (
    FP32,
    Precision,
    float_in_place,
    master_weights,
    resolve_precision,
)
from training.ml.preferences import RankedExample
from training.ml.reward.model import RewardModel
from training.ml.reward.train import train_reward_model
from training.ml.sft import Demonstration, SFTConfig, train_sft

BF16 = Precision(compute=torch.bfloat16, device_type="cpu")
ABS_TOLERANCE = 0.03  # per-step |loss_bf16 - loss_fp32|, losses of order 0.7
WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "melon", "banana"]


def rankings(n: int) -> list[RankedExample]:
    rng = random.Random(0)
    out = []
    for _ in range(n):
        texts = [" ".join(rng.choice(WORDS) for _ in range(4)) for _ in range(4)]
        out.append(RankedExample("Say something.", texts, [[0], [1, 2], [3]]))
    return out


def element_share_changed(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> float:
    """Share of the weight elements that moved, outside the embedding (whose rows of
    tokens absent from the data get no gradient at all)."""
    changed = total = 0
    for name, param in model.named_parameters():
        if "embed" in name:
            continue
        changed += int((param.detach().float() != before[name].float()).sum())
        total += param.numel()
    return changed / total


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def test_resolve_precision_names() -> None:
    assert resolve_precision("bf16", "cpu") == BF16 and BF16.mixed and BF16.name == "bf16"
    assert resolve_precision("float32", "cpu") == FP32 and not FP32.mixed
    assert resolve_precision("auto", "cpu") == FP32  # auto is bf16 on CUDA only
    assert not FP32.grad_scaler().is_enabled()
    assert Precision(torch.float16, "cpu").grad_scaler().is_enabled()


def test_master_weights_upcast_a_bf16_model() -> None:
    model, _ = load_causal_lm("tiny", dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16
    master_weights(model)
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_bf16_rm_at_lr_1e5_moves_every_weight_and_tracks_fp32() -> None:
    lm, tokenizer = load_causal_lm("tiny", dtype="bf16")  # as dtype=auto loads on CUDA
    torch.manual_seed(0)
    mixed = RewardModel.from_causal_lm(lm)
    fp32 = RewardModel.from_causal_lm(load_causal_lm("tiny", dtype="bf16")[0])
    fp32.load_state_dict(mixed.state_dict())  # the same (bf16-rounded) start
    before = snapshot(mixed)
    config = RMConfig(lr=1e-5, batch_size=2, length_bucketing=False, max_grad_norm=None)
    curves: dict[str, list[float]] = {"bf16": [], "fp32": []}
    for name, model, precision in (("bf16", mixed, BF16), ("fp32", fp32, FP32)):
        train_reward_model(
            model,
            tokenizer,
            rankings(10),
            config=config,
            precision=precision,
            on_metrics=lambda _s, m, name=name: curves[name].append(m["rm/loss"]),
        )
    assert {p.dtype for p in mixed.parameters()} == {torch.float32}
    assert element_share_changed(mixed, before) > 0.95
    assert len(curves["bf16"]) == 5
    for got, want in zip(curves["bf16"], curves["fp32"], strict=True):
        assert abs(got - want) < ABS_TOLERANCE


def test_pure_bf16_adam_steps_lose_most_updates() -> None:
    """The failure mode the master weights prevent (why this module exists)."""
    lm, tokenizer = load_causal_lm("tiny", dtype="bf16")
    before = snapshot(lm)
    optimizer = torch.optim.AdamW(lm.parameters(), lr=1e-5)
    ids = torch.tensor([tokenizer("a banana and a pear")["input_ids"]])
    for _ in range(5):
        optimizer.zero_grad()
        lm(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
    assert element_share_changed(lm, before) < 0.5


def test_bf16_sft_moves_every_weight_and_tracks_fp32() -> None:
    demos = [Demonstration(prompt=f"Say {w}.", response=f"{w} {w}") for w in WORDS[:8]]
    config = SFTConfig(epochs=3, batch_size=4, lr=1e-5, eval_fraction=0.0, warmup_ratio=0.0)
    curves: dict[str, list[float]] = {"bf16": [], "fp32": []}
    models = {}
    for name, precision in (("bf16", BF16), ("fp32", FP32)):
        model, tokenizer = load_causal_lm("tiny", dtype="bf16")
        before = snapshot(model)
        train_sft(
            model,
            tokenizer,
            demos,
            config,
            precision=precision,
            on_metrics=lambda _s, m, name=name: curves[name].append(m["sft/loss"]),
        )
        models[name] = (model, before)
    model, before = models["bf16"]
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert element_share_changed(model, before) > 0.95
    for got, want in zip(curves["bf16"], curves["fp32"], strict=True):
        assert abs(got - want) < ABS_TOLERANCE * abs(want) + ABS_TOLERANCE


@pytest.mark.parametrize("precision", [BF16, FP32], ids=["bf16", "fp32"])
def test_ppo_trains_fp32_masters_with_a_bf16_reference(precision: Precision) -> None:
    policy, tokenizer = load_causal_lm("tiny", dtype="bf16")
    ref_policy, _ = load_causal_lm("tiny", dtype="bf16")
    torch.manual_seed(0)
    critic = RewardModel.from_causal_lm(load_causal_lm("tiny", dtype="bf16")[0])
    before = {"policy": snapshot(policy), "critic": snapshot(critic)}
    config = PPOConfig(
        steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=1, max_new_tokens=4, lr=1e-5
    )
    result = train_ppo(
        policy,
        ref_policy,
        critic,
        None,
        tokenizer,
        [f"Topic {i}." for i in range(8)],
        config,
        reward_fn=lambda texts, _p: [float(len(t)) for t in texts],
        precision=precision,
    )
    assert result["status"] == "completed"
    assert next(ref_policy.parameters()).dtype == torch.bfloat16  # frozen: stays small
    for name, model in (("policy", policy), ("critic", critic)):
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[name][n])]
        assert unchanged == [], f"{name}: {unchanged[:3]}"


def test_fp16_ppo_checkpoints_keep_the_loss_scale(tmp_path: Path) -> None:
    """An fp16 run's GradScaler state goes into its checkpoint and comes back on resume."""
    import json

    fp16 = Precision(compute=torch.float16, device_type="cpu")
    policy, tokenizer = load_causal_lm("tiny")
    ref_policy, _ = load_causal_lm("tiny")
    critic = RewardModel.from_causal_lm(load_causal_lm("tiny")[0])
    config = PPOConfig(
        steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=3, lr=1e-5
    )
    train_ppo(
        policy, ref_policy, critic, None, tokenizer, ["Hi.", "Yo."], config, precision=fp16,
        reward_fn=lambda texts, _p: [1.0] * len(texts), checkpoint_dir=tmp_path,
    )  # fmt: skip
    (state_file,) = tmp_path.glob("*/state.json")
    saved = json.loads(state_file.read_text())["grad_scaler"]
    assert saved["scale"] > 0


def test_float_in_place_converts_every_tensor_and_keeps_ties():
    """`float_in_place` is `.float()` a module at a time: the same Parameter objects, now
    fp32 with the same values, the tied embedding still one tensor, the same logits."""
    model, tokenizer = load_causal_lm("tiny", dtype="bfloat16")
    params = dict(model.named_parameters())
    values = {name: p.detach().clone() for name, p in params.items()}
    ids = torch.tensor([encode_prompt(tokenizer, "Hello there", 64)])
    with torch.no_grad():
        expected = model(input_ids=ids).logits.float()
    float_in_place(model)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert all(p is params[name] for name, p in model.named_parameters())
    for name, p in model.named_parameters():
        assert torch.equal(p, values[name].float()), name
    head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
    assert head.weight.data_ptr() == embedding.weight.data_ptr()
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    torch.testing.assert_close(logits, expected, atol=0.1, rtol=0.05)
