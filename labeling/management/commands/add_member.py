from django.core.management.base import BaseCommand, CommandParser

from labeling.management.commands._common import get_project, user_errors
from labeling.models import Membership
from labeling.services.projects import membership_add


class Command(BaseCommand):
    help = "Add a user to a project with a role (creates the user if needed)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("username")
        parser.add_argument("--role", required=True, choices=Membership.Role.values)
        parser.add_argument(
            "--password",
            default=None,
            help="set the password (new users without one cannot log in)",
        )

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        password = opts["password"]
        membership = membership_add(
            project=project,
            username=str(opts["username"]),
            role=str(opts["role"]),
            password=None if password is None else str(password),
        )
        self.stdout.write(
            f"{membership.user.username} is {membership.role} of {project.slug} "
            f"(pseudonym {membership.pseudonym})."
        )
        if password is None and not membership.user.has_usable_password():
            self.stdout.write("The user has no password yet: pass --password to set one.")
