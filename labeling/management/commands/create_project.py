import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.management.cli import user_errors
from labeling.services.projects import project_create


class Command(BaseCommand):
    help = "Create a labeling project."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="short name used in URLs, e.g. support-bot")
        parser.add_argument("--name", default="", help="display name (default: from the slug)")
        parser.add_argument("--k", type=int, default=4, help="responses per prompt (2..9)")
        parser.add_argument("--overlap", type=int, default=1, help="rankings wanted per task")
        parser.add_argument(
            "--base-model",
            default="default",
            help="default, tiny, or a model folder/.gguf under RLHF_MODEL_ROOTS",
        )
        parser.add_argument(
            "--training-config",
            metavar="FILE",
            help="a JSON file of training settings (keys: docs/concepts.md)",
        )

    @user_errors
    def handle(self, *args: object, **opts: Any) -> None:
        project = project_create(
            slug=str(opts["slug"]),
            name=str(opts["name"]),
            k=int(opts["k"]),
            overlap=int(opts["overlap"]),
            base_model=str(opts["base_model"]),
            training_config=read_training_config(opts["training_config"]),
        )
        self.stdout.write(
            f"Created project {project.slug} ({project.name}): K={project.k}, "
            f"overlap={project.overlap}, base model {project.base_model}."
        )


def read_training_config(path: str | None) -> Any:
    """The JSON value in the file at `path` ({} without one); the service checks it."""
    if path is None:
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise CommandError(f"--training-config: cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise CommandError(f"--training-config: {path} is not JSON: {error}") from None
