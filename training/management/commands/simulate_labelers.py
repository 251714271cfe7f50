import json

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from training.management.commands._rounds import get_project, user_errors
from training.ml.synthetic import VALID_PREFERENCES, PreferenceError
from training.services.simulation import labelers_simulate


class Command(BaseCommand):
    help = (
        "Synthetic labelers rank the project's open tasks by a named preference, through the "
        "same services as people: a dry run of the pipeline before paying for labels."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument(
            "--preference", required=True, help=f"one of: {', '.join(VALID_PREFERENCES)}"
        )
        parser.add_argument("--labelers", type=int, default=3, help="simulated labelers (3)")
        parser.add_argument(
            "--noise",
            type=float,
            default=0.0,
            help="Bradley-Terry temperature in the preference's units (0: exact order)",
        )
        parser.add_argument("--max-tasks", type=int, default=None, help="stop after N rankings")
        parser.add_argument("--seed", type=int, default=0, help="seed of the noise")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        if int(opts["labelers"]) < 1:  # type: ignore[call-overload]
            raise CommandError("--labelers must be at least 1.")
        if float(opts["noise"]) < 0:  # type: ignore[arg-type]
            raise CommandError("--noise must be >= 0.")
        bar = tqdm(desc=f"{project.slug}: simulated rankings", unit="ranking")

        def on_progress(done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()

        try:
            summary = labelers_simulate(
                project=project,
                preference=str(opts["preference"]),
                labelers=int(opts["labelers"]),  # type: ignore[call-overload]
                noise=float(opts["noise"]),  # type: ignore[arg-type]
                max_tasks=opts["max_tasks"],  # type: ignore[arg-type]
                seed=int(opts["seed"]),  # type: ignore[call-overload]
                on_progress=on_progress,
            )
        except PreferenceError as exc:
            raise CommandError(str(exc)) from exc
        finally:
            bar.close()
        self._report(summary)

    def _report(self, summary: dict) -> None:
        agreement = summary["pair_agreement"]
        self.stdout.write(
            f"{summary['rankings']} rankings by {len(summary['labelers'])} simulated labelers "
            f"(preference {summary['preference']}, noise {summary['noise']}) in "
            f"{summary['seconds']:.1f}s; "
            + (f"{agreement:.1%} of pairs agree with the exact preference; " if agreement else "")
            + f"{summary['open_tasks_left']} tasks still open."
        )
        for username, count in sorted(summary["by_labeler"].items()):
            self.stdout.write(f"  {username}: {count}")
        if summary["conflicts"]:
            self.stdout.write(f"  {summary['conflicts']} tasks were closed before submission.")
        self.stdout.write(json.dumps(summary, sort_keys=True))
