from django.core.management.base import BaseCommand, CommandParser

from training.management.commands._rounds import follow, get_project, user_errors
from training.services.rounds import RECIPES, round_start


class Command(BaseCommand):
    help = "Start the next round of a project: the current policy samples K responses per prompt."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("--prompts", type=int, default=None, help="prompts to sample")
        parser.add_argument(
            "--recipe",
            choices=RECIPES,
            default=None,
            help="how the policy stage trains (default: training_config's recipe, else ppo)",
        )
        parser.add_argument(
            "--wait", action="store_true", help="follow progress until the round needs labels"
        )

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        round_ = round_start(
            project=project,
            num_prompts=opts["prompts"],  # type: ignore[arg-type]
            recipe=opts["recipe"],  # type: ignore[arg-type]
        )
        self.stdout.write(
            f"Round {round_.number} of {project.slug} started (id {round_.id}, recipe "
            f"{round_.recipe}), sampling from "
            f"{round_.sampling_policy.label if round_.sampling_policy else '?'}."
        )
        if opts["wait"]:
            round_ = follow(round_, write=self.stdout.write, out=self.stdout)
            self.stdout.write(f"Round {round_.number} is {round_.stage}.")
            if round_.error:
                self.stderr.write(round_.error)
