from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from labeling.management.cli import get_project, user_errors
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
            help="the password of a new user (new users without one cannot log in); for an "
            "existing user it replaces their password, and the output says so",
        )

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        username = str(opts["username"])
        password = None if opts["password"] is None else str(opts["password"])
        # The operator may reset an existing user's password here (the API may not).
        existing = get_user_model().objects.filter(username=username).exists()
        membership = membership_add(
            project=project,
            username=username,
            role=str(opts["role"]),
            password=password,
            may_reset_password=True,
        )
        self.stdout.write(
            f"{membership.user.username} is {membership.role} of {project.slug} "
            f"(pseudonym {membership.pseudonym})."
        )
        if password is not None and existing:
            self.stdout.write(f"Changed the password of the existing user {username}.")
        if password is None and not membership.user.has_usable_password():
            self.stdout.write("The user has no password yet: pass --password to set one.")
