from collections.abc import Iterator
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.exports import comparison_rows, jsonl_stream, write_parquet
from labeling.management.cli import get_project, user_errors
from labeling.selectors import comparisons_for_project


class Command(BaseCommand):
    help = (
        "Export a project's pairwise comparisons in TRL's preference format "
        "(prompt/chosen/rejected plus provenance), as JSONL (default: to stdout) or Parquet."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl")
        parser.add_argument("-o", "--output", default=None, help="file to write (default stdout)")
        parser.add_argument("--round", type=int, default=None, help="only this round's pairs")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        project = get_project(str(opts["project"]))
        queryset = comparisons_for_project(project=project, round_number=opts["round"])  # type: ignore[arg-type]
        counter = _Counter()
        rows = counter.count(comparison_rows(queryset))
        output = opts["output"]
        if output is None:
            if opts["format"] == "parquet":
                raise CommandError("Parquet needs a file: pass -o FILE.")
            for chunk in jsonl_stream(rows):
                self.stdout.write(chunk.decode("utf-8"), ending="")
        else:
            _write_atomically(Path(str(output)), rows, str(opts["format"]))
        self.stderr.write(f"Exported {counter.n} comparisons of {project.slug}.")


def _write_atomically(path: Path, rows: Iterator[dict], file_format: str) -> None:
    """Write to a temporary file beside `path`, then rename: no half-written export."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        if file_format == "parquet":
            write_parquet(rows, str(partial))
        else:
            with partial.open("wb") as handle:
                for chunk in jsonl_stream(rows):
                    handle.write(chunk)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


class _Counter:
    def __init__(self) -> None:
        self.n = 0

    def count(self, rows: Iterator[dict]) -> Iterator[dict]:
        for row in rows:
            self.n += 1
            yield row
