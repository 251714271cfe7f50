"""A sequence-classification folder as a text classifier (the moderation filter's optional
model): label probabilities for a batch of texts.

The folder is any ``AutoModelForSequenceClassification`` ``save_pretrained`` folder in
safetensors (pickled checkpoints are refused); its ``id2label`` names the labels. A
multi-label model (``problem_type == "multi_label_classification"``) gets a sigmoid per
label, any other a softmax over the labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.ml.devices import as_device
from training.ml.model_files import ModelLoadError, check_safetensors_folder
from training.ml.tokenization import tokenizer_from_folder


def load_classifier(
    folder: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    path = check_safetensors_folder(Path(folder))
    tokenizer = tokenizer_from_folder(path)
    tokenizer.padding_side = "right"  # an encoder's [CLS] stays at position 0
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), use_safetensors=True)
    except Exception as exc:  # a folder of another kind, or broken files: name it
        raise ModelLoadError(f"cannot load a sequence classifier from {path}: {exc}") from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.to(as_device(device))
    model.eval()
    return model, tokenizer


@torch.inference_mode()
def label_probabilities(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    batch_size: int = 16,
    max_length: int = 512,
) -> list[dict[str, float]]:
    """For each text, ``{label: probability}`` over the model's ``id2label``."""
    id2label: dict = dict(model.config.id2label or {})
    labels = [str(id2label.get(i, f"LABEL_{i}")) for i in range(int(model.config.num_labels or 0))]
    multi = model.config.problem_type == "multi_label_classification"
    device = next(model.parameters()).device
    out: list[dict[str, float]] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        ).to(device)
        logits = model(**batch).logits.float()
        probs = torch.sigmoid(logits) if multi else torch.softmax(logits, dim=-1)
        out.extend(dict(zip(labels, row.tolist(), strict=True)) for row in probs)
    return out
