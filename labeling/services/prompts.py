"""Writes of prompts: imports (all or nothing, deduplicated by content) and look-ups by content."""

from collections.abc import Iterable

from django.db import IntegrityError, transaction

from core.exceptions import ConflictError
from labeling.models import Project, Prompt
from labeling.services.imports import ImportResult, PromptIn
from labeling.services.moderation import moderate_new, moderation_rules

# Keeps `IN (...)` lists under SQLite's limit on query parameters.
CHUNK = 500


@transaction.atomic
def prompts_import(*, project: Project, items: list[PromptIn], source: str = "") -> ImportResult:
    """Store `items` in `project`; prompts already there (or repeated in `items`) are counted
    as duplicates and not stored twice. All or nothing."""
    existing = existing_prompts(project=project, hashes=[item.content_hash for item in items])
    new: dict[str, Prompt] = {}
    duplicate_lines: list[int] = []
    for item in items:
        key = item.content_hash
        if key in existing or key in new:
            duplicate_lines.append(item.line)
            continue
        new[key] = _prompt_row(project, item, source)
    flagged = _bulk_create(project, list(new.values()))
    return ImportResult(
        created=len(new),
        duplicates=len(duplicate_lines),
        duplicate_lines=duplicate_lines,
        flagged=flagged,
    )


def existing_prompts(*, project: Project, hashes: Iterable[str]) -> dict[str, Prompt]:
    """The project's prompts whose content hash is in `hashes`, keyed by hash."""
    wanted = sorted(set(hashes))
    found: dict[str, Prompt] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        for prompt in Prompt.objects.filter(project=project, content_hash__in=chunk):
            found[prompt.content_hash] = prompt
    return found


def prompts_get_or_create(
    *, project: Project, items: list[PromptIn], source: str
) -> dict[str, Prompt]:
    """Every prompt of `items` as a row (existing ones reused, new ones created), by hash.

    Call inside a transaction: the caller's import must be all or nothing.
    """
    found = existing_prompts(project=project, hashes=[item.content_hash for item in items])
    new: dict[str, Prompt] = {}
    for item in items:
        if item.content_hash not in found and item.content_hash not in new:
            new[item.content_hash] = _prompt_row(project, item, source)
    _bulk_create(project, list(new.values()))
    return {**found, **new}


def _prompt_row(project: Project, item: PromptIn, source: str) -> Prompt:
    return Prompt(
        project=project,
        text=item.text,
        chat=item.chat,
        content_hash=item.content_hash,
        source=source[:200],
        split=item.split,
        metadata=item.metadata,
    )


def _bulk_create(project: Project, prompts: list[Prompt]) -> int:
    """Create `prompts` after the project's moderation rules ran on them; returns how many
    the rules flagged (held out of rounds, labeling.services.moderation)."""
    flagged = moderate_new(prompts, moderation_rules(project))
    # PostgreSQL and SQLite >= 3.35 return the new primary keys, which callers rely on.
    try:
        with transaction.atomic():
            Prompt.objects.bulk_create(prompts, batch_size=CHUNK)
    except IntegrityError:
        raise ConflictError(
            "Another import added some of these prompts at the same time; retry the import."
        ) from None
    return flagged
