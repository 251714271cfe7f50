"""``python -m training.ml ppo``: a run on tiny, and bad input refused before any model loads."""

import json
from pathlib import Path

import pytest

from training.ml.cli import main


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"prompt": f"Tell me about {i}."}) + "\n" for i in range(6))
    )
    demos = tmp_path / "demos.jsonl"
    demos.write_text(json.dumps({"prompt": "Hi", "response": "Hello there!"}) + "\n")
    return {"prompts": prompts, "demos": demos, "out": tmp_path / "policy"}


def test_ppo_command_writes_the_policy_and_a_json_line(files, capsys) -> None:
    out = files["out"]
    code = main(
        [
            "ppo",
            "--model",
            "tiny",
            "--reward-model",
            "tiny",
            "--data",
            str(files["prompts"]),
            "--out",
            str(out),
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--mini-batch-size",
            "2",
            "--ppo-epochs",
            "1",
            "--max-new-tokens",
            "4",
            "--rule",
            "length:<=3:-1",
            "--ptx-data",
            str(files["demos"]),
            "--ptx-coef",
            "0.1",
            "--checkpoint-every",
            "1",
            "--kl-target",
            "none",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["status"] == "completed" and result["step"] == 2
    assert result["objective/kl_coef"] == result["kl_coef"] == 0.2  # fixed beta
    assert "losses/ptx_loss" in result and "env/rm_score" in result
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    saved = json.loads((out / "ppo_metrics.json").read_text())
    assert saved["config"]["kl_target"] is None
    assert not Path(f"{out}.checkpoints").exists()  # removed after success
    assert not list(out.parent.glob(".*tmp*"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--rule", "regex:([:1"], "--rule: rule regex:([: invalid regular expression"),
        ([], "give --reward-model, --rule, or both"),
        (["--rule", "length:<=3:-1", "--ptx-coef", "0.5"], "--ptx-data and --ptx-coef"),
        (["--rule", "length:<=3:-1", "--batch-size", "0"], "batch_size must be >= 1"),
        (["--rule", "length:<=3:-1", "--train-top-layers", "-1"], "--train-top-layers"),
    ],
)
def test_bad_flags_stop_with_a_clear_message(files, capsys, extra, message) -> None:
    argv = ["ppo", "--model", "tiny", "--data", str(files["prompts"]), "--out", str(files["out"])]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert not files["out"].exists()


def test_bad_prompt_line_is_named(files, capsys) -> None:
    files["prompts"].write_text('{"prompt": "ok"}\n{"text": "no prompt key"}\n')
    argv = ["ppo", "--model", "tiny", "--rule", "length:<=3:-1"]
    assert main([*argv, "--data", str(files["prompts"]), "--out", str(files["out"])]) == 2
    assert "prompts.jsonl, line 2" in capsys.readouterr().err


def test_stale_checkpoints_need_resume(files, capsys, tmp_path: Path) -> None:
    stale = tmp_path / "ckpt" / "step-000003"
    stale.mkdir(parents=True)
    (stale / "state.json").write_text("{}")
    argv = ["ppo", "--model", "tiny", "--rule", "length:<=3:-1", "--checkpoint-every", "1"]
    argv += ["--checkpoint-dir", str(tmp_path / "ckpt")]
    assert main([*argv, "--data", str(files["prompts"]), "--out", str(files["out"])]) == 2
    assert "pass --resume" in capsys.readouterr().err
