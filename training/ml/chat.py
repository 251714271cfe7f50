"""Prompts as the model reads them: a string or a chat, through the chat template."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase


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
