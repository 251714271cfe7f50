"""What a model on disk must look like before anything loads it (standard library only).

A ``save_pretrained`` folder holds a ``config.json`` and safetensors weights (a folder of
pickled weights only is refused: unpickling runs code); a ``.gguf`` file starts with the
GGUF magic bytes. Both the loaders (``training.ml.loading``) and the web door that accepts a
project's model spec call these, so they accept and refuse the same files.
"""

from pathlib import Path

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
GGUF_MAGIC = b"GGUF"


class ModelLoadError(ValueError):
    """A model spec could not be resolved or loaded; the message names the path."""


def check_safetensors_folder(folder: Path) -> Path:
    """``folder`` if it is a save_pretrained folder with safetensors weights."""
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"not a save_pretrained folder (no config.json): {folder}")
    if any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file():
        return folder
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise ModelLoadError(
            f"refusing pickled checkpoint {folder / pickled[0]}: only safetensors "
            "checkpoints are loaded (convert it with safetensors first)"
        )
    raise ModelLoadError(f"no *.safetensors weights in model folder {folder}")


def check_gguf_file(path: Path) -> Path:
    """``path`` if it is a file that starts with the GGUF magic bytes."""
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    with path.open("rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ModelLoadError(f"not a GGUF file (no GGUF magic bytes): {path}")
    return path
