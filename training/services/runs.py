"""Training runs: creation, queueing on commit, and the execution harness.

The run row is the record: a Celery message only carries the run id, and `run_execute` is
idempotent on it (a redelivered or retried message for a finished run does nothing).
Progress, metrics, heartbeats and cancellation go through the row, throttled so a fast
training loop does not hammer the database.
"""

import logging
import math
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from core.exceptions import ApplicationError
from labeling.models import Project
from training import dispatch
from training.models import MetricPoint, Round, TrainingRun
from training.services import progress as progress_

logger = logging.getLogger(__name__)

TERMINAL = {
    TrainingRun.Status.SUCCEEDED,
    TrainingRun.Status.FAILED,
    TrainingRun.Status.CANCELLED,
}


class RunCancelled(Exception):
    """Raised inside a run body when an admin cancelled it."""


def run_create(
    *,
    project: Project,
    kind: str,
    round: Round | None = None,
    config: dict | None = None,
    inputs: dict | None = None,
    progress_total: int = 0,
) -> TrainingRun:
    """Create a queued run and send it to the `gpu` queue once the transaction commits.
    `progress_total` is the work the run will report, where it is known before it starts."""
    run = TrainingRun.objects.create(
        project=project,
        round=round,
        kind=kind,
        config=config or {},
        inputs=inputs or {},
        progress_total=progress_total,
    )
    dispatch.enqueue_on_commit(dispatch.GPU_EXECUTE_RUN, run.pk)
    return run


@dataclass
class RunReporter:
    """Callbacks handed to the ML core: progress, metrics, cancellation, heartbeats."""

    run_id: int
    min_interval: float = 1.0
    clock: Callable[[], float] = time.time  # wall time of the phase figures (ETA maths)
    _last_write: float = 0.0
    _last_cancel_check: float = 0.0
    _pending: dict[str, Any] = field(default_factory=dict)
    _detail: dict[str, Any] = field(default_factory=dict)

    def progress(self, done: int, total: int) -> None:
        """The run's overall work in its unit (`progress.RUN_UNITS`)."""
        self._pending.update(progress_done=done, progress_total=total)
        self._flush(force=done >= total)

    def phase(
        self, name: str, done: int = 0, total: int = 0, *, unit: str = "steps", step: str = ""
    ) -> None:
        """What the run does now (`progress.LOADING`, `SAMPLING`, ...) with its own
        done/total in `unit` and a sub-step label; `progress_detail` on the row. Throttled
        like `progress`, but a new phase or sub-step (PPO's rollout, then each update epoch),
        or a phase that reaches its total, is written at once."""
        detail = progress_.phase_detail(
            self._detail, phase=name, done=done, total=total, unit=unit, step=step, now=self.clock()
        )
        new = progress_.is_new_phase(self._detail, detail) or self._detail.get("step") != step
        self._detail = detail
        self._pending["progress_detail"] = detail
        self._flush(force=new or (total > 0 and done >= total))

    def train_step(self, done: int, total: int, *, step: str = "") -> None:
        """A training run's step: the "training" phase and the overall counters at once."""
        self._pending.update(progress_done=done, progress_total=total)
        self.phase(progress_.TRAINING, done, total, unit="steps", step=step)

    def metrics(self, step: int, values: dict[str, Any]) -> None:
        clean = metrics_jsonable(values)
        MetricPoint.objects.update_or_create(
            run_id=self.run_id, step=step, defaults={"values": clean}
        )
        self._pending["metrics"] = clean
        self._flush()

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_cancel_check < self.min_interval:
            return False
        self._last_cancel_check = now
        self._flush(force=True)
        # Cancelled by an admin, or no longer running (the reaper failed it while it was
        # stalled): either way nothing it goes on to produce would be used.
        return (
            TrainingRun.objects.filter(pk=self.run_id)
            .filter(Q(cancel_requested=True) | ~Q(status=TrainingRun.Status.RUNNING))
            .exists()
        )

    def log(self, line: str) -> None:
        run = TrainingRun.objects.only("logs").get(pk=self.run_id)
        TrainingRun.objects.filter(pk=self.run_id).update(
            logs=(run.logs + line.rstrip() + "\n")[-20000:]
        )

    def _flush(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        fields = {**self._pending, "heartbeat_at": timezone.now()}
        self._pending.clear()
        TrainingRun.objects.filter(pk=self.run_id).update(**fields)


def metrics_jsonable(values: dict[str, Any]) -> dict[str, Any]:
    """Metrics as they are stored (a run's points and totals, a model version's): every
    value through `_jsonable`."""
    return {k: _jsonable(v) for k, v in values.items()}


def _jsonable(value: Any) -> Any:
    """A metric value as JSON can store it: numbers stay numbers, NaN and infinities become
    null (PostgreSQL's jsonb refuses them), anything else its text."""
    if isinstance(value, bool | int | str) or value is None:
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


RunBody = Callable[[TrainingRun, RunReporter], dict[str, Any]]


def run_execute(*, run_id: int, body: RunBody, worker: str | None = None) -> TrainingRun:
    """Run `body` for a queued run exactly once and record the outcome.

    Idempotent: a run that is already running elsewhere, finished or cancelled is left alone.
    On an exception the run is marked failed with the error; the caller decides what the
    failure means for its round (see rounds.round_on_run_finished).
    """
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run_id)
        if run.status != TrainingRun.Status.QUEUED:
            logger.info("run %s is %s; nothing to do", run_id, run.status)
            return run
        if run.cancel_requested:
            run.status = TrainingRun.Status.CANCELLED
            run.finished_at = timezone.now()
            run.save(update_fields=["status", "finished_at", "updated_at"])
            return run
        run.status = TrainingRun.Status.RUNNING
        run.started_at = run.heartbeat_at = timezone.now()
        run.worker = worker or socket.gethostname()
        run.save(update_fields=["status", "started_at", "heartbeat_at", "worker", "updated_at"])

    reporter = RunReporter(run_id=run.pk, min_interval=settings.RLHF_PROGRESS_INTERVAL)
    heartbeat = _Heartbeat(run.pk, interval=max(1.0, settings.RLHF_HEARTBEAT_TIMEOUT / 5))
    heartbeat.start()
    try:
        metrics = body(run, reporter)
    except RunCancelled:
        return _finish(run, status=TrainingRun.Status.CANCELLED)
    except ApplicationError as exc:
        return _finish(run, status=TrainingRun.Status.FAILED, error=exc.message)
    except Exception as exc:
        logger.exception("run %s failed", run.pk)
        error = f"{type(exc).__name__}: {exc}"
        reporter.log(traceback.format_exc()[-4000:])
        return _finish(run, status=TrainingRun.Status.FAILED, error=error)
    finally:
        heartbeat.stop()
    return _finish(run, status=TrainingRun.Status.SUCCEEDED, metrics=metrics)


class _Heartbeat(threading.Thread):
    """Touches the run's heartbeat while the body works (model loading can be slow).

    It dies with the process, which is the point: a SIGKILLed worker stops beating and
    `runs_reap_stale` fails its run.
    """

    def __init__(self, run_id: int, *, interval: float) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{run_id}")
        self.run_id, self.interval = run_id, interval
        self._stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self._stopped.wait(self.interval):
                try:
                    TrainingRun.objects.filter(
                        pk=self.run_id, status=TrainingRun.Status.RUNNING
                    ).update(heartbeat_at=timezone.now())
                except Exception:  # a database blip must not silence the run for good
                    logger.exception("heartbeat of run %s failed; retrying", self.run_id)
                    connection.close()  # reconnect on the next beat
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopped.set()


def _finish(
    run: TrainingRun, *, status: str, error: str = "", metrics: dict | None = None
) -> TrainingRun:
    """Record the outcome, unless the reaper already failed the run (its error stays)."""
    with transaction.atomic():
        run = TrainingRun.objects.select_for_update().get(pk=run.pk)
        if run.status != TrainingRun.Status.RUNNING:
            logger.warning("run %s ended %s but was already %s", run.pk, status, run.status)
            return run
        return _record(run, status=status, error=error, metrics=metrics)


def _record(run: TrainingRun, *, status: str, error: str, metrics: dict | None) -> TrainingRun:
    run.status = status
    run.error = error[:5000]
    run.finished_at = timezone.now()
    if metrics is not None:
        run.metrics = metrics_jsonable(metrics)
    run.save(update_fields=["status", "error", "finished_at", "metrics", "updated_at"])
    return run


def run_request_cancel(*, run: TrainingRun) -> None:
    TrainingRun.objects.filter(pk=run.pk).exclude(status__in=TERMINAL).update(cancel_requested=True)
    TrainingRun.objects.filter(pk=run.pk, status=TrainingRun.Status.QUEUED).update(
        status=TrainingRun.Status.CANCELLED, finished_at=timezone.now()
    )


def runs_reap_stale(
    *, now=None, dead_worker: str | None = None, project: Project | None = None
) -> list[int]:
    """Mark runs whose worker stopped sending heartbeats as failed (a killed worker).

    `dead_worker` names a worker node that has just (re)started: every run it was running
    is dead whatever its last heartbeat, so a worker restarted within the heartbeat timeout
    still fails what its previous process left behind; `project` limits the reaping to one
    project's runs. Returns the ids of the runs it failed. Called through
    `rounds.rounds_reap_stale_runs` (which also fails their rounds) when a worker starts,
    by the periodic `reap_stale_runs` task (beat) and before a round is advanced or retried.
    """
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RLHF_HEARTBEAT_TIMEOUT)
    running = TrainingRun.objects.filter(status=TrainingRun.Status.RUNNING)
    if project is not None:
        running = running.filter(project=project)
    condition = Q(heartbeat_at__lt=cutoff)
    if dead_worker:
        condition |= Q(worker=dead_worker)
    stale = list(running.filter(condition).values_list("pk", flat=True))
    failed = []
    for run_id in stale:
        with transaction.atomic():
            run = TrainingRun.objects.select_for_update().get(pk=run_id)
            if run.status != TrainingRun.Status.RUNNING:
                continue
            restarted = bool(dead_worker) and run.worker == dead_worker
            beat = run.heartbeat_at
            if not restarted and (beat is None or beat >= cutoff):
                continue
            run.status = TrainingRun.Status.FAILED
            if restarted or beat is None:
                reason = "was restarted while running it"
            else:
                reason = f"stopped responding (no heartbeat since {beat:%Y-%m-%d %H:%M:%S} UTC)"
            run.error = (
                f"The worker {run.worker or '?'} {reason}; the run was abandoned and nothing "
                "it produced was made current."
            )
            run.finished_at = now
            run.save(update_fields=["status", "error", "finished_at", "updated_at"])
            failed.append(run_id)
    return failed


def runs_requeue() -> list[int]:
    """Send the message of every queued run again (a broker that lost its queue, e.g. a
    Redis restart). Harmless for runs whose message still waits: `run_execute` is
    idempotent, so the second delivery finds the run started or finished and does nothing.
    """
    queued = TrainingRun.objects.filter(status=TrainingRun.Status.QUEUED, cancel_requested=False)
    ids = list(queued.order_by("id").values_list("pk", flat=True))
    for run_id in ids:
        dispatch.enqueue(dispatch.GPU_EXECUTE_RUN, run_id)
    return ids
