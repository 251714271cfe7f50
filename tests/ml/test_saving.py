"""Atomic saving: a folder appears whole or not at all."""

from __future__ import annotations

import pytest

from training.ml.saving import save_pretrained_atomic


def test_save_replaces_an_existing_folder(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    target = tmp_path / "policy"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    save_pretrained_atomic(model, tokenizer, target)
    assert not (target / "stale.txt").exists()
    assert (target / "model.safetensors").is_file()


def test_failed_save_leaves_the_old_folder_in_place(tiny_lm, tmp_path):
    model, tokenizer = tiny_lm
    target = save_pretrained_atomic(model, tokenizer, tmp_path / "policy")
    with pytest.raises(TypeError):
        save_pretrained_atomic(model, tokenizer, target, extra_files={"bad": 123})  # type: ignore[dict-item]
    assert (target / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["policy"]
