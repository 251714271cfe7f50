"""The reward model r(x, y) (InstructGPT section 3.5): a scalar head on the SFT backbone.

The artifact is a plain transformers ``*ForSequenceClassification`` (num_labels=1)
``save_pretrained`` folder in safetensors, readable by TRL. Our scores do not depend on
transformers' pad-token pooling: the score is read at the last attended token of each
row, found from the attention mask, so left- and right-padded batches agree. A constant
``config.rlhf_reward_offset`` (set after training so SFT samples average 0) is added.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from transformers import (
    AutoModelForSequenceClassification,
    DynamicCache,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from training.ml.devices import as_device, resolve_dtype
from training.ml.loading import load_causal_lm, pretrained_folder
from training.ml.model_files import ModelLoadError
from training.ml.saving import save_pretrained_atomic
from training.ml.tiny import is_tiny
from training.ml.tokenization import tokenizer_from_folder

if TYPE_CHECKING:
    from training.ml.reward.batches import SharedPrefix

OFFSET_KEY = "rlhf_reward_offset"


def last_token_index(attention_mask: Tensor) -> Tensor:
    """(B,) position of the last attended token of each row, for left or right padding."""
    width = attention_mask.shape[-1]
    return width - 1 - attention_mask.flip(-1).argmax(dim=-1)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """(B, T) positions counted over attended tokens, so left padding does not shift them."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


class RewardModel(nn.Module):
    """r(x, y): a transformers sequence-classification model read at the last real token."""

    def __init__(self, seq: PreTrainedModel) -> None:
        super().__init__()
        if seq.config.num_labels != 1:
            raise ValueError(
                f"a reward model has one output, got num_labels={seq.config.num_labels}"
            )
        self.seq: nn.Module = seq  # a transformers model, or its peft (LoRA) wrapper

    @classmethod
    def from_causal_lm(cls, lm: PreTrainedModel) -> RewardModel:
        """Initialise from an (SFT) causal LM: copy its backbone, replace the unembedding by a
        scalar head with std 1/sqrt(d+1) (Stiennon et al. 2020; OpenAI lm-human-preferences)."""
        config = copy.deepcopy(lm.config)
        config.num_labels = 1
        config.architectures = None
        seq = AutoModelForSequenceClassification.from_config(config, dtype=lm.dtype)
        backbone = getattr(lm, lm.base_model_prefix)
        getattr(seq, seq.base_model_prefix).load_state_dict(backbone.state_dict())
        head: nn.Linear = seq.score
        nn.init.normal_(head.weight, std=1.0 / math.sqrt(head.in_features + 1))
        setattr(seq.config, OFFSET_KEY, 0.0)
        return cls(seq.to(lm.device))

    @property
    def reward_offset(self) -> float:
        return float(getattr(self._base().config, OFFSET_KEY, 0.0) or 0.0)

    @reward_offset.setter
    def reward_offset(self, value: float) -> None:
        setattr(self._base().config, OFFSET_KEY, float(value))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save_pretrained(self, save_directory: str | Path, **kwargs: Any) -> None:
        """Save the sequence-classification model (LoRA merged into a copy), offset included,
        so ``saving.save_pretrained_atomic`` can write a RewardModel directly."""
        setattr(self._base().config, OFFSET_KEY, self.reward_offset)
        merge = (
            getattr(copy.deepcopy(self.seq), "merge_and_unload", None) if self._is_peft() else None
        )
        seq = merge() if callable(merge) else self._base()
        seq.save_pretrained(str(save_directory), **kwargs)

    def _is_peft(self) -> bool:
        return callable(getattr(self.seq, "get_base_model", None))

    def _base(self) -> PreTrainedModel:
        """The sequence-classification model, under any LoRA (peft) wrapper."""
        unwrap = getattr(self.seq, "get_base_model", None)
        return cast(PreTrainedModel, unwrap() if callable(unwrap) else self.seq)

    def token_values(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """(B, T) float32 head output plus offset at every position (PPO's critic values)."""
        base = self._base()
        backbone = getattr(base, base.base_model_prefix)
        hidden = backbone(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,
        ).last_hidden_state  # (B, T, H)
        head = base.get_submodule("score")  # Linear(H, 1), or its LoRA modules_to_save copy
        return head(hidden).squeeze(-1).float() + self.reward_offset  # (B, T)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor, prefix: SharedPrefix | None = None
    ) -> Tensor:
        """(B,) reward: the head at the last non-pad token of each row, plus the offset.

        With ``prefix``, row ``n`` is the sequence ``prefix[prefix.rows[n]] + input_ids[n]``
        (``reward.batches.SharedPrefix``): each prefix row is forwarded once and the rows
        continue from its key/value cache, so a prompt shared by K responses costs one
        forward instead of K, for the same scores and gradients up to float rounding.
        """
        if prefix is not None and self._base().is_activation_checkpointing:
            # checkpointed blocks drop the cache: forward the joined sequences instead
            input_ids = torch.cat([prefix.input_ids[prefix.rows], input_ids], dim=1)
            attention_mask = torch.cat([prefix.attention_mask[prefix.rows], attention_mask], 1)
            prefix = None
        if prefix is None:
            values = self.token_values(input_ids, attention_mask)  # (B, T)
        else:
            values = self._values_after_prefix(input_ids, attention_mask, prefix)
        last = last_token_index(attention_mask)  # (B,)
        return values.gather(1, last[:, None]).squeeze(1)

    def _values_after_prefix(
        self, input_ids: Tensor, attention_mask: Tensor, prefix: SharedPrefix
    ) -> Tensor:
        """(N, T) values of the rows that continue the shared prefixes (B, P)."""
        base = self._base()
        backbone = getattr(base, base.base_model_prefix)
        cache = DynamicCache(config=base.config)
        backbone(
            input_ids=prefix.input_ids,
            attention_mask=prefix.attention_mask,
            position_ids=position_ids_from_mask(prefix.attention_mask),
            past_key_values=cache,
            use_cache=True,
        )
        cache.batch_select_indices(prefix.rows)  # (B, ...) -> (N, ...), differentiable
        mask = torch.cat([prefix.attention_mask[prefix.rows], attention_mask], dim=1)
        hidden = backbone(  # the prefix's padding sits between it and the row: masked
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=position_ids_from_mask(mask)[:, prefix.input_ids.shape[1] :],
            past_key_values=cache,
            use_cache=True,
        ).last_hidden_state  # (N, T, H)
        head = base.get_submodule("score")
        return head(hidden).squeeze(-1).float() + self.reward_offset  # (N, T)


# --------------------------------------------------------------------------- load / save


def is_reward_model_folder(path: str | Path) -> bool:
    """True for a save_pretrained folder holding a *ForSequenceClassification with 1 label."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError):
        return False  # not readable: the causal-LM loader reports it with the path
    architectures = data.get("architectures") or []
    return any(name.endswith("ForSequenceClassification") for name in architectures)


def load_reward_model(
    spec: str, *, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None
) -> tuple[RewardModel, PreTrainedTokenizerBase]:
    """An RM folder, or any ``loading.load_causal_lm`` spec (the RM is then initialised
    from that LM). Safetensors only: a pickled checkpoint raises ModelLoadError."""
    target = as_device(device)
    torch_dtype = resolve_dtype(dtype, target)
    if not is_tiny(spec) and spec != "default" and is_reward_model_folder(spec):
        folder = pretrained_folder(spec)  # refuses pickles, needs *.safetensors
        tokenizer = tokenizer_from_folder(folder)
        try:
            seq = AutoModelForSequenceClassification.from_pretrained(
                str(folder), dtype=torch_dtype, use_safetensors=True
            )
        except Exception as exc:  # report the folder, not a traceback
            raise ModelLoadError(f"cannot load reward model from {folder}: {exc}") from exc
        model = RewardModel(seq).to(target)
    else:
        lm, tokenizer = load_causal_lm(spec, device=target, dtype=torch_dtype)
        model = RewardModel.from_causal_lm(lm)
        del lm
    model.eval()
    return model, tokenizer


def save_reward_model(
    model: RewardModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | Path,
    *,
    extra_files: dict[str, str | bytes] | None = None,
) -> Path:
    """Write the RM as a safetensors save_pretrained folder (atomically: temp, then rename).

    The saved tokenizer pads with a token other than EOS when it can, and the config names
    it, so transformers' own pad-token pooling (TRL, pipelines) reads the same last token.
    """
    saved_tokenizer = copy.deepcopy(tokenizer)
    eos = saved_tokenizer.eos_token_id
    if saved_tokenizer.pad_token_id == eos and saved_tokenizer.unk_token_id not in (None, eos):
        saved_tokenizer.pad_token = saved_tokenizer.unk_token
    saved_tokenizer.padding_side = "right"
    model._base().config.pad_token_id = saved_tokenizer.pad_token_id
    return save_pretrained_atomic(model, saved_tokenizer, out_dir, extra_files=extra_files)
