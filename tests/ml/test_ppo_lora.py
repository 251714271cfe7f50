"""LoRA PPO in two base copies: the reference and the RM scorer are the frozen bases under
the adapters of policy and critic (`training.ml.ppo.share_bases`), on the `tiny` model."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors import safe_open

from training.ml.kl import make_kl_controller
from training.ml.loading import load_causal_lm
from training.ml.memory import AdaptersDisabled, is_peft
from training.ml.ppo import PPOConfig, ppo_step, prepare_models, train_ppo
from training.ml.ppo_checkpoint import latest_checkpoint
from training.ml.ppo_rollout import PPOModels
from training.ml.precision import Precision
from training.ml.reward.model import RewardModel
from training.ml.saving import save_pretrained_atomic

PROMPTS = [f"Say something about topic {i}." for i in range(16)]
# two minibatches per step: LoRA's A gets a gradient once B has left zero
LORA: dict[str, Any] = {
    "batch_size": 4,
    "mini_batch_size": 2,
    "ppo_epochs": 1,
    "max_new_tokens": 4,
    "lr": 1e-3,
    "lora_r": 4,
    "lora_alpha": 8,
}


def spaces(texts: list[str], prompts: list) -> list[float]:
    return [float(text.count(" ")) for text in texts]


def build(seed: int = 0) -> tuple[Any, RewardModel, Any]:
    """(policy, critic, tokenizer): SFT = tiny, the RM (and critic base) initialised on it."""
    policy, tokenizer = load_causal_lm("tiny")
    torch.manual_seed(seed)  # the RM head's init
    critic = RewardModel.from_causal_lm(policy)
    return policy, critic, tokenizer


def batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    return dict(tokenizer(PROMPTS[:3], return_tensors="pt", padding=True))


def test_reference_and_rm_scorer_are_the_untouched_bases_while_adapters_train() -> None:
    policy, critic, tokenizer = build()
    sft, rm = copy.deepcopy(policy), copy.deepcopy(critic)
    config = PPOConfig(steps=1, **LORA)
    models = PPOModels(policy, policy, critic, critic)
    params = prepare_models(models, config)
    assert isinstance(models.ref_policy, AdaptersDisabled)
    assert isinstance(models.reward_model, AdaptersDisabled)
    assert list(models.ref_policy.parameters()) == []  # a view: no copy of the base
    assert models.policy_trunk is None and models.critic_trunk is None  # nothing frozen below
    before = {
        (who, name): p.detach().clone()
        for who, model in (("policy", models.policy), ("critic", models.critic))
        for name, p in model.named_parameters()
    }
    optimizer = torch.optim.Adam(params, lr=config.lr)
    kl_ctl = make_kl_controller(config.init_kl_coef, config.kl_target, 100)
    metrics = ppo_step(models, optimizer, tokenizer, PROMPTS, config, 0, kl_ctl, (), spaces, None)
    assert metrics["objective/kl"] == 0.0  # the adapters start as the identity

    trained = {(w, n) for w, m in (("policy", models.policy), ("critic", models.critic))
               for n, p in m.named_parameters() if p.requires_grad}  # fmt: skip
    assert any("lora_A" in n for _, n in trained) and any("lora_B" in n for _, n in trained)
    assert any("modules_to_save" in n and "score" in n for w, n in trained if w == "critic")
    assert not any("embed_tokens" in n or "layernorm" in n for _, n in trained)
    for who, model in (("policy", models.policy), ("critic", models.critic)):
        for name, p in model.named_parameters():
            changed = not torch.equal(p, before[(who, name)])
            assert changed == ((who, name) in trained), f"{who}.{name}"
            assert p.dtype == torch.float32

    inputs = batch(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(
            models.ref_policy(**inputs).logits, sft(**inputs).logits, rtol=0, atol=0
        )
        assert not torch.allclose(models.policy(**inputs).logits, sft(**inputs).logits)
        rm_scores = models.reward_model(inputs["input_ids"], inputs["attention_mask"])
        torch.testing.assert_close(
            rm_scores, rm(inputs["input_ids"], inputs["attention_mask"]), rtol=0, atol=0
        )
        critic_scores = models.critic(inputs["input_ids"], inputs["attention_mask"])
        assert not torch.allclose(critic_scores, rm_scores)


@pytest.mark.parametrize("loaded", [torch.bfloat16, torch.float32])
def test_bases_stored_in_bf16_stay_bf16_while_the_adapters_train_in_fp32(
    loaded: torch.dtype,
) -> None:
    """Under bf16 autocast the bases are stored in bf16 (`frozen_dtype` auto), whether they
    were loaded in bf16 or in fp32; adapters and value head are fp32 masters."""
    policy, critic, tokenizer = build()
    policy.to(loaded), critic.to(loaded)
    config = PPOConfig(steps=1, **LORA)
    models = PPOModels(policy, policy, critic, critic)
    bf16 = Precision(compute=torch.bfloat16, device_type="cpu")
    params = prepare_models(models, config, bf16)
    frozen = {
        name: p.detach().clone()
        for model in (models.policy, models.critic)
        for name, p in model.named_parameters()
        if not p.requires_grad
    }
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen.values())
    assert params and all(p.dtype == torch.float32 for p in params)
    before = [p.detach().clone() for p in params]
    kl_ctl = make_kl_controller(config.init_kl_coef, config.kl_target, 100)
    optimizer = torch.optim.Adam(params, lr=config.lr)
    metrics = ppo_step(
        models, optimizer, tokenizer, PROMPTS, config, 0, kl_ctl, (), spaces, None, bf16
    )
    assert metrics["objective/kl"] == 0.0
    assert all(not torch.equal(p, b) for p, b in zip(params, before, strict=True))
    for model in (models.policy, models.critic):
        for name, p in model.named_parameters():
            if not p.requires_grad:
                assert torch.equal(p, frozen[name]), name


def test_fp32_training_keeps_the_bases_fp32_and_refuses_bf16_bases_without_autocast() -> None:
    """fp32 training: frozen_dtype auto keeps (or makes) the bases fp32; asking for bf16
    bases is refused, since the fp32 adapters would compute on them without autocast."""
    policy, critic, _ = build()
    policy.to(torch.bfloat16)  # loaded in bf16: stored in fp32, the training precision
    models = PPOModels(policy, policy, critic, critic)
    prepare_models(models, PPOConfig(steps=1, **LORA))
    for model in (models.policy, models.critic):
        assert all(p.dtype == torch.float32 for p in model.parameters())
    policy, critic, _ = build()
    models = PPOModels(policy, policy, critic, critic)
    with pytest.raises(ValueError, match="autocast"):
        prepare_models(models, PPOConfig(steps=1, frozen_dtype="bfloat16", **LORA))


def test_the_merged_policy_loads_as_a_plain_model_with_the_peft_model_s_logits(
    tmp_path: Path,
) -> None:
    policy, critic, tokenizer = build()
    inputs = batch(tokenizer)
    peft_logits: list[torch.Tensor] = []

    def record(step: int, metrics: dict) -> None:  # the adapters are still separate here
        with torch.no_grad():
            peft_logits.append(policy(**inputs).logits)

    config = PPOConfig(steps=2, **LORA)
    result = train_ppo(
        policy, policy, critic, critic, tokenizer, PROMPTS, config,
        reward_fn=spaces, on_metrics=record,
    )  # fmt: skip
    assert result["status"] == "completed" and "env/rm_score" in result
    assert 0 < result["trainable_params"] < sum(p.numel() for p in policy.parameters()) / 10
    out = save_pretrained_atomic(policy, tokenizer, tmp_path / "policy")
    assert not (out / "adapter_config.json").exists()
    loaded, _ = load_causal_lm(str(out))
    assert not any("lora" in name for name, _ in loaded.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, peft_logits[-1], rtol=1e-5, atol=1e-5)
        assert not torch.allclose(loaded(**inputs).logits, build()[0](**inputs).logits)
    # the critic keeps its fp32 adapters on its base (no merged fp32 copy at the run's end)
    assert is_peft(critic.seq)
    assert all(p.dtype == torch.float32 for p in critic.parameters() if p.requires_grad)


def test_a_lora_run_resumes_exactly_from_its_adapter_checkpoint(tmp_path: Path) -> None:
    config = PPOConfig(steps=3, checkpoint_every=1, **LORA)
    policy_a, critic_a, tokenizer = build()
    straight = train_ppo(
        policy_a, policy_a, critic_a, critic_a, tokenizer, PROMPTS, config, reward_fn=spaces
    )
    policy_b, critic_b, _ = build()
    steps: list[int] = []
    first = train_ppo(
        policy_b, policy_b, critic_b, critic_b, tokenizer, PROMPTS, config,
        reward_fn=spaces, on_metrics=lambda step, _: steps.append(step),
        should_stop=lambda: len(steps) >= 2, checkpoint_dir=tmp_path,
    )  # fmt: skip
    assert first["status"] == "cancelled" and first["step"] == 2
    saved = latest_checkpoint(tmp_path)
    assert saved == tmp_path / "step-000002"
    assert not (saved / "policy").exists()  # adapters only: the base is the SFT artifact
    with safe_open(str(saved / "policy.safetensors"), "pt") as handle:
        keys = list(handle.keys())
    assert keys and all("lora_" in key for key in keys)

    policy_c, critic_c, _ = build()  # a new worker process: bases loaded again
    second = train_ppo(
        policy_c, policy_c, critic_c, critic_c, tokenizer, PROMPTS, config,
        reward_fn=spaces, on_metrics=lambda step, _: steps.append(step),
        checkpoint_dir=tmp_path,
    )  # fmt: skip
    assert second["resumed_from"] == 2 and steps == [1, 2, 3]
    for model_a, model_c in ((policy_a, policy_c), (critic_a, critic_c)):
        for (name, a), c in zip(model_a.named_parameters(), model_c.parameters(), strict=True):
            torch.testing.assert_close(a, c, msg=name)
    assert second["kl_coef"] == straight["kl_coef"]
    assert second["objective/kl"] == pytest.approx(straight["objective/kl"])


def test_full_fine_tuning_refuses_a_shared_base_and_lora_excludes_top_layers() -> None:
    policy, critic, tokenizer = build()
    with pytest.raises(ValueError, match="separate frozen copy"):
        train_ppo(policy, policy, critic, None, tokenizer, PROMPTS,
                  PPOConfig(steps=1), reward_fn=spaces)  # fmt: skip
    with pytest.raises(ValueError, match="exclude each other"):
        PPOConfig(lora_r=4, train_top_layers=1)


# --------------------------------------------------------------------------- the command


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(f'{{"prompt": "Tell me about {i}."}}\n' for i in range(6)))
    return path


def test_ppo_command_with_lora_shares_the_bases_and_saves_a_merged_policy(
    prompts_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from training.ml import ppo
    from training.ml.cli import main

    shared: list[bool] = []
    real_train = ppo.train_ppo

    def recording(policy, ref_policy, critic, reward_model, *args, **kwargs):
        shared.append(policy is ref_policy and critic is reward_model)
        return real_train(policy, ref_policy, critic, reward_model, *args, **kwargs)

    monkeypatch.setattr(ppo, "train_ppo", recording)
    out = tmp_path / "policy"
    argv = ["ppo", "--model", "tiny", "--reward-model", "tiny", "--data", str(prompts_file),
            "--out", str(out), "--steps", "1", "--batch-size", "4", "--mini-batch-size", "2",
            "--ppo-epochs", "1", "--max-new-tokens", "4", "--lora-r", "4", "--lora-alpha", "8",
            "--device", "cpu"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed" and "env/rm_score" in result
    assert shared == [True]
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert json.loads((out / "ppo_metrics.json").read_text())["config"]["lora_r"] == 4
    loaded, _ = load_causal_lm(str(out))
    assert not any("lora" in name for name, _ in loaded.named_parameters())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--lora-r", "4", "--ref-model", "other"], "drop --ref-model"),
        (["--lora-r", "4", "--reward-model", "tiny", "--critic", "other"], "drop --critic"),
        (["--lora-alpha", "8"], "--lora-alpha and --lora-target-modules need --lora-r"),
        (["--lora-r", "4", "--train-top-layers", "1"], "exclude each other"),
        (["--lora-r", "0"], "lora_r must be >= 1"),
    ],
)
def test_lora_flags_that_do_not_fit_stop_before_a_model_loads(
    prompts_file: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    from training.ml.cli import main

    argv = ["ppo", "--model", "tiny", "--rule", "length:<=3:-1", "--data", str(prompts_file)]
    assert main([*argv, "--out", str(tmp_path / "policy"), *extra]) == 2
    assert message in capsys.readouterr().err
