from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from labeling.management.cli import (
    describe,
    get_project,
    read_import_file,
    user_errors,
)
from labeling.services.imports import parse_prompt_file
from labeling.services.prompts import prompts_import


class Command(BaseCommand):
    help = (
        'Import prompts from JSONL ({"prompt": str | chat}) or CSV (a "prompt" column). '
        "All or nothing: a bad line fails the import with its line number."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("file", help=".jsonl or .csv file")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        path = str(opts["file"])
        items = parse_prompt_file(read_import_file(path), path)
        result = prompts_import(project=project, items=items, source=Path(path).name)
        self.stdout.write(describe(result, "prompts", project))
