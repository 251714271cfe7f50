"""From a `--model` spec to a model: tiny, saved folders, refused and broken ones, and
the tokenizer cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.ml.chat import chat_text, encode_prompt
from training.ml.loading import load_causal_lm, load_tokenizer
from training.ml.model_files import ModelLoadError
from training.ml.saving import save_pretrained_atomic


def _logits(model, tokenizer) -> torch.Tensor:
    ids = torch.tensor([encode_prompt(tokenizer, "Hello there", 64)])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_tiny_has_the_real_tokenizer_and_left_padding(tiny_lm):
    model, tokenizer = tiny_lm
    assert len(tokenizer) == 49152 == model.config.vocab_size
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    assert tokenizer.pad_token_id is not None and tokenizer.padding_side == "left"
    assert tokenizer.eos_token == "<|im_end|>"


def test_tiny_is_deterministic_per_seed(tiny_lm):
    model, tokenizer = tiny_lm
    again, _ = load_causal_lm("tiny")
    other, _ = load_causal_lm("tiny:7")
    assert torch.equal(_logits(model, tokenizer), _logits(again, tokenizer))
    assert not torch.allclose(_logits(model, tokenizer), _logits(other, tokenizer))


def test_tiny_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_causal_lm("tiny")
    assert torch.equal(torch.rand(3), expected)


def test_folder_roundtrip_through_save_pretrained_atomic(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    out = save_pretrained_atomic(model, tokenizer, tmp_path / "policy", extra_files={"a.txt": "x"})
    assert (out / "model.safetensors").is_file() and (out / "a.txt").read_text() == "x"
    assert not list(tmp_path.glob(".policy.*")), "temporary folders must be gone"
    loaded, loaded_tok = load_causal_lm(str(out))
    assert torch.allclose(_logits(model, tokenizer), _logits(loaded, loaded_tok), atol=1e-6)
    assert loaded_tok.padding_side == "left"
    assert chat_text(loaded_tok, "hi") == chat_text(tokenizer, "hi")


def test_pickled_checkpoint_folder_is_refused(tiny_lm, tmp_path):
    model, _ = tiny_lm
    folder = tmp_path / "pickled"
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match=r"pickled.*pytorch_model\.bin"):
        load_causal_lm(str(folder))


def test_missing_and_corrupt_checkpoints_name_the_path(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    with pytest.raises(ModelLoadError, match="nowhere"):
        load_causal_lm(str(tmp_path / "nowhere"))
    folder = save_pretrained_atomic(model, tokenizer, tmp_path / "corrupt")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match=str(folder)):
        load_causal_lm(str(folder))
    with pytest.raises(ModelLoadError, match="tiny"):
        load_causal_lm("tiny:abc")


def test_load_honours_dtype():
    model, _ = load_causal_lm("tiny", device="cpu", dtype="bf16")
    assert next(model.parameters()).dtype == torch.bfloat16


def test_load_tokenizer_of_a_folder(tiny_lm, tmp_path: Path):
    model, tokenizer = tiny_lm
    folder = save_pretrained_atomic(model, tokenizer, tmp_path / "m")
    assert load_tokenizer(str(folder)).get_vocab() == tokenizer.get_vocab()


def test_tiny_tokenizer_cache_is_built_from_the_gguf(tiny_lm, tmp_path, monkeypatch):
    _, tokenizer = tiny_lm
    monkeypatch.setenv("RLHF_STUDIO_MODEL_CACHE", str(tmp_path / "models" / "smollm2"))
    built = load_tokenizer("tiny")  # no default cache here: reads the GGUF's tokenizer once
    assert (tmp_path / "models" / "smollm2-tokenizer" / "tokenizer.json").is_file()
    assert not (tmp_path / "models" / "smollm2").exists()  # weights were not de-quantised
    assert built.get_vocab() == tokenizer.get_vocab()
    assert chat_text(built, "hi") == chat_text(tokenizer, "hi")


@pytest.mark.parametrize("logits_to_keep", [1, 3])
def test_the_lm_head_gets_its_kept_positions_contiguous(logits_to_keep: int):
    """`logits_to_keep` slices the hidden states; a loaded model's head sees them
    contiguous (torch's CPU linear is slow and memory-hungry on a strided input when the
    weight is frozen, as a reference's or a LoRA base's is), with the same logits."""
    model, _ = load_causal_lm("tiny", dtype="bfloat16")
    model.requires_grad_(False)
    seen: list[bool] = []
    model.get_output_embeddings().register_forward_pre_hook(
        lambda _module, args: seen.append(args[0].is_contiguous())
    )
    ids = torch.randint(0, 1000, (3, 9))
    with torch.inference_mode():
        kept = model(input_ids=ids, logits_to_keep=logits_to_keep).logits
        every = model(input_ids=ids).logits
    assert seen == [True, True]
    torch.testing.assert_close(kept, every[:, -logits_to_keep:])
