"""Runs over RLHF_GPUS_PER_RUN processes: the gpu worker's body launches `accelerate launch
--num_processes 2 -m training.ml train-rm ...` as a child (gloo ranks on CPU, the tiny model).

The launched RM equals the in-process one for the same global batch: the saved weights agree
up to float reduction order (DDP sums the two ranks' gradients in another order than one
backward does; the same 1e-5 as tests/ml/test_distributed.py), and so does the reward
offset calibrated on the round's samples. A cancel, and a rank killed with SIGKILL, end every
process of the launch and publish nothing. A launched PPO run (`ppo` on 2 ranks, each rolling
out half of every batch) publishes the in-process run's policy within the same 1e-5.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from tests.factories import (
    MembershipFactory,
    ProjectFactory,
    RankingFactory,
    RankingTaskFactory,
    RoundFactory,
)
from training.models import MetricPoint, ModelVersion, TrainingRun
from training.services import launcher, registry, runs
from training.services.run_bodies.rm import rm_body

TOLERANCE = 1e-5
PPO_CONFIG = {
    "steps": 2, "batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 1, "lr": 1e-3,
    "max_new_tokens": 4, "checkpoint_every": 1,
}  # fmt: skip
RM_CONFIG = {"batch_size": 2, "lr": 1e-3, "max_length": 32, "max_sequences_per_forward": 4}


@pytest.fixture
def rm_round(db, settings, tmp_path):
    """A round of 7 ranked prompts (K = 3, a tie in one ranking of two), tiny base model."""
    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    settings.RLHF_PROGRESS_INTERVAL = 0.2
    project = ProjectFactory(base_model="tiny", k=3, overlap=1)
    labeler = MembershipFactory(project=project, role="labeler").user
    round_ = RoundFactory(project=project, stage="training_rm")
    for i in range(7):
        texts = [f"banana {i}", "stone " * (1 + i % 3), f"river banana {i}"]
        task = RankingTaskFactory(project=project, round=round_, responses=texts)
        ids = list(task.responses.order_by("position").values_list("id", flat=True))
        groups = [[ids[0]], ids[1:]] if i % 2 else [[ids[2]], [ids[0]], [ids[1]]]
        RankingFactory(task=task, labeler=labeler, tie_groups=groups)
    return round_


def _rm_run(round_, **config) -> TrainingRun:
    return TrainingRun.objects.create(
        project=round_.project, round=round_, kind="rm", config={**RM_CONFIG, **config}
    )


def _weights(version: ModelVersion) -> dict:
    return load_file(Path(version.artifact) / "model.safetensors")


def _offset(version: ModelVersion) -> float:
    return json.loads((Path(version.artifact) / "config.json").read_text())["rlhf_reward_offset"]


def _stop_when_stepping(monkeypatch, act) -> None:
    """Call `act(run)` once, at the first should_stop after the run's first metric point (the
    launch is then training)."""
    original = runs.RunReporter.should_stop
    done = []

    def should_stop(self):
        if not done and MetricPoint.objects.filter(run_id=self.run_id).exists():
            done.append(True)
            act(TrainingRun.objects.get(pk=self.run_id))
        return original(self)

    monkeypatch.setattr(runs.RunReporter, "should_stop", should_stop)


@pytest.mark.slow
def test_a_launched_rm_run_matches_the_in_process_one(rm_round, settings) -> None:
    settings.RLHF_GPUS_PER_RUN = 1
    alone = runs.run_execute(run_id=_rm_run(rm_round).pk, body=rm_body)
    assert alone.status == "succeeded", alone.error

    settings.RLHF_GPUS_PER_RUN = 2
    launched = runs.run_execute(run_id=_rm_run(rm_round).pk, body=rm_body)
    assert launched.status == "succeeded", launched.error
    assert "launching train-rm on 2 processes" in launched.logs
    assert (launched.progress_done, launched.progress_total) == (3, 3)  # 6 training prompts
    steps = MetricPoint.objects.filter(run=launched).order_by("step")
    assert [p.step for p in steps] == [1, 2, 3] and "rm/loss" in steps[0].values
    assert launched.metrics["processes"] == 2 and launched.metrics["steps"] == 3
    assert launched.metrics["rm/loss"] == pytest.approx(alone.metrics["rm/loss"], abs=1e-5)

    one, two = alone.output, launched.output
    assert two.status == "ready" and Path(two.artifact).parent == Path(one.artifact).parent
    left, right = _weights(one), _weights(two)
    assert left.keys() == right.keys()
    assert max(float((left[k] - right[k]).abs().max()) for k in left) < TOLERANCE
    assert _offset(two) == pytest.approx(_offset(one), abs=1e-4)
    assert not (settings.RLHF_ARTIFACT_DIR / "runs" / f"run-{launched.pk}").exists()


@pytest.mark.slow
def test_a_cancel_stops_every_process_of_the_launch(rm_round, settings, monkeypatch) -> None:
    settings.RLHF_GPUS_PER_RUN = 2
    run = _rm_run(rm_round, epochs=100)  # 300 steps: far from done when cancelled
    _stop_when_stepping(monkeypatch, lambda run: runs.run_request_cancel(run=run))
    run = runs.run_execute(run_id=run.pk, body=rm_body)
    assert run.status == "cancelled", run.error
    assert 1 <= MetricPoint.objects.filter(run=run).count() < 300
    assert launcher.launch_processes(f"run-{run.pk}-", prefix=True) == []  # no orphan
    assert not ModelVersion.objects.filter(project=run.project, kind="rm").exists()
    assert not (settings.RLHF_ARTIFACT_DIR / "runs" / f"run-{run.pk}").exists()


@pytest.mark.slow
def test_a_rank_killed_with_sigkill_fails_the_run(rm_round, settings, monkeypatch) -> None:
    settings.RLHF_GPUS_PER_RUN = 2
    run = _rm_run(rm_round, epochs=100)
    killed = []

    def kill_rank_1(run: TrainingRun) -> None:
        for process in launcher.launch_processes(f"run-{run.pk}-", prefix=True):
            if process.environ().get("LOCAL_RANK") == "1":
                os.kill(process.pid, signal.SIGKILL)
                killed.append(process.pid)

    _stop_when_stepping(monkeypatch, kill_rank_1)
    run = runs.run_execute(run_id=run.pk, body=rm_body)
    assert len(killed) == 1
    assert run.status == "failed"
    assert run.error.startswith("The train-rm launch on 2 processes exited with code 1;")
    assert "nothing it produced was made current" in run.error
    assert "SIGKILL" in run.error  # torchrun's report of the dead rank, among the last lines
    assert launcher.launch_processes(f"run-{run.pk}-", prefix=True) == []
    assert not ModelVersion.objects.filter(project=run.project, kind="rm").exists()
    assert not (settings.RLHF_ARTIFACT_DIR / "runs" / f"run-{run.pk}").exists()


@pytest.mark.slow
def test_a_launched_sft_run_publishes_the_in_process_weights(db, settings, tmp_path) -> None:
    from tests.factories import DemonstrationFactory, PromptFactory
    from training.services.run_bodies.sft import sft_body

    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    config = {"epochs": 1, "batch_size": 4, "grad_accum_steps": 2, "lr": 1e-3, "max_length": 32}
    versions = []
    for processes in (1, 2):  # two projects with the same demonstrations and base model
        project = ProjectFactory(base_model="tiny")
        for i in range(9):
            prompt = PromptFactory(project=project, text=f"Count to {i}.")
            response = " ".join(str(n) for n in range(i + 2))
            DemonstrationFactory(project=project, prompt=prompt, response=response)
        settings.RLHF_GPUS_PER_RUN = processes
        run = TrainingRun.objects.create(project=project, kind="sft", config=config)
        run = runs.run_execute(run_id=run.pk, body=sft_body)
        assert run.status == "succeeded", run.error
        versions.append(run.output)
    one, two = versions
    assert two.is_current and two.parent.artifact == "tiny" and two.metrics["processes"] == 2
    assert two.metrics["sft/loss"] == pytest.approx(one.metrics["sft/loss"], abs=1e-5)
    assert MetricPoint.objects.filter(run__output=two).exists()
    left, right = _weights(one), _weights(two)
    assert max(float((left[k] - right[k]).abs().max()) for k in left) < TOLERANCE


def _ppo_round(tmp_path: Path):
    """A round at its PPO stage: 4 prompts, the tiny base as policy and reference, a saved
    tiny RM (its head drawn once, so both runs load the same one)."""
    import torch

    from tests.factories import ModelVersionFactory, PromptFactory
    from training.ml.reward.model import load_reward_model, save_reward_model

    project = ProjectFactory(base_model="tiny", max_new_tokens=4)
    for text in ["Name a fruit.", "Say hi.", "Count to three.", "Describe a river."]:
        PromptFactory(project=project, text=text)
    torch.manual_seed(0)
    rm, tokenizer = load_reward_model("tiny", device="cpu", dtype="float32")
    folder = tmp_path / f"rm-{project.pk}"
    save_reward_model(rm, tokenizer, folder)
    version = ModelVersionFactory(project=project, kind="rm", role="reward", artifact=str(folder))
    return RoundFactory(project=project, stage="training_ppo", reward_model=version)


@pytest.mark.slow
def test_a_launched_ppo_run_publishes_the_in_process_policy(db, settings, tmp_path) -> None:
    from training.services.run_bodies.ppo import ppo_body, ppo_checkpoints

    settings.RLHF_ARTIFACT_DIR = tmp_path / "artifacts"
    settings.RLHF_PROGRESS_INTERVAL = 0.2
    finished = []
    for processes in (1, 2):  # two rounds with the same prompts, policy and RM
        round_ = _ppo_round(tmp_path)
        settings.RLHF_GPUS_PER_RUN = processes
        if processes == 2:  # a failed attempt's checkpoint that cannot be loaded
            start = registry.reference_policy(project=round_.project)
            broken = ppo_checkpoints(round_, start) / "step-000001"
            broken.mkdir(parents=True)
            (broken / "state.json").write_text('{"step": 1, "kl_coef": 0.2}')
        run = TrainingRun.objects.create(
            project=round_.project, round=round_, kind="ppo", config=PPO_CONFIG
        )
        run = runs.run_execute(run_id=run.pk, body=ppo_body)
        assert run.status == "succeeded", run.error
        finished.append(run)
    alone, launched = finished
    assert launched.logs.count("launching ppo on 2 processes") == 2  # again, from the start
    assert f"cannot resume from checkpoint {broken}" in launched.logs
    assert "set aside, going on from the checkpoint before it" in launched.logs
    assert "trains in the worker's process" not in launched.logs
    assert (launched.progress_done, launched.progress_total) == (2, 2)
    steps = MetricPoint.objects.filter(run=launched).order_by("step")
    assert [p.step for p in steps] == [1, 2] and "objective/kl" in steps[0].values
    assert launched.metrics["processes"] == 2 and launched.metrics["step"] == 2
    one, two = alone.output, launched.output
    assert two.kind == "ppo" and two.status == "ready" and not two.is_current  # the gate's call
    assert "out" not in two.metrics and "checkpoint_dir" not in two.metrics
    left, right = _weights(one), _weights(two)
    assert left.keys() == right.keys()
    assert max(float((left[k] - right[k]).abs().max()) for k in left) < TOLERANCE
    base = _tiny()  # PPO moved the policy: the two are not untouched copies of the start
    assert max(float((left[k] - base[k]).abs().max()) for k in left if k in base) > 1e-3
    checkpoints = ppo_checkpoints(launched.round, ModelVersion.objects.get(pk=two.parent_id))
    assert checkpoints.is_dir() and not list(checkpoints.glob("step-*"))  # removed once published
    assert len(list(checkpoints.glob(".corrupt-step-000001-*"))) == 1  # kept to inspect
    assert not (settings.RLHF_ARTIFACT_DIR / "runs" / f"run-{launched.pk}").exists()


def _tiny() -> dict:
    from training.ml.loading import load_causal_lm

    model, _ = load_causal_lm("tiny", device="cpu", dtype="float32")
    return {k: v.detach() for k, v in model.state_dict().items()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_launch_dies_with_the_worker_that_started_it() -> None:
    """A stand-in worker starts a child through the launcher's wrapper, then is SIGKILLed."""
    worker = (
        "import django, os, subprocess, sys, time\n"
        "django.setup()\n"
        "from training.services import launcher\n"
        "env = {**os.environ, launcher.LAUNCH_ENV: 'run-0-orphan-test'}\n"
        "line = [sys.executable, '-c', 'import time; time.sleep(120)']\n"
        "child = subprocess.Popen(launcher._with_parent_death_signal(line), env=env)\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    stand_in = subprocess.Popen(
        [sys.executable, "-c", worker], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        child = psutil.Process(int(stand_in.stdout.readline()))
        deadline = time.monotonic() + 20
        while not launcher.launch_processes("run-0-orphan-test") and time.monotonic() < deadline:
            time.sleep(0.1)  # until the wrapper has exec'd the child
        assert [p.pid for p in launcher.launch_processes("run-0-orphan-test")] == [child.pid]
    finally:
        stand_in.kill()
        stand_in.wait()
    psutil.wait_procs([child], timeout=20)
    assert launcher.launch_processes("run-0-orphan-test") == []


def test_the_launch_command_is_ddp_on_this_node_unless_a_config_file_is_set() -> None:
    args = ["--model", "tiny"]
    line = launcher.launch_command(command="train-rm", args=args, processes=4, port=29555)
    assert line[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert line[line.index("--num_processes") + 1] == "4" and "--multi_gpu" in line
    assert line[line.index("--mixed_precision") + 1] == "no"
    assert line[-5:] == ["-m", "training.ml", "train-rm", "--model", "tiny"]
    with_file = launcher.launch_command(
        command="sft", args=[], processes=8, port=1, config_file="/etc/fsdp.yaml"
    )
    assert with_file[3:5] == ["--config_file", "/etc/fsdp.yaml"] and "--multi_gpu" not in with_file


def test_gpus_per_run_below_one_is_refused(settings) -> None:
    from core.exceptions import ApplicationError

    settings.RLHF_GPUS_PER_RUN = 0
    with pytest.raises(ApplicationError, match="RLHF_GPUS_PER_RUN must be >= 1"):
        launcher.gpus_per_run()


def test_ranking_files_read_back_as_the_same_examples(tmp_path: Path) -> None:
    from training.ml.preferences import RankedExample, read_preferences

    examples = [
        RankedExample("Say hi.", ["a", "b", "c"], [[2], [0, 1]], labeler="l1", prompt_id="7"),
        RankedExample([{"role": "user", "content": "Hi"}], ["x", "y"], [[1], [0]]),
    ]
    path = launcher.write_rankings(tmp_path / "r.jsonl", examples)
    assert read_preferences(path) == examples


def test_the_cli_takes_a_config_file_and_refuses_unknown_fields(tmp_path: Path, capsys) -> None:
    from training.ml.cli import main

    data = tmp_path / "r.jsonl"
    data.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    config = tmp_path / "config.json"
    config.write_text('{"lr": 1e-3, "warp_drive": 9}')
    argv = ["train-rm", "--model", "tiny", "--data", str(data), "--out", str(tmp_path / "o")]
    assert main([*argv, "--config", str(config)]) == 2
    assert "unknown RMConfig field 'warp_drive'" in capsys.readouterr().err
    config.write_text('{"lr": 7}')
    assert main([*argv, "--config", str(config)]) == 2
    assert "RMConfig.lr must be <= 1" in capsys.readouterr().err


def test_the_ppo_command_reads_a_config_file_that_its_flags_override(tmp_path: Path) -> None:
    """What the launcher writes (the run's PPOConfig fields) is what `ppo` trains with."""
    from training.ml.cli import build_parser
    from training.ml.commands.common import CommandError
    from training.ml.commands.ppo import _config

    config = tmp_path / "config.json"
    config.write_text('{"steps": 3, "batch_size": 4, "kl_target": null, "ptx_coef": 0.5}')
    argv = ["ppo", "--data", "p.jsonl", "--out", "o", "--config", str(config)]
    parser = build_parser()
    read = _config(parser.parse_args(argv), n_prompts=8)
    assert (read.steps, read.batch_size, read.kl_target, read.ptx_coef) == (3, 4, None, 0.5)
    given = _config(parser.parse_args([*argv, "--kl-target", "2", "--epochs", "2"]), 8)
    assert (given.kl_target, given.steps) == (2.0, 4)  # 2 passes over 8 prompts, 4 a batch
    config.write_text('{"steps": 0}')
    with pytest.raises(CommandError, match="steps"):
        _config(parser.parse_args(argv), n_prompts=8)
    config.write_text('{"warp_drive": 1}')
    with pytest.raises(CommandError, match="unknown PPOConfig field 'warp_drive'"):
        _config(parser.parse_args(argv), n_prompts=8)
