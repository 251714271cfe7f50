"""Ranking tasks made from files: pre-generated responses, and existing preference data.

Both imports are all or nothing and deduplicated: a row whose prompt and responses (and,
for preferences, ranking and labeler) are already in the project, or repeated earlier in
the file, is counted as a duplicate and not stored again. Rows are written with
bulk_create in batches, so large preference sets (HH-RLHF) import in minutes, not hours.
"""

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from formats.preferences import RankedExample
from labeling.models import Comparison, Project, Prompt, Ranking, RankingTask, Response
from labeling.services.imports import (
    ImportResult,
    PromptIn,
    ResponseIn,
    ResponsesIn,
    check_prompt_content,
)
from labeling.services.prompts import CHUNK, prompts_get_or_create
from labeling.services.rankings import build_comparisons

IMPORTED = "imported"
PREFERENCES = "preferences"


@transaction.atomic
def tasks_import_responses(
    *, project: Project, items: list[ResponsesIn], source: str = ""
) -> ImportResult:
    """Open ranking tasks (source "imported") from prompts with 2..9 responses each.

    K is the number of responses of each row (it may differ from `project.k`); responses
    keep their order as positions and their provenance (token_count, finished, seed and
    the generator's other fields, such as its response id).
    """
    prompts = prompts_get_or_create(project=project, items=[i.prompt for i in items], source=source)
    seen = _existing_keys(project, prompts.values(), IMPORTED)
    planned: list[tuple[Prompt, list[ResponseIn]]] = []
    duplicate_lines: list[int] = []
    for item in items:
        prompt = prompts[item.prompt.content_hash]
        key = task_key(prompt.content_hash, [response.text for response in item.responses])
        if key in seen:
            duplicate_lines.append(item.line)
            continue
        seen.add(key)
        planned.append((prompt, item.responses))
    tasks = _create_tasks(project, [prompt for prompt, _ in planned], closed=False)
    _create_responses(tasks, [responses for _, responses in planned])
    return ImportResult(len(tasks), len(duplicate_lines), duplicate_lines)


@transaction.atomic
def preferences_import(
    *,
    project: Project,
    examples: list[RankedExample],
    lines: list[int] | None = None,
    source: str = "",
) -> ImportResult:
    """Closed tasks (source "preferences") with an imported Ranking and its Comparisons.

    Each example (a TRL pair is a K=2 ranking) becomes a task whose ranking has no labeler
    (`imported_labeler` keeps the file's labeler name, if any), so its pairs are used for
    RM training and appear in exports; a ranking marked "all unacceptable" is kept as such,
    with no comparisons (safety data, as when a labeler marks it). `lines` numbers the
    examples for error messages and the duplicate report (default: their 1-based
    positions).
    """
    lines = lines or list(range(1, len(examples) + 1))
    items = [_prompt_in(example, line) for example, line in zip(examples, lines, strict=True)]
    prompts = prompts_get_or_create(project=project, items=items, source=source)
    seen = _existing_keys(project, prompts.values(), PREFERENCES)
    planned: list[tuple[Prompt, RankedExample]] = []
    duplicate_lines: list[int] = []
    for item, example in zip(items, examples, strict=True):
        prompt = prompts[item.content_hash]
        key = task_key(
            prompt.content_hash,
            example.responses,
            example.tie_groups,
            example.labeler,
            all_unacceptable=example.all_unacceptable,
        )
        if key in seen:
            duplicate_lines.append(item.line)
            continue
        seen.add(key)
        planned.append((prompt, example))
    tasks = _create_tasks(project, [prompt for prompt, _ in planned], closed=True)
    responses = _create_responses(
        tasks, [[ResponseIn(text=text) for text in example.responses] for _, example in planned]
    )
    _create_rankings(tasks, responses, [example for _, example in planned])
    return ImportResult(len(tasks), len(duplicate_lines), duplicate_lines)


def task_key(
    prompt_hash: str,
    texts: list[str],
    tie_groups: list[list[int]] | None = None,
    labeler: str | None = None,
    *,
    all_unacceptable: bool = False,
) -> str:
    """Dedup key of an imported task: its prompt, responses in order, and ranking."""
    canonical = json.dumps(
        [prompt_hash, texts, tie_groups, labeler, all_unacceptable], ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _prompt_in(example: RankedExample, line: int) -> PromptIn:
    content = check_prompt_content(example.prompt, line)
    metadata = {"prompt_id": example.prompt_id} if example.prompt_id else {}
    return PromptIn(content=content, metadata=metadata, line=line)


def _existing_keys(project: Project, prompts: Iterable[Prompt], task_source: str) -> set[str]:
    """Dedup keys of the tasks of `task_source` already stored for `prompts`."""
    hashes = {prompt.pk: prompt.content_hash for prompt in prompts}
    prompt_ids = sorted(hashes)
    keys: set[str] = set()
    for start in range(0, len(prompt_ids), CHUNK):
        tasks = RankingTask.objects.filter(
            project=project, source=task_source, prompt_id__in=prompt_ids[start : start + CHUNK]
        )
        texts: dict[int, list[str]] = defaultdict(list)
        positions: dict[int, int] = {}
        prompt_of: dict[int, int] = {}
        rows = Response.objects.filter(task__in=tasks).order_by("task_id", "position")
        for task_id, prompt_id, response_id, text in rows.values_list(
            "task_id", "task__prompt_id", "id", "text"
        ):
            positions[response_id] = len(texts[task_id])
            texts[task_id].append(text)
            prompt_of[task_id] = prompt_id
        rankings = _imported_rankings(tasks) if task_source == PREFERENCES else {}
        for task_id, task_texts in texts.items():
            tie_groups, labeler, unacceptable = rankings.get(task_id, (None, None, False))
            if tie_groups is not None:
                tie_groups = [[positions[rid] for rid in group] for group in tie_groups]
            prompt_hash = hashes[prompt_of[task_id]]
            keys.add(
                task_key(
                    prompt_hash, task_texts, tie_groups, labeler, all_unacceptable=unacceptable
                )
            )
    return keys


def _imported_rankings(tasks: Any) -> dict[int, tuple[list[list[int]], str | None, bool]]:
    rankings = Ranking.objects.filter(task__in=tasks, source=IMPORTED)
    return {
        task_id: (tie_groups, labeler or None, unacceptable)
        for task_id, tie_groups, labeler, unacceptable in rankings.values_list(
            "task_id", "tie_groups", "imported_labeler", "all_unacceptable"
        )
    }


def _create_tasks(project: Project, prompts: list[Prompt], *, closed: bool) -> list[RankingTask]:
    status = RankingTask.Status.CLOSED if closed else RankingTask.Status.OPEN
    rows = [
        RankingTask(
            project=project,
            prompt=prompt,
            status=status,
            overlap=1 if closed else project.overlap,
            rankings_count=1 if closed else 0,
            source=PREFERENCES if closed else IMPORTED,
        )
        for prompt in prompts
    ]
    return RankingTask.objects.bulk_create(rows, batch_size=CHUNK)


def _create_responses(
    tasks: list[RankingTask], responses: list[list[ResponseIn]]
) -> list[list[Response]]:
    """The responses of each task, in order (positions 0..K-1), with primary keys."""
    rows = [
        [
            Response(
                task=task,
                position=position,
                text=response.text,
                token_count=response.token_count,
                finished=response.finished,
                seed=response.seed,
                generation=response.generation,
                policy_name=IMPORTED,
            )
            for position, response in enumerate(task_responses)
        ]
        for task, task_responses in zip(tasks, responses, strict=True)
    ]
    Response.objects.bulk_create([row for task_rows in rows for row in task_rows], batch_size=CHUNK)
    return rows


def _create_rankings(
    tasks: list[RankingTask], responses: list[list[Response]], examples: list[RankedExample]
) -> None:
    rankings = [
        Ranking(
            task=task,
            labeler=None,
            tie_groups=[[rows[index].pk for index in group] for group in example.tie_groups],
            source=IMPORTED,
            imported_labeler=(example.labeler or "")[:200],
            all_unacceptable=example.all_unacceptable,
        )
        for task, rows, example in zip(tasks, responses, examples, strict=True)
    ]
    Ranking.objects.bulk_create(rankings, batch_size=CHUNK)
    comparisons = [comparison for ranking in rankings for comparison in build_comparisons(ranking)]
    Comparison.objects.bulk_create(comparisons, batch_size=CHUNK)
