"""``python -m training.ml train-rm`` / ``eval-rm`` end to end on `tiny`, as a user runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RLHF_STUDIO_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "training.ml", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def kwise_record(index: int) -> dict:
    """Four responses; the two mentioning "banana" are tied best."""
    texts = [f"banana {index}", f"stone {index}", f"river banana {index}", f"cloud {index}"]
    return {
        "prompt": f"Say something about {index}.",
        "responses": [{"id": f"r{i}", "text": text} for i, text in enumerate(texts)],
        "order": [["r0", "r2"], ["r1", "r3"]],
        "labeler": f"ann{index % 2}",
    }


@pytest.fixture
def kwise_file(tmp_path: Path) -> Path:
    path = tmp_path / "rankings.jsonl"
    path.write_text("".join(json.dumps(kwise_record(i)) + "\n" for i in range(12)))
    return path


def last_json_line(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def test_train_rm_then_eval_rm(kwise_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "rm"
    trained = cli(
        "train-rm",
        "--model",
        "tiny",
        "--data",
        str(kwise_file),
        "--out",
        str(out),
        "--batch-size",
        "4",
        "--lr",
        "1e-3",
        "--max-length",
        "48",
        "--device",
        "cpu",
        "--eval-fraction",
        "0.25",
    )
    assert trained.returncode == 0, trained.stderr
    result = last_json_line(trained.stdout)
    assert result["status"] == "completed" and result["out"] == str(out)
    assert result["pairs"] == 9 * 4 and result["steps"] == 3  # 9 training prompts, 4 pairs each
    assert 0.0 <= result["rm/eval_accuracy"] <= 1.0
    assert "train-rm" in trained.stderr  # the progress bar goes to stderr
    assert (out / "model.safetensors").is_file()
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["rlhf_reward_offset"] == pytest.approx(result["reward_offset"])
    assert not list(tmp_path.glob(".rm.tmp-*"))

    evaluated = cli("eval-rm", "--model", str(out), "--data", str(kwise_file), "--max-length", "48")
    assert evaluated.returncode == 0, evaluated.stderr
    report = last_json_line(evaluated.stdout)
    assert isinstance(report["accuracy"], float) and report["pairs"] == 12 * 4
    assert set(report["by_labeler"]) == {"ann0", "ann1"}


def test_train_rm_lora_alpha_is_the_configs(kwise_file: Path, tmp_path: Path) -> None:
    """``--lora-alpha`` reaches the trainer's config (it was accepted and ignored)."""
    out = tmp_path / "rm"
    trained = cli(
        "train-rm",
        "--model",
        "tiny",
        "--data",
        str(kwise_file),
        "--out",
        str(out),
        "--batch-size",
        "6",
        "--max-length",
        "32",
        "--device",
        "cpu",
        "--lora-r",
        "2",
        "--lora-alpha",
        "8",
    )
    assert trained.returncode == 0, trained.stderr
    summary = json.loads((out / "rm_metrics.json").read_text())
    assert summary["config"]["lora_r"] == 2 and summary["config"]["lora_alpha"] == 8


def test_train_rm_on_a_pair_file(tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.jsonl"
    hh = "\n\nHuman: Hi {0}\n\nAssistant:"
    rows = [
        {"chosen": hh.format(i) + " Hello!", "rejected": hh.format(i) + " Go."} for i in range(6)
    ]
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    trained = cli(
        "train-rm",
        "--model",
        "tiny",
        "--data",
        str(pairs),
        "--out",
        str(tmp_path / "rm"),
        "--batch-size",
        "2",
        "--max-length",
        "48",
        "--device",
        "cpu",
    )
    assert trained.returncode == 0, trained.stderr
    result = last_json_line(trained.stdout)
    assert result["pairs"] == 6 and result["steps"] == 3  # --batch-size counts pairs here


def test_malformed_line_stops_before_training_with_its_line_number(
    kwise_file: Path, tmp_path: Path
) -> None:
    bad = dict(kwise_record(99), order=[["r0", "r2"], ["r1"]])  # r3 missing from the order
    kwise_file.write_text(kwise_file.read_text() + json.dumps(bad) + "\n")
    out = tmp_path / "rm"
    trained = cli("train-rm", "--model", "tiny", "--data", str(kwise_file), "--out", str(out))
    assert trained.returncode != 0
    assert f"{kwise_file}, line 13" in trained.stderr and "'r3' is missing" in trained.stderr
    assert "Traceback" not in trained.stderr and trained.stdout == ""
    assert not out.exists()


def test_eval_rm_refuses_a_pickled_checkpoint(kwise_file: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"architectures": ["LlamaForSequenceClassification"], "model_type": "llama"})
    )
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
    evaluated = cli("eval-rm", "--model", str(folder), "--data", str(kwise_file))
    assert evaluated.returncode != 0
    assert "pickle" in evaluated.stderr and "Traceback" not in evaluated.stderr
