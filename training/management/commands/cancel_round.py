from django.core.management.base import BaseCommand, CommandParser

from training.management.commands._rounds import get_project, latest_round, user_errors
from training.services.rounds import round_cancel


class Command(BaseCommand):
    help = "Cancel the project's current round (running training stops at its next step)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        round_ = round_cancel(round_=latest_round(get_project(str(opts["project"]))))
        self.stdout.write(f"Round {round_.number} is {round_.stage}.")
