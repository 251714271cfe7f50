from django.core.management.base import BaseCommand, CommandParser

from labeling.management.cli import user_errors
from labeling.services.projects import api_token_create, api_token_revoke


class Command(BaseCommand):
    help = "Print a user's API token (created if needed), or revoke it with --revoke."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument(
            "--revoke", action="store_true", help="delete the token; requests with it fail"
        )

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        username = str(opts["username"])
        if opts["revoke"]:
            api_token_revoke(username=username)
            self.stdout.write(f"Revoked the API token of {username}.")
            return
        # Only the key on stdout, so scripts can do KEY=$(manage.py create_api_token bob).
        self.stdout.write(api_token_create(username=username))
