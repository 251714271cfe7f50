"""RM, SFT, DPO and PPO under ``accelerate launch`` with 2 gloo processes give the one-process run.

``--batch-size`` is the global batch: the same command on 1 and 2 processes trains on the
same steps, so the saved weights agree up to float reduction order (DDP sums the two
ranks' gradients in another order than one backward does): max abs diff < 1e-5 on
weights of order 0.1 moved by lr 1e-3. The data sizes leave a short last step of ONE
prompt (or example), so one rank runs a zero-weighted backward there.

accelerate 1.15 runs ``launch --cpu --num_processes N`` as ONE process (its multi-CPU
path needs MPI), so the ranks are started with ``--multi_gpu`` (torchrun) and the command's
``--device cpu`` makes them one gloo group.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
ACCELERATE = Path(sys.executable).with_name("accelerate")
TOLERANCE = 1e-5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(
    args: list[str], *, processes: int = 1, config_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m training.ml ARGS`` alone, or under ``accelerate launch``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RLHF_STUDIO_THREADS": "1"}
    if processes == 1 and config_file is None:
        command = [sys.executable, "-m", "training.ml", *args]
    else:
        command = [str(ACCELERATE), "launch", "--num_machines", "1", "--dynamo_backend", "no"]
        command += ["--config_file", str(config_file)] if config_file else ["--multi_gpu"]
        command += ["--num_processes", str(processes), "--main_process_port", str(free_port())]
        command += ["--mixed_precision", "no", "-m", "training.ml", *args]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )


def result_line(completed: subprocess.CompletedProcess[str]) -> dict:
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, completed.stdout  # rank 0 alone prints the result
    return json.loads(lines[0])


def max_weight_diff(a: Path, b: Path) -> float:
    left, right = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert left.keys() == right.keys()
    return max(float((left[k] - right[k]).abs().max()) for k in left)


@pytest.fixture
def rankings(tmp_path: Path) -> Path:
    """9 prompts, K = 4 with ties: steps of 4, 4 and 1 prompts at --batch-size 4."""
    path = tmp_path / "rankings.jsonl"
    records = []
    for i in range(9):
        texts = [f"banana {i}", f"stone {i} " * (1 + i % 3), f"river banana {i}", f"cloud {i}"]
        records.append(
            {
                "prompt": f"Say something about {i}.",
                "responses": [{"id": f"r{j}", "text": t} for j, t in enumerate(texts)],
                "order": [["r0", "r2"], ["r1"], ["r3"]],
            }
        )
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def demos(tmp_path: Path) -> Path:
    """9 demonstrations of different lengths: micro-batches of 4, 4, then 1 at batch 4."""
    path = tmp_path / "demos.jsonl"
    lines = [
        {"prompt": f"Count to {i}.", "response": " ".join(str(n) for n in range(i + 2))}
        for i in range(9)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def rm_args(data: Path, out: Path, batch: int = 4) -> list[str]:
    return [
        "train-rm", "--model", "tiny", "--device", "cpu", "--data", str(data),
        "--out", str(out), "--batch-size", str(batch), "--lr", "1e-3", "--max-length", "32",
        "--eval-fraction", "0", "--max-sequences-per-forward", "4", "--seed", "3",
    ]  # fmt: skip


def sft_args(data: Path, out: Path) -> list[str]:
    return [
        "sft", "--model", "tiny", "--device", "cpu", "--data", str(data), "--out", str(out),
        "--batch-size", "4", "--grad-accum-steps", "2", "--epochs", "1", "--lr", "1e-3",
        "--max-length", "32", "--eval-fraction", "0", "--seed", "3",
    ]  # fmt: skip


def dpo_args(data: Path, out: Path) -> list[str]:
    return [
        "dpo", "--model", "tiny", "--device", "cpu", "--data", str(data), "--out", str(out),
        "--eval-data", str(data), "--batch-size", "4", "--lr", "1e-3", "--beta", "0.5",
        "--max-length", "32", "--max-sequences-per-forward", "4", "--seed", "3",
    ]  # fmt: skip


def test_reward_model_on_two_processes_matches_one(rankings: Path, tmp_path: Path) -> None:
    one = result_line(run(rm_args(rankings, tmp_path / "one")))
    two = result_line(run(rm_args(rankings, tmp_path / "two"), processes=2))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["steps"] == two["steps"] == 3 and one["pairs"] == two["pairs"] == 9 * 5
    assert two["rm/loss"] == pytest.approx(one["rm/loss"], abs=1e-5)  # global metrics
    assert two["rm/accuracy"] == one["rm/accuracy"]
    assert max_weight_diff(tmp_path / "one", tmp_path / "two") < TOLERANCE


def test_sft_on_two_processes_matches_one(demos: Path, tmp_path: Path) -> None:
    one = result_line(run(sft_args(demos, tmp_path / "one")))
    two = result_line(run(sft_args(demos, tmp_path / "two"), processes=2))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["sft/steps"] == two["sft/steps"] == 2
    assert two["sft/loss"] == pytest.approx(one["sft/loss"], abs=1e-5)
    assert two["sft/tokens"] == one["sft/tokens"]
    assert max_weight_diff(tmp_path / "one", tmp_path / "two") < TOLERANCE


def test_listwise_dpo_on_two_processes_matches_one(rankings: Path, tmp_path: Path) -> None:
    one = result_line(run(dpo_args(rankings, tmp_path / "one")))
    two = result_line(run(dpo_args(rankings, tmp_path / "two"), processes=2))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["steps"] == two["steps"] == 3 and one["dpo/pairs"] == two["dpo/pairs"] == 9 * 5
    assert two["dpo/loss"] == pytest.approx(one["dpo/loss"], abs=1e-5)  # global metrics
    assert two["dpo/eval_accuracy"] == one["dpo/eval_accuracy"]  # sharded reference + eval
    assert two["dpo/eval_loss"] == pytest.approx(one["dpo/eval_loss"], abs=1e-5)
    assert max_weight_diff(tmp_path / "one", tmp_path / "two") < TOLERANCE


def test_a_batch_not_divisible_by_the_processes_is_an_error(
    rankings: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Checked before the ranks form a group (so in this process, with the WORLD_SIZE
    that torchrun / accelerate launch export)."""
    from training.ml.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(rm_args(rankings, tmp_path / "rm", batch=3)) == 2
    message = "error: --batch-size 3 is the global batch and must be divisible by the 2 processes"
    assert message in capsys.readouterr().err.splitlines()
    assert not (tmp_path / "rm").exists()


def test_an_fsdp_config_fails_loudly_instead_of_running_ddp(rankings: Path, tmp_path: Path) -> None:
    config = ROOT / "training" / "ml" / "accelerate" / "fsdp.yaml"
    failed = run(rm_args(rankings, tmp_path / "rm"), processes=2, config_file=config)
    assert failed.returncode != 0
    assert (
        "error: the launcher asks for FSDP, which the trainers do not run yet; "
        "launch with training/ml/accelerate/ddp.yaml (DDP)"
    ) in failed.stderr.splitlines()
    assert not (tmp_path / "rm").exists()


@pytest.fixture
def prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.jsonl"
    lines = [{"prompt": f"Tell me about {word}."} for word in ("rivers", "stones", "clouds")]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def ppo_args(data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "ppo", "--model", "tiny", "--reward-model", "tiny", "--device", "cpu",
        "--data", str(data), "--out", str(out), "--steps", "2", "--batch-size", "4",
        "--mini-batch-size", "3", "--ppo-epochs", "2", "--max-new-tokens", "6",
        "--lr", "1e-3", "--init-kl-coef", "0.5", "--kl-horizon", "8", "--seed", "3", *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("variant", ["full+ptx", "lora"])
def test_ppo_on_two_processes_matches_one(
    variant: str, prompts: Path, demos: Path, tmp_path: Path
) -> None:
    """3 prompts at --batch-size 4: every step wraps around the prompt set; minibatches of
    3 of the 4 episodes leave one rank 1 row and the other 2 (or 0 and 3), so the losses
    must be normalised by the global token count; PPO-ptx shards its batch of 4 texts."""
    extra = ["--ptx-data", str(demos), "--ptx-coef", "0.5"] if variant == "full+ptx" else []
    extra += ["--lora-r", "4"] if variant == "lora" else []
    one = result_line(run(ppo_args(prompts, tmp_path / "one", *extra)))
    two = result_line(run(ppo_args(prompts, tmp_path / "two", *extra), processes=2))
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["step"] == two["step"] == 2
    # the same rollouts (one seed per episode), so the same global metrics and controller
    assert two["env/response_length"] == one["env/response_length"]
    assert two["env/score_mean"] == pytest.approx(one["env/score_mean"], abs=1e-5)
    assert two["objective/kl"] == pytest.approx(one["objective/kl"], abs=1e-5)
    assert two["kl_coef"] == pytest.approx(one["kl_coef"], rel=1e-6)
    assert one["kl_coef"] != 0.5  # the controller moved, from the global KL
    assert two["losses/policy_loss"] == pytest.approx(one["losses/policy_loss"], abs=1e-5)
    assert two["losses/value_loss"] == pytest.approx(one["losses/value_loss"], abs=1e-5)
    if variant == "full+ptx":
        assert two["losses/ptx_loss"] == pytest.approx(one["losses/ptx_loss"], abs=1e-5)
    assert max_weight_diff(tmp_path / "one", tmp_path / "two") < TOLERANCE


def test_ppo_refuses_a_global_batch_the_processes_cannot_split(
    prompts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """As for train-rm: checked before the ranks form a group or a model loads."""
    from training.ml.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    args = ppo_args(prompts, tmp_path / "policy")
    args[args.index("--batch-size") + 1] = "3"
    assert main(args) == 2
    message = "error: --batch-size 3 is the global batch and must be divisible by the 2 processes"
    assert message in capsys.readouterr().err.splitlines()
    assert not (tmp_path / "policy").exists()
