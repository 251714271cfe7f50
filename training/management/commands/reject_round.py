from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from training.management.commands._rounds import get_project, latest_round, user_errors
from training.services.rounds import round_reject


class Command(BaseCommand):
    help = (
        "Reject the project's round that the promotion gate stopped in needs_review: the "
        "round ends (done, rejected) and the current models stay current."
    )

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
        round_ = round_reject(round_=round_, user=reviewer)
        self.stdout.write(f"Round {round_.number} is {round_.stage} ({round_.review_decision}).")
