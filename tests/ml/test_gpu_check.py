"""`gpu-check`: exits 3 without CUDA; its stages run (and check) on a tiny shape on CPU,
with bf16 autocast, so the code the first GPU machine runs is tested here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from training.ml.fsdp_check import FSDP_CONFIG, fsdp_command, fsdp_report
from training.ml.gpu_check import CheckFailed, CheckSettings, _check_trained, run_checks


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_in_one_line_and_exits_3() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "training.ml", "gpu-check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 3
    assert done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1 and "no CUDA" in done.stderr


def test_every_stage_runs_in_bf16_on_a_tiny_shape() -> None:
    settings = CheckSettings(device="cpu", dtype=torch.bfloat16, batch=4, new_tokens=6, steps=2)
    report = run_checks(["tiny"], settings)
    figures = report["tiny"]
    json.dumps(report)  # one JSON line
    for stage in ("generate", "sft", "rm", "ppo"):
        assert figures[f"{stage}_tokens_per_s"] > 0
    for stage in ("sft", "rm", "ppo"):
        assert figures[f"{stage}_min_changed"] >= 0.9


def test_a_stuck_matrix_or_a_nan_fails_the_check() -> None:
    weight = torch.zeros(4, 4)
    with pytest.raises(CheckFailed, match="moved"):
        _check_trained({"w": weight}, {"w": weight.clone()}, "sft")
    with pytest.raises(CheckFailed, match="non-finite"):
        _check_trained({"w": torch.full((4, 4), float("nan"))}, {"w": weight}, "rm")


def test_it_runs_without_django_or_gguf() -> None:
    """A bare GPU box has torch, transformers, accelerate, peft, safetensors only."""
    code = (
        "import sys; sys.modules['gguf'] = None; sys.modules['django'] = None\n"
        "import training.ml.gpu_check, training.ml.commands.gpu_check, training.ml.fsdp_check\n"
        "print('ok')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr


def test_fsdp_is_skipped_below_two_gpus_and_says_why() -> None:
    for devices in (0, 1):
        report = fsdp_report(devices=devices, shape="135m", steps=3)
        assert report == {
            "skipped": f"FSDP shards over 2+ CUDA devices; this machine has {devices}"
        }


def test_the_fsdp_stage_launches_the_shipped_config_on_every_gpu() -> None:
    command = fsdp_command(processes=8, shape="1b", steps=3, port=29500)
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1] == str(FSDP_CONFIG)
    assert "distributed_type: FSDP" in FSDP_CONFIG.read_text()
    assert command[command.index("--num_processes") + 1] == "8"
    assert command[-6:] == ["-m", "training.ml.fsdp_check", "--shape", "1b", "--steps", "3"]


def test_the_fsdp_stage_fails_when_accelerate_does_not_set_up_fsdp() -> None:
    """Run without the launcher (as a wrong config would), a rank reports it and exits 1."""
    done = subprocess.run(
        [sys.executable, "-m", "training.ml.fsdp_check", "--shape", "tiny", "--steps", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout) == {"ok": False, "error": "accelerate set up NO, not FSDP"}
