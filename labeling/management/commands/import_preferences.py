from pathlib import Path

from django.core.management.base import BaseCommand, CommandParser

from labeling.management.cli import (
    check_import_file,
    describe,
    get_project,
    user_errors,
)
from labeling.services.imports import parse_preference_file
from labeling.services.task_imports import preferences_import


class Command(BaseCommand):
    help = (
        "Import existing preference data as comparisons usable for RM training: TRL explicit "
        "(prompt/chosen/rejected), implicit (chosen/rejected with a shared prefix, as in "
        "HH-RLHF) or K-wise rankings (prompt/responses/order); JSONL or Parquet. All or nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("file", help=".jsonl or .parquet file")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        path = check_import_file(str(opts["file"]))
        numbered = parse_preference_file(path)
        result = preferences_import(
            project=project,
            examples=[example for _, example in numbered],
            lines=[line for line, _ in numbered],
            source=Path(path).name,
        )
        self.stdout.write(describe(result, "ranked prompts", project))
