"""Prompts through the chat template."""

from __future__ import annotations

from training.ml.chat import chat_text, encode_prompt


def test_chat_prompt_and_left_truncation(tiny_lm):
    _, tokenizer = tiny_lm
    text = chat_text(tokenizer, "What is 2+2?")
    assert text == chat_text(tokenizer, [{"role": "user", "content": "What is 2+2?"}])
    assert "What is 2+2?" in text and text.endswith("<|im_start|>assistant\n")
    full = encode_prompt(tokenizer, "What is 2+2?", 10_000)
    assert encode_prompt(tokenizer, "What is 2+2?", 5) == full[-5:]
