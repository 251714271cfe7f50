"""Demonstrations: a labeler's ideal answer to a prompt (InstructGPT's SFT data)."""

from typing import Any

from django.db import transaction

from core.exceptions import ApplicationError
from formats.text import unstorable_reason
from labeling.models import Demonstration, Project, Prompt
from labeling.services.imports import ImportFileError, PromptIn, check_prompt_content
from labeling.services.prompts import prompts_get_or_create

MAX_RESPONSE_CHARS = 100_000


@transaction.atomic
def demonstration_create(
    *,
    project: Project,
    author: Any,
    prompt_id: int | None = None,
    prompt: str | list[dict[str, str]] | None = None,
    response: str,
) -> Demonstration:
    """Store `author`'s answer to a prompt of `project`: an existing one (`prompt_id`) or a
    new prompt written with the answer (`prompt`, a string or a chat; reused if the project
    already has it). Exactly one of the two must be given."""
    if (prompt_id is None) == (prompt is None):
        raise ApplicationError("Give either prompt_id or prompt, not both or neither.")
    if not isinstance(response, str) or not response.strip():
        raise ApplicationError(
            "response: write an answer", extra={"errors": {"response": ["empty"]}}
        )
    if len(response) > MAX_RESPONSE_CHARS:
        raise ApplicationError(f"response: at most {MAX_RESPONSE_CHARS} characters")
    if (reason := unstorable_reason(response)) is not None:
        raise ApplicationError(f"response: {reason}", extra={"errors": {"response": [reason]}})
    row = (
        _existing_prompt(project, prompt_id)
        if prompt_id is not None
        else _new_prompt(project, prompt)
    )
    return Demonstration.objects.create(
        project=project, prompt=row, author=author, response=response
    )


def _existing_prompt(project: Project, prompt_id: int) -> Prompt:
    row = Prompt.objects.filter(project=project, pk=prompt_id).first()
    if row is None:  # a prompt of another project is as unknown as a missing one
        raise ApplicationError(f"prompt_id: no prompt {prompt_id} in this project")
    return row


def _new_prompt(project: Project, content: Any) -> Prompt:
    try:
        item = PromptIn(content=check_prompt_content(content, 0))
    except ImportFileError as error:
        raise ApplicationError(f"prompt: {error.reason}") from None
    return prompts_get_or_create(project=project, items=[item], source="demonstration")[
        item.content_hash
    ]
