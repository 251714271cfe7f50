"""Shared helpers of the round commands: find a project/round, follow progress on the CLI."""

import time

from django.core.management.base import CommandError
from tqdm import tqdm

from labeling.management.cli import get_project, user_errors
from labeling.models import Project
from training.models import Round, TrainingRun
from training.services.rounds import ACTIVE

__all__ = ["follow", "get_project", "latest_round", "user_errors"]

# Stages at which `--wait` stops: people have to label, or the round ended.
RESTING = {Round.Stage.LABELING, Round.Stage.DONE, Round.Stage.FAILED, Round.Stage.CANCELLED}


def latest_round(project: Project) -> Round:
    round_ = (
        Round.objects.filter(project=project, stage__in=[*ACTIVE, Round.Stage.FAILED])
        .order_by("-number")
        .first()
    )
    if round_ is None:
        raise CommandError(f"Project {project.slug} has no round to advance; run start_round.")
    return round_


def follow(round_: Round, *, write, poll: float = 1.0, queued_hint_after: float = 20.0) -> Round:
    """Show a progress bar per stage until the round rests (labeling, done, failed...)."""
    bar: tqdm | None = None
    stage = None
    waited_queued = 0.0
    while True:
        round_.refresh_from_db()
        run = round_.runs.order_by("-id").first()
        if round_.stage != stage:
            if bar is not None:
                bar.close()
            stage = round_.stage
            bar = tqdm(desc=f"round {round_.number}: {stage}", unit="step", leave=True)
        done, total = round_.progress_done, round_.progress_total
        if run is not None and run.status == TrainingRun.Status.RUNNING and run.progress_total:
            done, total = run.progress_done, run.progress_total
        assert bar is not None
        bar.total = total or None
        bar.n = done
        bar.refresh()
        if round_.stage in RESTING:
            bar.close()
            return round_
        if run is not None and run.status == TrainingRun.Status.QUEUED:
            waited_queued += poll
            if waited_queued >= queued_hint_after:
                write("Still queued: is a worker running? (make worker)")
                waited_queued = -1e9
        time.sleep(poll)
