"""A run's and a round's progress as the API, the dashboard and the CLI show it.

A run keeps two counters. `progress_done` / `progress_total` are its overall work in the
run's unit (responses for a generate run, optimizer steps for a training run), as before.
`progress_detail` (JSON, written by `RunReporter.phase`) is the phase it is in now:

    {"phase": "sampling", "step": "batch 2/5", "unit": "tokens", "done": 1200,
     "total": 8000, "since": <epoch s the phase began>, "since_done": <done then>,
     "at": <epoch s of this figure>}

The ETA comes from the phase's rate since it began, (done - since_done) / (at - since),
and counts down from `at` between two figures; it is null until there is a rate (no
work done yet in the phase, or no time passed). This module is the one place that reads
those fields: the serializers, the dashboard (through the API) and `--wait` call it.
"""

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.utils import timezone

from training.models import Round, TrainingRun

# The phases run bodies report (RunReporter.phase); a phase may carry a sub-step label.
LOADING = "loading model"
SAMPLING = "sampling"
SCORING = "scoring"
TRAINING = "training"
SAVING = "saving"
QUEUED = "queued"
LABELING = "labeling"

# The unit of a run's overall done/total, by kind.
RUN_UNITS: dict[str, str] = {
    TrainingRun.Kind.GENERATE: "responses",
    TrainingRun.Kind.EVAL: "responses",
}


def phase_detail(
    previous: dict[str, Any],
    *,
    phase: str,
    done: int,
    total: int,
    unit: str,
    step: str,
    now: float,
) -> dict[str, Any]:
    """The detail after a report at wall time `now` (epoch seconds): a new phase (another
    name or unit) starts its clock and rate at `now` and `done`; the same phase keeps them."""
    same = previous.get("phase") == phase and previous.get("unit") == unit
    since = float(previous["since"]) if same and "since" in previous else now
    since_done = int(previous.get("since_done", 0)) if same else done
    return {
        "phase": phase,
        "step": step,
        "unit": unit,
        "done": done,
        "total": total,
        "since": since,
        "since_done": min(since_done, done),
        "at": now,
    }


def is_new_phase(previous: dict[str, Any], detail: dict[str, Any]) -> bool:
    return previous.get("phase") != detail["phase"] or previous.get("unit") != detail["unit"]


def phase_rate(detail: dict[str, Any]) -> float | None:
    """Work per second in the phase since it began; None without work done or time passed."""
    try:
        worked = float(detail["done"]) - float(detail["since_done"])
        took = float(detail["at"]) - float(detail["since"])
    except (KeyError, TypeError, ValueError):
        return None
    if worked <= 0 or took <= 0:
        return None
    return worked / took


def eta_seconds(detail: dict[str, Any], *, now: float) -> float | None:
    """Seconds left in the phase at `now`: 0 once done reaches total, None without a total
    or a rate; counts down from the last figure's time, never below 0."""
    total, done = int(detail.get("total") or 0), int(detail.get("done") or 0)
    if total <= 0:
        return None
    if done >= total:
        return 0.0
    rate = phase_rate(detail)
    if rate is None:
        return None
    left = (total - done) / rate - max(0.0, now - float(detail["at"]))
    return round(max(0.0, left), 1)


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, tz=timezone.get_current_timezone()).isoformat()


def _elapsed(started: datetime | None, finished: datetime | None, now: datetime) -> float | None:
    if started is None:
        return None
    return round(max(0.0, ((finished or now) - started).total_seconds()), 1)


def run_progress(run: TrainingRun, *, now: datetime | None = None) -> dict[str, Any]:
    """The run's progress: overall done/total in its unit, the phase with its own
    done/total/unit and sub-step, elapsed (since the run started) and the phase's ETA."""
    now = now or timezone.now()
    detail = run.progress_detail or {}
    running = run.status == TrainingRun.Status.RUNNING
    phase = detail.get("phase", "")
    if run.status == TrainingRun.Status.QUEUED:
        phase = QUEUED
    elif not running:
        phase = str(run.status)  # succeeded / failed / cancelled: no phase is going on
    return {
        "done": run.progress_done,
        "total": run.progress_total,
        "unit": RUN_UNITS.get(run.kind, "steps"),
        "phase": phase,
        "step": detail.get("step", "") if running else "",
        "phase_done": int(detail.get("done", 0)),
        "phase_total": int(detail.get("total", 0)),
        "phase_unit": detail.get("unit", ""),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "phase_started_at": _iso(detail.get("since")) if running else None,
        "elapsed_s": _elapsed(run.started_at, run.finished_at, now),
        "eta_s": eta_seconds(detail, now=now.timestamp()) if running and detail else None,
    }


def round_progress(round_: Round, *, runs: Iterable[TrainingRun] | None = None) -> dict[str, Any]:
    """The round's progress: while generating, the responses of every shard (the latest
    run of each) with the slowest running shard's ETA; while a run works, that run's; at
    labeling, the rankings collected. `runs` are the round's runs (e.g. prefetched)."""
    from training.services.generate_stage import _latest_shard_runs, generate_stage_progress

    now = timezone.now()
    runs = list(round_.runs.all() if runs is None else runs)
    base = {
        "done": round_.progress_done,
        "total": round_.progress_total,
        "unit": "rankings",
        "phase": LABELING if round_.stage == Round.Stage.LABELING else "",
        "step": "",
        "phase_done": 0,
        "phase_total": 0,
        "phase_unit": "",
        "started_at": None,
        "phase_started_at": None,
        "elapsed_s": None,
        "eta_s": None,
    }
    if round_.stage == Round.Stage.GENERATING:
        shards = list(
            _latest_shard_runs(r for r in runs if r.kind == TrainingRun.Kind.GENERATE).values()
        )
        done, total = generate_stage_progress(shards)
        if total:
            each = [run_progress(r, now=now) for r in shards]
            working = [p for r, p in zip(shards, each, strict=True) if r.status == "running"]
            started = [r.started_at for r in shards if r.started_at is not None]
            lead = working[0] if working else None
            alike = [p for p in working if lead and p["phase_unit"] == lead["phase_unit"]]
            waiting = any(r.status == TrainingRun.Status.QUEUED for r in shards)
            etas = [p["eta_s"] for p in working] if not waiting else [None]
            return {
                **base,
                "done": done,
                "total": total,
                "unit": "responses",
                "phase": lead["phase"] if lead else (QUEUED if started == [] else ""),
                "step": lead["step"] if lead else "",
                "phase_done": sum(p["phase_done"] for p in alike),
                "phase_total": sum(p["phase_total"] for p in alike),
                "phase_unit": lead["phase_unit"] if lead else "",
                "started_at": min(started).isoformat() if started else None,
                "phase_started_at": lead["phase_started_at"] if lead else None,
                "elapsed_s": _elapsed(min(started), None, now) if started else None,
                # the stage ends with its slowest shard; unknown while one waits for a
                # worker or has no rate yet
                "eta_s": max(e for e in etas if e is not None)
                if etas and None not in etas
                else None,
                "shards": len(shards),
            }
    running = next((r for r in runs if r.status == TrainingRun.Status.RUNNING), None)
    if running is not None and (running.progress_total or running.progress_detail):
        return run_progress(running, now=now)
    if any(r.status == TrainingRun.Status.QUEUED for r in runs) and round_.stage != "labeling":
        return {**base, "phase": QUEUED, "unit": ""}
    return base
