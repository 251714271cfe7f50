"""A run over RLHF_GPUS_PER_RUN devices: `accelerate launch` as a supervised child process.

With RLHF_GPUS_PER_RUN = 1 (the default) every run body trains in the worker's process.
Above 1, the RM, SFT and PPO bodies write their inputs to files in the run's folder
(`RLHF_ARTIFACT_DIR/runs/run-ID`) and `launch` starts

    python -m accelerate.commands.launch (--multi_gpu ... | --config_file RLHF_ACCELERATE_CONFIG)
        --num_processes N --main_process_port P -m training.ml COMMAND ... --metrics-jsonl F

in a session of its own. While it lives the worker relays the metrics lines rank 0 appends
(the body's `on_metrics`: metric points and progress), its stderr (the run's logs) and the
reporter's heartbeat. A cancel (`RunReporter.should_stop`) stops every process of the launch
and raises RunCancelled. A launch that dies or exits non-zero fails the run with the last
lines of its stderr before anything is published: the round's stage fails and the previous
models stay current, as for a killed worker. A killed worker takes its launch along: the
launcher gets SIGTERM as its parent-death signal (Linux) and stops its ranks.

Every process of a launch carries `RLHF_LAUNCH_ID` in its environment (torchrun starts the
ranks in sessions of their own, so a process group does not reach them): stopping a launch
ends each process that carries its id, whatever its parent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil
from django.conf import settings

from core.exceptions import ApplicationError
from training.models import TrainingRun
from training.services.runs import RunCancelled, RunReporter

logger = logging.getLogger(__name__)

LAUNCH_ENV = "RLHF_LAUNCH_ID"
POLL_SECONDS = 0.5
STOP_GRACE_SECONDS = 15.0
ERROR_LINES = 20
# Run first in the child: die with the worker thread that started it (PR_SET_PDEATHSIG =
# 1), unless that worker is already gone, then exec the launcher.
_PARENT_DEATH_SIGNAL = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit(1)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)

MetricsCallback = Callable[[int, dict[str, Any]], None]


class LaunchFailed(ApplicationError):
    """A launch that died or exited non-zero; `refusals` holds the `error: ...` lines the
    command printed for bad input (training.ml.cli), from anywhere in its stderr."""

    def __init__(self, message: str, refusals: list[str]) -> None:
        super().__init__(message)
        self.refusals = refusals


def gpus_per_run() -> int:
    """RLHF_GPUS_PER_RUN: the processes (devices) a training run is launched on."""
    count = int(settings.RLHF_GPUS_PER_RUN)
    if count < 1:
        raise ApplicationError(f"RLHF_GPUS_PER_RUN must be >= 1, not {count}.")
    return count


def is_launched() -> bool:
    """Whether RM, SFT and PPO runs go through `launch` (RLHF_GPUS_PER_RUN > 1)."""
    return gpus_per_run() > 1


def log_in_process(reporter: RunReporter, kind: str, reason: str) -> None:
    """Say in the run's logs that a run kind trains in one process despite the setting."""
    if is_launched():
        reporter.log(
            f"RLHF_GPUS_PER_RUN={gpus_per_run()}: this {kind} run trains in the worker's "
            f"process on one device ({reason})."
        )


# --------------------------------------------------------------------------- run kinds


def rm_launched(
    *,
    run: TrainingRun,
    reporter: RunReporter,
    init: str,
    train: Sequence[Any],
    eval: Sequence[Any],
    values: dict[str, Any],
    on_metrics: MetricsCallback,
) -> tuple[Any, Any, dict[str, Any]]:
    """Train a fresh RM from the policy `init` on `train` through `train-rm`; returns the
    trained RM loaded back on RLHF_DEVICE in fp32, its tokenizer and the trainer's result.

    The body goes on as after an in-process training (held-out figures, calibration on the
    round's samples, which replaces the offset the command set on the training responses).
    """
    from training.ml.reward.model import load_reward_model

    with run_folder(run) as folder:
        args = ["--data", str(write_rankings(folder / "train.jsonl", train))]
        if eval:
            args += ["--eval-data", str(write_rankings(folder / "eval.jsonl", eval))]
        result = launch(
            reporter=reporter,
            command="train-rm",
            args=[*args, *_common_args(init, folder, values)],
            folder=folder,
            on_metrics=on_metrics,
        )
        device = settings.RLHF_DEVICE
        model, tokenizer = load_reward_model(str(folder / "out"), device=device, dtype="float32")
    for key in ("out", "reward_offset", "calibration_samples"):
        result.pop(key, None)
    return model, tokenizer, result


@contextlib.contextmanager
def sft_launched(
    *,
    run: TrainingRun,
    reporter: RunReporter,
    init: str,
    demonstrations: Sequence[Any],
    values: dict[str, Any],
    on_metrics: MetricsCallback,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Fine-tune the policy `init` through `sft`; yields the saved folder (to publish
    before the context ends: the run's folder is removed then) and the trainer's result."""
    with run_folder(run) as folder:
        data = write_demonstrations(folder / "demos.jsonl", demonstrations)
        result = launch(
            reporter=reporter,
            command="sft",
            args=["--data", str(data), *_common_args(init, folder, values)],
            folder=folder,
            on_metrics=on_metrics,
        )
        result.pop("out", None)
        yield folder / "out", result


@contextlib.contextmanager
def ppo_launched(
    *,
    run: TrainingRun,
    reporter: RunReporter,
    init: str,
    reference: str,
    reward_model: str,
    prompts: Sequence[Any],
    rules: Sequence[str],
    ptx: Sequence[tuple[Any, str]] | None,
    checkpoints: Path,
    values: dict[str, Any],
    on_metrics: MetricsCallback,
) -> Iterator[tuple[Path, dict[str, Any]]]:
    """PPO of the policy `init` against `reward_model` (also the critic's start), KL to
    `reference`, through `ppo`; yields the saved policy folder (to publish before the
    context ends) and the trainer's result.

    The checkpoints go to `checkpoints` and stay there (`--keep-checkpoints`): a retried
    run resumes from the newest (`--resume`), and the body removes them once it published.
    With LoRA the reference must be `init` (its base with the adapters off)."""
    with run_folder(run) as folder:
        args = ["--data", str(write_prompts(folder / "prompts.jsonl", prompts))]
        args += ["--reward-model", reward_model, "--checkpoint-dir", str(checkpoints)]
        args += ["--resume", "--keep-checkpoints"]
        if reference != init:
            args += ["--ref-model", reference]
        for rule in rules:
            args += ["--rule", rule]
        if ptx is not None:
            path = folder / "ptx.jsonl"
            with path.open("w", encoding="utf-8") as out:
                for prompt, response in ptx:
                    out.write(json.dumps({"prompt": prompt, "response": response}) + "\n")
            args += ["--ptx-data", str(path)]
        result = launch(
            reporter=reporter,
            command="ppo",
            args=[*args, *_common_args(init, folder, values)],
            folder=folder,
            on_metrics=on_metrics,
        )
        for key in ("out", "checkpoint_dir"):
            result.pop(key, None)
        yield folder / "out", result


def _common_args(init: str, folder: Path, values: dict[str, Any]) -> list[str]:
    config = folder / "config.json"
    config.write_text(json.dumps(values), encoding="utf-8")
    return [
        "--model", init, "--device", settings.RLHF_DEVICE, "--dtype", settings.RLHF_DTYPE,
        "--config", str(config), "--out", str(folder / "out"),
    ]  # fmt: skip


def move_into_place(folder: Path) -> Callable[[Path], None]:
    """A `publish` saver renaming the launch's saved `folder` to the version's artifact
    (one rename: the run's folder and the artifacts share RLHF_ARTIFACT_DIR)."""

    def save(target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(folder, target)

    return save


@contextlib.contextmanager
def run_folder(run: TrainingRun) -> Iterator[Path]:
    """`RLHF_ARTIFACT_DIR/runs/run-ID`, emptied first (a killed attempt's leftovers) and
    removed at the end: the inputs are a copy of the project's data."""
    folder = Path(settings.RLHF_ARTIFACT_DIR) / "runs" / f"run-{run.pk}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_rankings(path: Path, examples: Sequence[Any]) -> Path:
    """RankedExamples as the K-wise ranking records the ML CLI reads (formats.preferences):
    response ids are the indices, tie groups stay as they are."""
    with path.open("w", encoding="utf-8") as out:
        for example in examples:
            record = {
                "prompt": example.prompt,
                "responses": [{"id": i, "text": t} for i, t in enumerate(example.responses)],
                "order": example.tie_groups,
                "labeler": example.labeler,
                "prompt_id": example.prompt_id,
            }
            out.write(json.dumps(record) + "\n")
    return path


def write_prompts(path: Path, prompts: Sequence[Any]) -> Path:
    """Prompts (text or chat messages) as `{"prompt"}` records (training.ml.data)."""
    with path.open("w", encoding="utf-8") as out:
        for prompt in prompts:
            out.write(json.dumps({"prompt": prompt}) + "\n")
    return path


def write_demonstrations(path: Path, demonstrations: Sequence[Any]) -> Path:
    """Demonstrations as `{"prompt", "response"}` records (formats.demonstrations)."""
    with path.open("w", encoding="utf-8") as out:
        for demo in demonstrations:
            out.write(json.dumps({"prompt": demo.prompt, "response": demo.response}) + "\n")
    return path


# --------------------------------------------------------------------------- the launch


def launch_command(
    *, command: str, args: Sequence[str], processes: int, port: int, config_file: str = ""
) -> list[str]:
    """The `accelerate launch` command line of `python -m training.ml COMMAND ARGS`.

    Without a config file: DDP on this node (`--multi_gpu`; with `--device cpu` the ranks
    form a gloo group), accelerate's own mixed precision off (`--dtype` sets ours).
    """
    line = [sys.executable, "-m", "accelerate.commands.launch"]
    if config_file:
        line += ["--config_file", config_file]
    else:
        line += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no"]
        line += ["--dynamo_backend", "no"]
    line += ["--num_processes", str(processes), "--main_process_port", str(port)]
    return [*line, "-m", "training.ml", command, *args]


def launch(
    *,
    reporter: RunReporter,
    command: str,
    args: Sequence[str],
    folder: Path,
    on_metrics: MetricsCallback,
) -> dict[str, Any]:
    """Run `python -m training.ml COMMAND ARGS` on RLHF_GPUS_PER_RUN processes and return
    its result line; relays metrics, logs and heartbeats while it runs.

    Raises RunCancelled when the run is cancelled (the launch is stopped first) and
    LaunchFailed with the last lines of its stderr when the launch fails.
    """
    processes = gpus_per_run()
    metrics_path, stderr_path = folder / "metrics.jsonl", folder / "stderr.log"
    stdout_path = folder / "stdout.log"
    line = launch_command(
        command=command,
        args=[*args, "--metrics-jsonl", str(metrics_path)],
        processes=processes,
        port=_free_port(),
        config_file=settings.RLHF_ACCELERATE_CONFIG,
    )
    launch_id = f"run-{reporter.run_id}-{uuid.uuid4().hex[:12]}"
    env = {**os.environ, LAUNCH_ENV: launch_id, "TQDM_DISABLE": "1", "PYTHONUNBUFFERED": "1"}
    reporter.log(f"launching {command} on {processes} processes: {shlex.join(line)}")
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        child = subprocess.Popen(
            _with_parent_death_signal(line),
            cwd=settings.BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    metrics, errors = _Tail(metrics_path), _Tail(stderr_path)
    last_errors: deque[str] = deque(maxlen=ERROR_LINES)
    refusals: list[str] = []
    try:
        while True:
            code = child.poll()  # read the files after a last poll: nothing is left out
            for text in metrics.lines():
                record = json.loads(text)
                on_metrics(int(record["step"]), record["values"])
            logged = [text for text in errors.lines() if text.strip()]
            if logged:
                last_errors.extend(logged)
                refusals += [text for text in logged if text.startswith("error: ")]
                reporter.log("\n".join(logged))
            if code is not None:
                break
            if reporter.should_stop():
                reporter.log(f"cancelled: stopping the {command} launch")
                raise RunCancelled()
            time.sleep(POLL_SECONDS)
    finally:
        stop_launch(child, launch_id)
    if code != 0:
        raise LaunchFailed(
            f"The {command} launch on {processes} processes {_describe_exit(code)}; nothing "
            "it produced was made current. Its last lines:\n" + "\n".join(last_errors),
            refusals,
        )
    return _result_line(stdout_path, command)


def stop_launch(child: subprocess.Popen[bytes], launch_id: str) -> None:
    """End every process of a launch: SIGTERM (torchrun stops its ranks on it), then
    SIGKILL to whatever is left after STOP_GRACE_SECONDS; reaps the child."""
    others = [p for p in launch_processes(launch_id) if p.pid != child.pid]
    if child.poll() is None:
        child.terminate()
    for process in others:
        with contextlib.suppress(psutil.Error):
            process.terminate()
    try:
        child.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
    # ranks started after the first look, and any that ignored SIGTERM
    others = [p for p in launch_processes(launch_id) if p.pid != child.pid] + others
    _, alive = psutil.wait_procs(others, timeout=STOP_GRACE_SECONDS)
    for process in alive:
        with contextlib.suppress(psutil.Error):
            process.kill()
    psutil.wait_procs(alive, timeout=STOP_GRACE_SECONDS)


def launch_processes(launch_id: str, *, prefix: bool = False) -> list[psutil.Process]:
    """The live processes whose environment carries `launch_id` (or, with `prefix`, an id
    starting with it), zombies left out."""
    found = []
    for process in psutil.process_iter():
        try:
            value = process.environ().get(LAUNCH_ENV)
            if value is None or process.status() == psutil.STATUS_ZOMBIE:
                continue
        except psutil.Error:  # gone, a zombie, or another user's
            continue
        if value == launch_id or (prefix and value.startswith(launch_id)):
            found.append(process)
    return found


def _with_parent_death_signal(line: list[str]) -> list[str]:
    if not sys.platform.startswith("linux"):
        return line
    return [sys.executable, "-c", _PARENT_DEATH_SIGNAL, str(os.getpid()), *line]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"was killed by {signal.Signals(-code).name}"
    return f"exited with code {code}"


def _result_line(stdout_path: Path, command: str) -> dict[str, Any]:
    """The command's one JSON result line (rank 0 prints it last)."""
    lines = stdout_path.read_text(encoding="utf-8", errors="replace").splitlines()
    for text in reversed(lines):
        if text.startswith("{"):
            result: dict[str, Any] = json.loads(text)
            return result
    raise ApplicationError(f"The {command} launch exited without printing its result.")


class _Tail:
    """The complete lines appended to a file since the last call (`\\r` ends a line too)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, b""

    def lines(self) -> list[str]:
        try:
            with self.path.open("rb") as file:
                file.seek(self.offset)
                chunk = file.read()
        except FileNotFoundError:
            return []
        self.offset += len(chunk)
        *complete, self.partial = (self.partial + chunk).replace(b"\r", b"\n").split(b"\n")
        return [text.decode("utf-8", errors="replace") for text in complete]
