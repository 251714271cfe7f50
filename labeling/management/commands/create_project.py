from django.core.management.base import BaseCommand, CommandParser

from labeling.management.commands._common import user_errors
from labeling.services.projects import project_create


class Command(BaseCommand):
    help = "Create a labeling project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="short name used in URLs, e.g. support-bot")
        parser.add_argument("--name", default="", help="display name (default: from the slug)")
        parser.add_argument("--k", type=int, default=4, help="responses per prompt (2..9)")
        parser.add_argument("--overlap", type=int, default=1, help="rankings wanted per task")
        parser.add_argument(
            "--base-model", default="default", help="default, tiny, or a model folder/.gguf"
        )

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = project_create(
            slug=str(opts["slug"]),
            name=str(opts["name"]),
            k=int(opts["k"]),  # type: ignore[call-overload]
            overlap=int(opts["overlap"]),  # type: ignore[call-overload]
            base_model=str(opts["base_model"]),
        )
        self.stdout.write(
            f"Created project {project.slug} ({project.name}): K={project.k}, "
            f"overlap={project.overlap}, base model {project.base_model}."
        )
