"""``python -m training.ml generate|sft`` end to end, in a subprocess, on ``tiny``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RLHF_STUDIO_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "training.ml", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def last_json_line(stdout: str) -> dict:
    lines = stdout.strip().splitlines()
    assert lines, "no output on stdout"
    return json.loads(lines[-1])


@pytest.fixture
def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": "Name a fruit."}, {"prompt": [{"role": "user", "content": "Hi!"}]}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def demos_file(tmp_path: Path) -> Path:
    path = tmp_path / "demos.jsonl"
    rows = [{"prompt": f"Say {w}.", "response": f"{w}!"} for w in ["fig", "kiwi", "plum", "lime"]]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_help_lists_the_commands():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("generate", "sft"):
        assert command in result.stdout


def test_generate_writes_rows_for_import_responses(tmp_path, prompts_file):
    out = tmp_path / "samples.jsonl"
    result = run_cli(
        "generate",
        "--model",
        "tiny",
        "--data",
        str(prompts_file),
        "--k",
        "3",
        "--out",
        str(out),
        "--max-new-tokens",
        "4",
        "--seed",
        "5",
        "--device",
        "cpu",
    )
    assert result.returncode == 0, result.stderr
    metrics = last_json_line(result.stdout)
    assert metrics["prompts"] == 2 and metrics["responses"] == 6 and metrics["tokens_per_s"] > 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["prompt"] for r in rows] == ["Name a fruit.", [{"role": "user", "content": "Hi!"}]]
    for row in rows:
        assert len(row["responses"]) == 3
        for response in row["responses"]:
            assert set(response) == {"id", "text", "token_count", "finished", "seed"}
            assert 1 <= response["token_count"] <= 4
    ids = [r["id"] for row in rows for r in row["responses"]]
    assert len(set(ids)) == 6
    assert [r["seed"] for r in rows[1]["responses"]] == [8, 9, 10]


def test_sft_writes_a_folder_that_generate_can_load(tmp_path, demos_file, prompts_file):
    out = tmp_path / "sft-policy"
    result = run_cli(
        "sft",
        "--model",
        "tiny",
        "--data",
        str(demos_file),
        "--out",
        str(out),
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--lr",
        "1e-3",
        "--train-top-layers",
        "1",
        "--seed",
        "1",
    )
    assert result.returncode == 0, result.stderr
    metrics = last_json_line(result.stdout)
    assert metrics["status"] == "completed" and metrics["out"] == str(out)
    assert metrics["sft/steps"] == 4 and metrics["sft/eval_examples"] == 1
    assert (out / "model.safetensors").is_file() and (out / "sft_metrics.json").is_file()
    assert not list(tmp_path.glob(".sft-policy.*"))
    samples = tmp_path / "s.jsonl"
    again = run_cli(
        "generate",
        "--model",
        str(out),
        "--data",
        str(prompts_file),
        "--k",
        "2",
        "--out",
        str(samples),
        "--max-new-tokens",
        "2",
    )
    assert again.returncode == 0, again.stderr
    assert len(samples.read_text().splitlines()) == 2


@pytest.mark.parametrize("command", ["generate", "sft"])
def test_a_malformed_line_stops_before_training(tmp_path, command):
    data = tmp_path / "data.jsonl"
    data.write_text('{"prompt": "ok", "response": "fine"}\n\n{"prompt": "broken"\n')
    out = tmp_path / "out"
    result = run_cli(command, "--model", "tiny", "--data", str(data), "--out", str(out))
    assert result.returncode == 2
    assert f"{data}, line 3" in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()


def test_a_pickled_checkpoint_is_refused(tmp_path, prompts_file, tiny_lm):
    model, _ = tiny_lm
    folder = tmp_path / "pickled"
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    result = run_cli(
        "generate",
        "--model",
        str(folder),
        "--data",
        str(prompts_file),
        "--out",
        str(tmp_path / "s.jsonl"),
    )
    assert result.returncode == 2
    assert "pytorch_model.bin" in result.stderr and "Traceback" not in result.stderr
