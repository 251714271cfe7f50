"""Shared pieces of the management commands: find a project, read a file, report user errors.

Public to every app's commands (training's round commands use `get_project` and
`user_errors` too); a command module itself stays a thin door.
"""

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import CommandError

from core.exceptions import ApplicationError
from labeling.models import Project
from labeling.services.imports import ImportResult


def user_errors(handle: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a service's ApplicationError into a CommandError: a clear message, exit code 1."""

    @functools.wraps(handle)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handle(*args, **kwargs)
        except ApplicationError as error:
            raise CommandError(error.message) from error

    return wrapper


def get_project(slug: str) -> Project:
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise CommandError(f"No project {slug!r}.")
    return project


def check_import_file(path: str) -> Path:
    """The file at `path`, if it exists and is within the import size limit."""
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"No such file: {path}")
    limit = settings.RLHF_IMPORT_MAX_BYTES
    size = file.stat().st_size
    if size > limit:
        raise CommandError(
            f"{path} is {size} bytes; the import limit is {limit} bytes "
            "(set RLHF_IMPORT_MAX_BYTES to raise it)."
        )
    return file


def read_import_file(path: str) -> bytes:
    return check_import_file(path).read_bytes()


def describe(result: ImportResult, noun: str, project: Project) -> str:
    """One line for the import summary, naming the lines of the duplicates (a few)."""
    text = f"Imported {result.created} {noun} into {project.slug}"
    if result.duplicates:
        shown = ", ".join(str(line) for line in result.duplicate_lines[:10])
        more = ", ..." if result.duplicates > 10 else ""
        text += f"; {result.duplicates} duplicates skipped (lines {shown}{more})"
    return text + "."
