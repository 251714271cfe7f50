from django.core.management.base import BaseCommand, CommandParser

from training.management.commands._rounds import follow, get_project, latest_round, user_errors
from training.services.rounds import round_advance


class Command(BaseCommand):
    help = "End labeling of the project's current round early, or retry its failed stage."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("--wait", action="store_true", help="follow progress until it rests")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        round_ = round_advance(round_=latest_round(project))
        self.stdout.write(f"Round {round_.number} is now {round_.stage}.")
        if opts["wait"]:
            round_ = follow(round_, write=self.stdout.write, out=self.stdout)
            self.stdout.write(f"Round {round_.number} is {round_.stage}.")
            if round_.error:
                self.stderr.write(round_.error)
