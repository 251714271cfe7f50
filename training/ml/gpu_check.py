"""A first-contact check of a GPU machine: every stage of the loop, in bf16, for a few steps.

Runs on a bare box (torch, transformers, accelerate, peft, safetensors; no Django, no gguf,
no network, no model files): the models are random-init from configs of real shapes and
the tokenizer is a word-level one built in memory, so only the weights are fake; the code
path (sampling, SFT, RM, PPO with fp32 master weights under bf16 autocast) is the
product's. Each stage asserts that every trained matrix moved at lr 1e-5 (the update pure
bf16 would lose) and that nothing is NaN, and reports tokens/s and peak memory.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from training.ml.configs import PPOConfig, RMConfig, SFTConfig
from training.ml.data import Demonstration
from training.ml.ppo import train_ppo
from training.ml.precision import Precision
from training.ml.preferences import RankedExample
from training.ml.reward.model import RewardModel
from training.ml.reward.train import train_reward_model
from training.ml.sampling import GenerationSettings, sample_responses
from training.ml.sft import train_sft

# Shapes of real checkpoints (their config.json), random weights.
SHAPES: dict[str, dict[str, Any]] = {
    "135m": dict(  # SmolLM2-135M-Instruct
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
    ),
    "1b": dict(  # Llama-3.2-1B
        vocab_size=128256, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
        num_attention_heads=32, num_key_value_heads=8, tie_word_embeddings=True,
    ),
    "tiny": dict(  # for the CPU test of this module
        vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    ),
}  # fmt: skip
CHANGED_SHARE = 0.9  # of each trained matrix's elements must move (pure bf16: ~15%)
LR = 1e-5
SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "unk_token": "<unk>"}
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant :{% endif %}"
)


class CheckFailed(AssertionError):
    """A stage ran but its result is wrong (weights stuck, NaN)."""


@dataclass(frozen=True)
class CheckSettings:
    device: str = "cuda"
    dtype: torch.dtype = torch.bfloat16
    batch: int = 8
    new_tokens: int = 32
    steps: int = 3


def word_tokenizer(vocab_size: int) -> PreTrainedTokenizerFast:
    """A whitespace word-level tokenizer over ``vocab_size`` ids (``w3`` ... and specials),
    with a chat template: real ids for a random-init model, built without any file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials)}
    vocab |= {f"w{i}": i for i in range(len(specials), vocab_size - 3)}
    vocab |= {"user": vocab_size - 3, "assistant": vocab_size - 2, ":": vocab_size - 1}
    core = Tokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    tokenizer.padding_side = "left"
    return tokenizer


def build_model(shape: str, tokenizer: PreTrainedTokenizerFast, device: str) -> LlamaForCausalLM:
    config = LlamaConfig(
        **SHAPES[shape],
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.to(torch.device(device))  # type: ignore[arg-type]  # transformers types .to() as PreTrainedModel-only
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.eval()


def random_text(rng: random.Random, vocab_size: int, words: int) -> str:
    return " ".join(f"w{rng.randrange(3, min(vocab_size - 3, 2000))}" for _ in range(words))


# --------------------------------------------------------------------------- measuring


def _peak_mb(device: str) -> float:
    if torch.device(device).type != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() / 2**20


def _reset_peak(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _matrices(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trained weight matrices (not the embedding: rows of unseen tokens get no
    gradient), copied to the CPU in fp32."""
    return {
        name: p.detach().float().cpu().clone()
        for name, p in model.named_parameters()
        if p.requires_grad and p.dim() >= 2 and "embed" not in name
    }


def _check_trained(
    params: Mapping[str, torch.Tensor], before: dict[str, torch.Tensor], stage: str
) -> float:
    """The smallest share of elements that moved in any matrix of ``before``; raise if
    below the bar or if a weight is not finite."""
    worst = 1.0
    for name, old in before.items():
        new = params[name].detach().float().cpu()
        if not torch.isfinite(new).all():
            raise CheckFailed(f"{stage}: {name} has non-finite weights")
        worst = min(worst, float((new != old).float().mean()))
    if worst < CHANGED_SHARE:
        raise CheckFailed(f"{stage}: only {worst:.1%} of some matrix moved at lr {LR}")
    return worst


def _finite(value: float, stage: str, what: str) -> float:
    if not math.isfinite(value):
        raise CheckFailed(f"{stage}: {what} is {value}")
    return value


def _timed(device: str, run: Callable[[], int]) -> tuple[float, float]:
    """(tokens per second, peak MiB) of ``run``, which returns the tokens it processed."""
    _reset_peak(device)
    started = time.perf_counter()
    tokens = run()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return tokens / (time.perf_counter() - started), _peak_mb(device)


# --------------------------------------------------------------------------- stages


def check_shape(shape: str, settings: CheckSettings) -> dict[str, Any]:
    """Generation, SFT, RM and PPO on a random model of ``shape``; one dict of figures."""
    device = settings.device
    precision = Precision(settings.dtype, torch.device(device).type)
    tokenizer = word_tokenizer(SHAPES[shape]["vocab_size"])
    rng = random.Random(0)
    prompts = [random_text(rng, len(tokenizer), 12) for _ in range(settings.batch)]
    policy = build_model(shape, tokenizer, device)
    result: dict[str, Any] = {"params_m": sum(p.numel() for p in policy.parameters()) / 1e6}

    def generate() -> int:
        gen = GenerationSettings(max_new_tokens=settings.new_tokens, seed=0)
        with torch.no_grad(), precision.autocast():
            samples = sample_responses(
                policy, tokenizer, prompts, k=2, settings=gen, batch_size=2 * settings.batch
            )
        return sum(len(s.token_ids) for group in samples for s in group)

    result["generate_tokens_per_s"], result["generate_peak_mb"] = _timed(device, generate)

    demos = [Demonstration(p, random_text(rng, len(tokenizer), 24)) for p in prompts]
    sft_config = SFTConfig(
        epochs=settings.steps,
        batch_size=settings.batch,
        lr=LR,
        eval_fraction=0.0,
        warmup_ratio=0.0,
        max_length=128,
    )
    before = _matrices(policy)
    sft: dict[str, Any] = {}

    def run_sft() -> int:
        sft.update(train_sft(policy, tokenizer, demos, sft_config, precision=precision))
        return int(sft["sft/tokens"])

    result["sft_tokens_per_s"], result["sft_peak_mb"] = _timed(device, run_sft)
    result["sft_loss"] = _finite(sft["sft/loss"], "sft", "loss")
    result["sft_min_changed"] = _check_trained(dict(policy.named_parameters()), before, "sft")

    reward_model = RewardModel.from_causal_lm(policy)
    ranked = [
        RankedExample(p, [random_text(rng, len(tokenizer), 16) for _ in range(4)],
                      [[0], [1, 2], [3]])
        for p in prompts * settings.steps
    ]  # fmt: skip
    rm_config = RMConfig(lr=LR, batch_size=settings.batch, max_length=128, max_grad_norm=None)
    before = _matrices(reward_model)
    rm: dict[str, Any] = {}

    def run_rm() -> int:
        rm.update(
            train_reward_model(
                reward_model, tokenizer, ranked, config=rm_config, precision=precision
            )
        )
        return int(rm["tokens"])

    result["rm_tokens_per_s"], result["rm_peak_mb"] = _timed(device, run_rm)
    result["rm_loss"] = _finite(rm["rm/loss"], "rm", "loss")
    result["rm_min_changed"] = _check_trained(dict(reward_model.named_parameters()), before, "rm")

    # PPO: policy and critic train (fp32 masters); reference and RM are frozen bf16 copies
    ref_policy = copy.deepcopy(policy)
    ref_policy.to(settings.dtype)  # type: ignore[arg-type]  # transformers types .to() as PreTrainedModel-only
    scorer = copy.deepcopy(reward_model).to(settings.dtype)
    critic = reward_model
    ppo_config = PPOConfig(
        steps=settings.steps,
        batch_size=settings.batch,
        mini_batch_size=settings.batch // 2,
        ppo_epochs=1,
        lr=LR,
        max_new_tokens=settings.new_tokens,
    )
    before = {**_matrices(policy), **{f"critic.{k}": v for k, v in _matrices(critic).items()}}
    ppo: dict[str, Any] = {}

    def run_ppo() -> int:
        ppo.update(
            train_ppo(
                policy,
                ref_policy,
                critic,
                scorer,
                tokenizer,
                prompts,
                ppo_config,
                precision=precision,
            )
        )
        return int(ppo["charts/response_tokens"] * settings.steps)

    result["ppo_tokens_per_s"], result["ppo_peak_mb"] = _timed(device, run_ppo)
    result["ppo_kl"] = _finite(ppo["objective/kl"], "ppo", "KL")
    trained = {**dict(policy.named_parameters()),
               **{f"critic.{k}": v for k, v in critic.named_parameters()}}  # fmt: skip
    result["ppo_min_changed"] = _check_trained(trained, before, "ppo")
    return result


def run_checks(shapes: list[str], settings: CheckSettings) -> dict[str, Any]:
    """Every stage for each shape; the figures keyed by shape."""
    report: dict[str, Any] = {"device": _device_name(settings.device), "dtype": str(settings.dtype)}
    for shape in shapes:
        started = time.perf_counter()
        report[shape] = check_shape(shape, settings)
        report[shape]["seconds"] = time.perf_counter() - started
        if torch.device(settings.device).type == "cuda":
            torch.cuda.empty_cache()
    return report


def _device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return f"{torch.cuda.get_device_name(device)} x{torch.cuda.device_count()}"
    return device
