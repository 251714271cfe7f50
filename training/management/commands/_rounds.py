"""Shared helpers of the round commands: find a project/round, follow progress on the CLI."""

import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from labeling.management.cli import get_project, user_errors
from labeling.models import Project
from training.models import Round
from training.services.progress import QUEUED, round_progress
from training.services.rounds import ACTIVE

__all__ = ["RoundDecisionCommand", "follow", "get_project", "latest_round", "user_errors"]

# Stages at which `--wait` stops: people have to label or review, or the round ended.
RESTING = {
    Round.Stage.LABELING,
    Round.Stage.NEEDS_REVIEW,
    Round.Stage.DONE,
    Round.Stage.FAILED,
    Round.Stage.CANCELLED,
}


class RoundDecisionCommand(BaseCommand):
    """approve_round and reject_round: an admin's decision on the project's round that the
    promotion gate stopped in needs_review (`decide` is the rounds service)."""

    decide: Callable[..., Round]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("--by", default=None, help="username recorded as the reviewer")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        reviewer = None
        if opts["by"] is not None:
            reviewer = get_user_model().objects.filter(username=str(opts["by"])).first()
            if reviewer is None:
                raise CommandError(f"No user {opts['by']}.")
        round_ = latest_round(get_project(str(opts["project"])))
        round_ = self.decide(round_=round_, user=reviewer)
        self.stdout.write(f"Round {round_.number} is {round_.stage} ({round_.review_decision}).")


def latest_round(project: Project) -> Round:
    round_ = (
        Round.objects.filter(project=project, stage__in=[*ACTIVE, Round.Stage.FAILED])
        .order_by("-number")
        .first()
    )
    if round_ is None:
        raise CommandError(f"Project {project.slug} has no round to advance; run start_round.")
    return round_


def follow(
    round_: Round,
    *,
    write: Callable[[str], Any],
    out: Any = None,
    poll: float = 1.0,
    queued_hint_after: float = 20.0,
) -> Round:
    """Follow the round until it rests (labeling, review, done, failed...), reading the
    progress the API serves (`training.services.progress.round_progress`). On a terminal
    (`out` is a TTY) a bar per stage and phase shows done/total, elapsed and ETA; else
    `write` gets one line per stage or phase change."""
    tty = bool(out is not None and out.isatty())
    bar: tqdm | None = None
    shown: tuple[str, str] | None = None
    waited_queued = 0.0
    while True:
        round_.refresh_from_db()
        progress = round_progress(round_)
        key = (str(round_.stage), str(progress["phase"]))
        if key != shown:
            shown = key
            if bar is not None:
                bar.close()
                bar = None
            if not tty:
                write(progress_line(round_, progress))
        if tty:
            if bar is None:
                bar = tqdm(
                    file=getattr(out, "_out", out),
                    bar_format="{desc} |{bar}| {n_fmt}/{total_fmt} {unit} {postfix}",
                    leave=True,
                )
            bar.set_description_str(f"round {round_.number} {round_.stage}: {_phase(progress)}")
            bar.unit = progress["unit"]
            bar.total = progress["total"] or None
            bar.n = progress["done"]
            bar.set_postfix_str(_timing(progress), refresh=False)
            bar.refresh()
        if round_.stage in RESTING:
            if bar is not None:
                bar.close()
            return round_
        if progress["phase"] == QUEUED:
            waited_queued += poll
            if waited_queued >= queued_hint_after:
                write("Still queued: is a worker running? (make worker)")
                waited_queued = -1e9
        time.sleep(poll)


def progress_line(round_: Round, progress: dict[str, Any]) -> str:
    """'round 3 generating: sampling (batch 2/5) 16/84 responses, elapsed 12 s, ETA 40 s'."""
    counts = f" {progress['done']}/{progress['total']} {progress['unit']}".rstrip()
    if not progress["total"]:
        counts = ""
    timing = _timing(progress)
    return f"round {round_.number} {round_.stage}: {_phase(progress)}{counts}" + (
        f", {timing}" if timing else ""
    )


def _phase(progress: dict[str, Any]) -> str:
    phase = progress["phase"] or "-"
    return f"{phase} ({progress['step']})" if progress["step"] else phase


def _timing(progress: dict[str, Any]) -> str:
    parts = []
    if progress["elapsed_s"] is not None:
        parts.append(f"elapsed {duration(progress['elapsed_s'])}")
    if progress["eta_s"] is not None:
        parts.append(f"ETA {duration(progress['eta_s'])}")
    return ", ".join(parts)


def duration(seconds: float) -> str:
    """12 s, 3 min 05 s, 1 h 02 min."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
