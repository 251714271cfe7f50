"""Hyper-parameters of the trainers (reward model, PPO, SFT, DPO), with their types and ranges.

Standard library only: the web process checks a project's `training_config` against these
dataclasses without loading torch. Each field's metadata holds its help text and range
(`ge`, `gt`, `le`, `lt`, `choices`; see `setting`); `field_problem` checks one value
against a field (its type, then its range), and each config checks itself with it, so
the trainers and the web door accept and refuse the same values. `training.ml.ppo` and
`training.ml.sft` re-export their config (`RMConfig` is imported from here).
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from training.ml.memory import MemoryConfig

MAX_BATCH = 4096
MAX_TOKENS = 32_768
MAX_STEPS = 1_000_000
MAX_SEED = 2**31 - 1  # torch.manual_seed and random.Random take it; larger overflow
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def setting(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    choices: tuple[str, ...] | None = None,
) -> Any:
    """A dataclass field with its help text and allowed range in `metadata`."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    metadata = {"help": help, **{k: v for k, v in bounds.items() if v is not None}}
    return dataclasses.field(default=default, metadata=metadata)


@cache
def field_types(cls: type) -> dict[str, tuple[type, ...]]:
    """Per field of the dataclass `cls`: the types its annotation allows (NoneType included
    for `X | None`)."""
    hints = typing.get_type_hints(cls)
    allowed = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
        unknown = [k for k in kinds if k not in _KIND_NAMES and k is not type(None)]
        if unknown:
            raise TypeError(f"{cls.__name__}.{f.name}: unsupported setting type {hint}")
        allowed[f.name] = kinds
    return allowed


def field_problem(cls: type, f: dataclasses.Field[Any], value: object) -> str | None:
    """Why `value` cannot be field `f` of `cls` ("must be an integer", "must be >= 1"), or
    None. A bool is not a number; an int is accepted for a float."""
    kinds = field_types(cls)[f.name]
    if value is None:
        return None if type(None) in kinds else "must not be null"
    if not any(_is_kind(value, kind) for kind in kinds if kind is not type(None)):
        names = [_KIND_NAMES[k] for k in kinds if k is not type(None)]
        return f"must be {' or '.join(names)}" + (" or null" if type(None) in kinds else "")
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    return _range_problem(f.metadata, value)


def _is_kind(value: object, kind: type) -> bool:
    if kind is bool or isinstance(value, bool):
        return kind is bool and isinstance(value, bool)
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


def _range_problem(metadata: typing.Mapping[str, Any], value: Any) -> str | None:
    if "choices" in metadata and value not in metadata["choices"]:
        return f"must be one of {', '.join(metadata['choices'])}"
    checks = (
        ("ge", ">=", lambda bound: value >= bound),
        ("gt", ">", lambda bound: value > bound),
        ("le", "<=", lambda bound: value <= bound),
        ("lt", "<", lambda bound: value < bound),
    )
    for key, sign, ok in checks:
        if key in metadata and not ok(metadata[key]):
            return f"must be {sign} {metadata[key]}"
    return None


def check_trained_parts(config: Any, *, lora_trains: str = "the adapters") -> None:
    """Raise ValueError when `config` asks for LoRA and for the top N blocks at once (the
    two ways of choosing what trains exclude each other), or names no LoRA layer."""
    name = type(config).__name__
    if config.lora_r and config.train_top_layers is not None:  # SFT's lora_r 0 is off
        raise ValueError(
            f"{name}.train_top_layers and lora_r exclude each other: "
            f"with LoRA only {lora_trains} train"
        )
    modules = getattr(config, "lora_target_modules", None)
    if modules is not None and not modules.strip(", "):
        raise ValueError(f"{name}.lora_target_modules must name at least one layer")


def memory_of(config: Any) -> "MemoryConfig":
    """The memory options (what trains, checkpointing, LoRA) of a trainer config that has
    `train_top_layers`, `gradient_checkpointing`, `lora_r` and `lora_alpha`."""
    from training.ml.memory import MemoryConfig  # torch: only where a model trains

    return MemoryConfig(
        train_top_layers=config.train_top_layers,
        gradient_checkpointing=config.gradient_checkpointing,
        lora_r=config.lora_r,
        lora_alpha=config.lora_alpha,
    )


def check_config(config: Any) -> None:
    """Raise ValueError naming the first field of the dataclass `config` that is out of
    its type or range ("PPOConfig.batch_size must be >= 1, got 0")."""
    cls = type(config)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        problem = field_problem(cls, f, value)
        if problem:
            raise ValueError(f"{cls.__name__}.{f.name} {problem}, got {value!r}")


@dataclass
class RMConfig:
    """Hyperparameters of reward-model training (InstructGPT: one epoch, cosine to 10%)."""

    lr: float = setting(1e-5, "Peak AdamW learning rate (InstructGPT's 6B RM: 9e-6).", gt=0, le=1)
    epochs: float = setting(
        1.0,
        "Passes over the rankings (a fraction stops early); more over-fits (InstructGPT 3.5).",
        gt=0,
        le=100,
    )
    batch_size: int = setting(
        8,
        "Prompts per optimizer step; all of a prompt's pairs are one batch element.",
        ge=1,
        le=MAX_BATCH,
    )
    max_length: int = setting(
        512,
        "Tokens per prompt+response sequence; the prompt is cut from its start first.",
        ge=8,
        le=MAX_TOKENS,
    )
    warmup_steps: int = setting(
        0, "Linear warmup steps before the cosine decay.", ge=0, le=MAX_STEPS
    )
    min_lr_ratio: float = setting(0.1, "Cosine decay ends at this fraction of `lr`.", ge=0, le=1)
    weight_decay: float = setting(
        0.0, "AdamW weight decay on matrices (not on norms or biases).", ge=0
    )
    max_grad_norm: float | None = setting(1.0, "Gradient clipping norm (None: no clipping).", gt=0)
    margin: float = setting(
        0.0,
        "If > 0, require r_w - r_l > margin x tie-group distance (Llama 2's margin loss).",
        ge=0,
    )
    train_top_layers: int | None = setting(
        None, "Freeze all but the top N blocks and the head (None: train everything).", ge=0
    )
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in backward to save memory."
    )
    lora_r: int | None = setting(
        None, "LoRA rank (peft) for the backbone; the head always trains in full.", ge=0
    )
    lora_alpha: int = setting(16, "LoRA alpha (adapters scale by alpha / r).", ge=1)
    max_sequences_per_forward: int | None = setting(
        None,
        "Split a step into forwards of at most this many sequences (gradient accumulation).",
        ge=0,
    )
    eval_every: int = setting(
        0, "Evaluate on the eval set every N steps (0: only at the end).", ge=0
    )
    eval_fraction: float = setting(
        0.0,
        "Fraction of the training file held out for evaluation when no eval set is given.",
        ge=0,
        lt=1,
    )
    length_bucketing: bool = setting(
        True, "Batch prompts of similar length together to reduce padding."
    )
    seed: int = setting(0, "Seed of the batch order (and of the eval split).", ge=0, le=MAX_SEED)

    def validate(self) -> None:
        """Raise ValueError naming the first field out of its type or range, or a bad mix."""
        check_config(self)
        check_trained_parts(self, lora_trains="the adapters (and the score head)")


@dataclass
class PPOConfig:
    """Hyper-parameters of one PPO run (defaults: a CPU-sized InstructGPT recipe)."""

    steps: int = setting(
        20, "number of PPO steps (one rollout batch + its update each)", ge=1, le=MAX_STEPS
    )
    batch_size: int = setting(8, "prompts (episodes) per rollout", ge=1, le=MAX_BATCH)
    mini_batch_size: int = setting(
        4, "episodes per gradient step in the update", ge=1, le=MAX_BATCH
    )
    ppo_epochs: int = setting(4, "passes over each rollout batch", ge=1, le=100)
    lr: float = setting(1e-5, "Adam learning rate of policy and critic", gt=0, le=1)
    max_grad_norm: float = setting(1.0, "gradient clipping of policy and critic together", gt=0)
    cliprange: float = setting(0.2, "epsilon of the clipped policy ratio", gt=0)
    cliprange_value: float = setting(
        0.2, "clip of the value prediction around the rollout's value", gt=0
    )
    vf_coef: float = setting(0.1, "weight of the value loss", ge=0)
    gamma: float = setting(1.0, "discount of GAE", ge=0, le=1)
    lam: float = setting(0.95, "lambda of GAE", ge=0, le=1)
    init_kl_coef: float = setting(0.2, "initial beta of the per-token KL penalty", ge=0)
    kl_target: float | None = setting(
        6.0,
        "KL (nats per response) the adaptive controller aims at; None keeps beta fixed",
        gt=0,
    )
    kl_horizon: int | None = setting(
        None,
        "horizon of the adaptive controller, in episodes; None: a quarter of the run's "
        "episodes (steps x batch_size / 4, rounded up), so beta can move ~2.2x in a run far "
        "from target",
        ge=1,
    )
    whiten_rewards: bool = setting(False, "scale per-token rewards to unit variance before GAE")
    missing_eos_penalty: float = setting(
        0.0, "subtracted from the score of a response that did not end with EOS"
    )
    ptx_coef: float = setting(
        0.0, "gamma of PPO-ptx: weight of the log-likelihood of ptx texts", ge=0
    )
    ptx_batch_size: int = setting(4, "ptx texts per gradient step", ge=1, le=MAX_BATCH)
    max_new_tokens: int = setting(64, "length limit of a sampled response", ge=1, le=MAX_TOKENS)
    max_prompt_length: int = setting(256, "prompt tokens kept (the last ones)", ge=1, le=MAX_TOKENS)
    max_ptx_length: int = setting(256, "tokens kept of a ptx text", ge=1, le=MAX_TOKENS)
    temperature: float = setting(
        1.0,
        "sampling temperature; log-probs are taken from the same tempered distribution "
        "(> 0: PPO needs the sampling distribution)",
        gt=0,
    )
    top_p: float = setting(1.0, "nucleus sampling mass", ge=0, le=1)
    forward_batch_size: int = setting(
        8, "episodes per no-grad forward pass in the rollout", ge=1, le=MAX_BATCH
    )
    seed: int = setting(
        0,
        "seed of prompt order, sampling and minibatch order (each step derives its own)",
        ge=0,
        le=MAX_SEED,
    )
    train_top_layers: int | None = setting(
        None, "train only the top N blocks (and head) of policy and critic", ge=0
    )
    lora_r: int | None = setting(
        None,
        "train LoRA adapters (peft) of this rank on frozen policy and critic bases; the "
        "reference and the RM scorer are those bases with the adapters off, so PPO holds "
        "two base copies, not four (None: full fine-tuning)",
        ge=1,
    )
    lora_alpha: int = setting(16, "LoRA alpha (adapters scale by alpha / r)", ge=1)
    lora_target_modules: str = setting(
        "q_proj,k_proj,v_proj,o_proj",
        "comma-separated names of the linear layers that get LoRA adapters, or 'all-linear'",
    )
    gradient_checkpointing: bool = setting(
        False, "recompute activations in backward to save memory"
    )
    cache_frozen_trunk: bool = setting(
        True, "with frozen bottom blocks, run them once per rollout, not in every update pass"
    )
    frozen_dtype: str = setting(
        "auto",
        "storage dtype of the frozen weights (reference, RM scorer; with LoRA the bases under "
        "the adapters): auto is the compute dtype under mixed precision (bf16 autocast: "
        "bfloat16) and as loaded in fp32 training (LoRA bases: float32); trained weights "
        "stay fp32",
        choices=("auto", "float32", "bfloat16", "float16"),
    )
    checkpoint_every: int = setting(
        0, "steps between checkpoints (0: only on cancel and at the end)", ge=0
    )
    keep_checkpoints: int = setting(2, "complete checkpoints kept on disk", ge=1)

    def __post_init__(self) -> None:
        check_config(self)
        check_trained_parts(self, lora_trains="the adapters (and the value head)")


@dataclass
class SFTConfig:
    """Hyperparameters of one SFT run."""

    epochs: float = setting(
        1.0, "Passes over the training demonstrations (fractions allowed).", gt=0, le=100
    )
    batch_size: int = setting(8, "Demonstrations per micro-batch.", ge=1, le=MAX_BATCH)
    grad_accum_steps: int = setting(1, "Micro-batches per optimizer step.", ge=1, le=MAX_BATCH)
    lr: float = setting(1e-5, "Peak learning rate of AdamW.", gt=0, le=1)
    warmup_ratio: float = setting(
        0.05, "Fraction of the steps with a linear warm-up from 0 to `lr`.", ge=0, le=1
    )
    min_lr_ratio: float = setting(
        0.0, "The cosine decays to `lr * min_lr_ratio` at the last step.", ge=0, le=1
    )
    weight_decay: float = setting(0.0, "AdamW decoupled weight decay.", ge=0)
    max_grad_norm: float = setting(1.0, "Gradient norm clip (0 disables).", ge=0)
    max_length: int = setting(
        512,
        "Max tokens of prompt + response; the prompt is cut on the left first.",
        ge=8,
        le=MAX_TOKENS,
    )
    eval_fraction: float = setting(
        0.1,
        "Share of the demonstrations held out for the eval loss (when none are given).",
        ge=0,
        lt=1,
    )
    eval_every: int = setting(
        0, "Steps between held-out evaluations (0: at the start and the end only).", ge=0
    )
    seed: int = setting(0, "Seed of the train/eval split and the shuffling.", ge=0, le=MAX_SEED)
    train_top_layers: int | None = setting(
        None, "Train only the top N blocks, the final norm and the head (None: all).", ge=0
    )
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in backward to save memory."
    )
    lora_r: int | None = setting(
        None,
        "Train LoRA adapters of this rank, merged into the model at the end (None: off).",
        ge=0,
    )
    lora_alpha: int = setting(16, "LoRA alpha.", ge=1)

    def validate(self) -> None:
        """Raise ValueError naming the first field out of its type or range, or a bad mix."""
        check_config(self)
        check_trained_parts(self)

    def memory(self) -> "MemoryConfig":
        return memory_of(self)


@dataclass
class DPOConfig:
    """Hyperparameters of listwise DPO on K-wise rankings with ties (``training.ml.dpo``)."""

    beta: float = setting(
        0.1,
        "DPO's beta: the implicit reward is beta x (log pi - log pi_ref); larger stays nearer "
        "the reference.",
        gt=0,
        le=100,
    )
    lr: float = setting(1e-6, "Peak AdamW learning rate (TRL's DPO default: 1e-6).", gt=0, le=1)
    epochs: float = setting(1.0, "Passes over the rankings (a fraction stops early).", gt=0, le=100)
    batch_size: int = setting(
        8,
        "Prompts per optimizer step (the global batch under several processes); each "
        "prompt's K responses are forwarded once.",
        ge=1,
        le=MAX_BATCH,
    )
    max_length: int = setting(
        512,
        "Tokens per prompt+response sequence; the prompt is cut from its start first.",
        ge=8,
        le=MAX_TOKENS,
    )
    warmup_steps: int = setting(
        0, "Linear warmup steps before the cosine decay.", ge=0, le=MAX_STEPS
    )
    min_lr_ratio: float = setting(0.1, "Cosine decay ends at this fraction of `lr`.", ge=0, le=1)
    weight_decay: float = setting(
        0.0, "AdamW weight decay on matrices (not on norms or biases).", ge=0
    )
    max_grad_norm: float | None = setting(1.0, "Gradient clipping norm (None: no clipping).", gt=0)
    max_sequences_per_forward: int | None = setting(
        None,
        "Split a step into forwards of at most this many sequences (a prompt's K responses "
        "stay together; gradients accumulate).",
        ge=1,
    )
    eval_fraction: float = setting(
        0.1,
        "Share of the prompts held out for the implicit-reward accuracy when no eval set is given.",
        ge=0,
        lt=1,
    )
    eval_every: int = setting(
        0, "Evaluate on the held-out rankings every N steps (0: at the start and end only).", ge=0
    )
    seed: int = setting(0, "Seed of the batch order and of the eval split.", ge=0, le=MAX_SEED)
    train_top_layers: int | None = setting(
        None, "Train only the top N blocks, the final norm and the head (None: all).", ge=0
    )
    gradient_checkpointing: bool = setting(
        False, "Recompute activations in backward to save memory."
    )
    lora_r: int | None = setting(
        None,
        "Train LoRA adapters (peft) of this rank on q/k/v/o, merged into the policy at the "
        "end (None: full fine-tuning).",
        ge=1,
    )
    lora_alpha: int = setting(16, "LoRA alpha (adapters scale by alpha / r).", ge=1)

    def validate(self) -> None:
        """Raise ValueError naming the first field out of its type or range, or a bad mix."""
        check_config(self)
        check_trained_parts(self)

    def memory(self) -> "MemoryConfig":
        return memory_of(self)


@dataclass
class RLOOConfig:
    """Hyper-parameters of one RLOO run: REINFORCE with a leave-one-out baseline over
    `num_samples` responses per prompt, no critic (Ahmadian et al. 2024)."""

    steps: int = setting(
        20, "number of RLOO steps (one rollout + one optimizer step each)", ge=1, le=MAX_STEPS
    )
    batch_size: int = setting(
        4,
        "prompts per step (global: split over the processes); each is sampled num_samples "
        "times, so a step has batch_size x num_samples episodes",
        ge=1,
        le=MAX_BATCH,
    )
    num_samples: int = setting(
        4,
        "responses sampled per prompt (N); each one's baseline is the mean reward of the "
        "other N - 1 (the run body passes the project's K)",
        ge=2,
        le=256,
    )
    lr: float = setting(1e-5, "Adam learning rate of the policy", gt=0, le=1)
    max_grad_norm: float = setting(1.0, "gradient clipping norm of the policy", gt=0)
    init_kl_coef: float = setting(0.2, "initial beta of the KL penalty to the reference", ge=0)
    kl_target: float | None = setting(
        6.0,
        "KL (nats per response) the adaptive controller aims at (the PPO controller); "
        "None keeps beta fixed",
        gt=0,
    )
    kl_horizon: int | None = setting(
        None,
        "horizon of the adaptive controller, in episodes; None: a quarter of the run's "
        "episodes (steps x batch_size x num_samples / 4)",
        ge=1,
    )
    normalize_advantages: bool = setting(
        False, "scale the step's advantages to unit standard deviation (mean kept at 0)"
    )
    missing_eos_penalty: float = setting(
        0.0, "subtracted from the score of a response that did not end with EOS"
    )
    max_new_tokens: int = setting(64, "length limit of a sampled response", ge=1, le=MAX_TOKENS)
    max_prompt_length: int = setting(256, "prompt tokens kept (the last ones)", ge=1, le=MAX_TOKENS)
    temperature: float = setting(
        1.0,
        "sampling temperature; log-probs are taken from the same tempered distribution "
        "(> 0: REINFORCE needs the sampling distribution)",
        gt=0,
    )
    top_p: float = setting(1.0, "nucleus sampling mass", ge=0, le=1)
    forward_batch_size: int = setting(
        8,
        "episodes per forward pass (sampling, scoring and the gradient pass)",
        ge=1,
        le=MAX_BATCH,
    )
    seed: int = setting(
        0, "seed of prompt order and sampling (each step derives its own)", ge=0, le=MAX_SEED
    )
    train_top_layers: int | None = setting(
        None, "train only the top N blocks (and head) of the policy", ge=0
    )
    lora_r: int | None = setting(
        None,
        "train LoRA adapters (peft) of this rank on a frozen policy base, merged at the end; "
        "a reference given as the policy itself is that base with the adapters off "
        "(None: full fine-tuning)",
        ge=1,
    )
    lora_alpha: int = setting(16, "LoRA alpha (adapters scale by alpha / r)", ge=1)
    lora_target_modules: str = setting(
        "q_proj,k_proj,v_proj,o_proj",
        "comma-separated names of the linear layers that get LoRA adapters, or 'all-linear'",
    )
    gradient_checkpointing: bool = setting(
        False, "recompute activations in backward to save memory"
    )

    def __post_init__(self) -> None:
        check_config(self)
        check_trained_parts(self)

    def validate(self) -> None:
        """Raise ValueError naming the first field out of its type or range."""
        self.__post_init__()


@dataclass
class BestOfNConfig(SFTConfig):
    """Best-of-N (rejection sampling, Llama 2 section 3.2.3): sample `n` responses for each
    of `num_prompts` prompts, keep the one the reward model scores highest, then SFT on the
    kept ones. The SFT fields are SFTConfig's (`sft_config()`)."""

    n: int = setting(4, "responses sampled per prompt; the best-scored one is kept", ge=1, le=256)
    num_prompts: int | None = setting(
        None,
        "prompts sampled (a seeded random subset; None or more than there are: all)",
        ge=1,
    )
    max_new_tokens: int = setting(64, "length limit of a sampled response", ge=1, le=MAX_TOKENS)
    max_prompt_length: int = setting(256, "prompt tokens kept (the last ones)", ge=1, le=MAX_TOKENS)
    temperature: float = setting(
        1.0, "sampling temperature (> 0: N greedy samples would all be the same)", gt=0
    )
    top_p: float = setting(1.0, "nucleus sampling mass", ge=0, le=1)
    sample_batch_size: int = setting(
        8, "responses per forward pass while sampling and scoring", ge=1, le=MAX_BATCH
    )

    def sft_config(self) -> SFTConfig:
        """The SFT part of the settings."""
        names = {f.name for f in dataclasses.fields(SFTConfig)}
        return SFTConfig(**{k: v for k, v in dataclasses.asdict(self).items() if k in names})
