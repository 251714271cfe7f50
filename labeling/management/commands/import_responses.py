from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from labeling.management.cli import (
    describe,
    get_project,
    read_import_file,
    user_errors,
)
from labeling.services.imports import parse_response_file
from labeling.services.task_imports import tasks_import_responses


class Command(BaseCommand):
    help = (
        'Import ranking tasks: JSONL rows {"prompt": ..., "responses": [str | {"text", ...}]} '
        "with 2..9 responses each (the output of `python -m training.ml generate` works). "
        "All or nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("file", help=".jsonl file")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        path = str(opts["file"])
        items = parse_response_file(read_import_file(path), path)
        result = tasks_import_responses(project=project, items=items, source=Path(path).name)
        self.stdout.write(describe(result, "ranking tasks", project))
