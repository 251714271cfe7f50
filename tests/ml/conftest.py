"""Fixtures for the ML core: one tiny random Llama with the real SmolLM2 tokenizer.

``tiny_lm`` is session-scoped and must not be mutated; tests that train take
``fresh_tiny_lm`` (a new model each time, same deterministic weights).
"""

from __future__ import annotations

import os

import pytest
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from training.ml.loading import load_causal_lm

# several jobs share two cores: keep torch modest unless told otherwise
torch.set_num_threads(int(os.environ.get("RLHF_TEST_THREADS", "1")))
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()


@pytest.fixture(scope="session")
def tiny_lm() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of ``tiny``, shared by the session: read-only."""
    return load_causal_lm("tiny")


@pytest.fixture
def fresh_tiny_lm() -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A new ``tiny`` model for tests that change weights."""
    return load_causal_lm("tiny")
