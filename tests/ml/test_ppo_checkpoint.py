"""The housekeeping of PPO checkpoint folders: naming, setting aside, cleaning up."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from training.ml.configs import PPOConfig
from training.ml.ppo_checkpoint import (
    CheckpointError,
    remove_checkpoints,
    run_checkpoint_dir,
    set_aside_foreign_checkpoints,
    set_aside_newest_checkpoint,
)


def _checkpoint(root: Path, step: int, config: dict | None = None) -> Path:
    folder = root / f"step-{step:06d}"
    folder.mkdir(parents=True)
    (folder / "state.json").write_text(json.dumps({"config": config} if config else {}))
    return folder


def test_a_run_s_folder_is_keyed_by_round_rm_start_and_rules(tmp_path: Path) -> None:
    ids = {"round_id": 3, "reward_model_id": 7, "init_id": 2}
    plain = run_checkpoint_dir(tmp_path, **ids)
    assert plain == tmp_path / "round-3-rm-7-from-2"
    a = run_checkpoint_dir(tmp_path, **ids, rules=[{"type": "length", "weight": 1}])
    b = run_checkpoint_dir(tmp_path, **ids, rules=[{"type": "length", "weight": 2}])
    assert len({plain, a, b}) == 3 and a.name.startswith("round-3-rm-7-from-2-rules-")


def test_a_corrupt_checkpoint_is_set_aside(tmp_path: Path) -> None:
    lines: list[str] = []
    for step in (2, 4):
        _checkpoint(tmp_path, step)
    error = CheckpointError("cannot resume from checkpoint step-000004: truncated")
    set_aside_newest_checkpoint(tmp_path, error, lines.append)
    assert sorted(p.name for p in tmp_path.glob("step-*")) == ["step-000002"]
    aside = [p.name for p in tmp_path.glob(".corrupt-*")]
    assert len(aside) == 1 and aside[0].startswith(".corrupt-step-000004")
    assert "truncated" in lines[0]
    set_aside_newest_checkpoint(tmp_path, error, lines.append)
    with pytest.raises(CheckpointError):  # none left: the error is the run's
        set_aside_newest_checkpoint(tmp_path, error, lines.append)


def test_checkpoints_of_another_config_are_superseded(tmp_path: Path) -> None:
    config = PPOConfig(steps=4)
    lines: list[str] = []
    _checkpoint(tmp_path, 2, {**asdict(config), "steps": 8, "checkpoint_every": 1})
    _checkpoint(tmp_path, 4, {**asdict(config), "lr": 3e-4})
    set_aside_foreign_checkpoints(tmp_path, config, lines.append)
    assert [p.name for p in tmp_path.glob("step-*")] == ["step-000002"]  # steps may change
    assert lines == ["checkpoint step-000004 was trained with other lr; starting over"]
    remove_checkpoints(tmp_path)
    assert [p.name[:21] for p in tmp_path.iterdir()] == [".superseded-step-0000"]
