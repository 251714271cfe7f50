"""Models beyond SmolLM2: a tiny random config of each family the product supports goes
through the whole loop as a `save_pretrained` folder (safetensors), the way an operator's
model under RLHF_MODEL_ROOTS would: load, sample, SFT, RM (initialised from the LM), PPO.

Tied (Gemma) and untied (Llama, Qwen, Mistral, Phi-3) embeddings, grouped-query attention,
Gemma's logit soft-capping and sliding windows, Qwen3's q/k norms: each family's own
modelling code runs; only the weights are random.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers
from transformers import AutoModelForCausalLM

from training.ml.configs import PPOConfig, RMConfig, SFTConfig
from training.ml.data import Demonstration
from training.ml.loading import load_causal_lm, load_tokenizer
from training.ml.ppo import train_ppo
from training.ml.preferences import RankedExample
from training.ml.reward.model import RewardModel, load_reward_model
from training.ml.reward.train import train_reward_model
from training.ml.sampling import GenerationSettings, sample_responses
from training.ml.saving import save_pretrained_atomic
from training.ml.sft import train_sft

FAMILIES = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {}),
    "qwen3": ("Qwen3Config", {"head_dim": 16}),
    "mistral": ("MistralConfig", {"sliding_window": 64}),
    "gemma2": ("Gemma2Config", {"head_dim": 16}),
    "gemma3": ("Gemma3TextConfig", {"head_dim": 16}),
    "phi3": ("Phi3Config", {}),
}
PROMPTS = ["Name a fruit.", [{"role": "user", "content": "Say hello."}]]


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def moved(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """Names of trainable tensors that did NOT change (empty when all moved)."""
    params = dict(model.named_parameters())
    return [name for name, old in before.items() if torch.equal(params[name], old)]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("tiny")  # the real SmolLM2 tokenizer and chat template


@pytest.fixture(params=sorted(FAMILIES))
def family_folder(request, tokenizer, tmp_path: Path) -> Path:
    config_name, extra = FAMILIES[request.param]
    config = getattr(transformers, config_name)(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder = tmp_path / request.param
    save_pretrained_atomic(model, tokenizer, folder)
    assert list(folder.glob("*.safetensors"))
    return folder


def test_a_family_runs_the_whole_loop(family_folder: Path) -> None:
    policy, tokenizer = load_causal_lm(str(family_folder), dtype="float32")
    assert tokenizer.pad_token_id is not None

    settings = GenerationSettings(max_new_tokens=4, seed=0)
    # 4 rows on 3 lines: the fourth joins once a line is free (sliding-window caches, which
    # cannot be cut and joined, take it as a batch of its own).
    samples = sample_responses(policy, tokenizer, PROMPTS, k=2, settings=settings, batch_size=3)
    assert [len(group) for group in samples] == [2, 2]
    assert all(1 <= len(s.token_ids) <= 4 for group in samples for s in group)

    before = snapshot(policy)
    demos = [Demonstration("Name a fruit.", "A pear."), Demonstration("Say hi.", "Hi there.")]
    sft = train_sft(policy, tokenizer, demos, SFTConfig(batch_size=2, lr=1e-3, eval_fraction=0))
    assert sft["status"] == "completed" and torch.isfinite(torch.tensor(sft["sft/loss"]))
    assert moved(policy, before) == []

    rm = RewardModel.from_causal_lm(policy)
    ranked = [RankedExample("Name a fruit.", ["A pear.", "A rock.", "Fish."], [[0], [1, 2]])] * 2
    before = snapshot(rm)
    result = train_reward_model(rm, tokenizer, ranked, config=RMConfig(lr=1e-3, batch_size=2))
    assert result["status"] == "completed" and moved(rm, before) == []
    rm_folder = family_folder.parent / f"{family_folder.name}-rm"
    save_pretrained_atomic(rm, tokenizer, rm_folder)
    scorer, _ = load_reward_model(str(rm_folder))
    ids = torch.tensor([tokenizer("A pear.")["input_ids"]])
    torch.testing.assert_close(scorer(ids, torch.ones_like(ids)), rm(ids, torch.ones_like(ids)))

    ref_policy, _ = load_causal_lm(str(family_folder), dtype="float32")
    critic = RewardModel.from_causal_lm(policy)
    before = snapshot(policy)
    config = PPOConfig(
        steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, max_new_tokens=4, lr=1e-3
    )
    ppo = train_ppo(policy, ref_policy, critic, scorer, tokenizer, PROMPTS, config)
    assert ppo["status"] == "completed" and torch.isfinite(torch.tensor(ppo["objective/kl"]))
    assert moved(policy, before) == []
