"""Exports of the labeling data, streamed: pairwise comparisons in TRL's preference format
(JSONL or Parquet) and K-wise rankings, raw per labeler and merged by a consensus method.

Rows are plain dicts built from `values_list(...).iterator()` tuples: no model instance per
row, a constant number of queries and memory flat in the row count, so an export of 100,000
comparisons streams in seconds (docs/benchmarks.md).

Comparison rows (TRL's explicit-prompt preference format plus provenance):
    {"prompt", "chosen", "rejected", "prompt_id", "chosen_id", "rejected_id", "ranking_id",
     "labeler", "round", "policy_version", "rejected_policy_version", "margin", "created_at"}
A chat prompt is in TRL's conversational form: `prompt` is the list of messages, `chosen` and
`rejected` are `[{"role": "assistant", "content": ...}]`. One export never mixes the two
forms (a `datasets` column has one type): when any prompt of it is a chat, every row is
conversational and a plain prompt becomes one user message.

`labeler` is the member's pseudonym in the project, never the username. Texts leave as
formats.text.storable_text makes them, so every export can be imported again.
"""

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import groupby
from operator import itemgetter
from typing import IO, Any

from django.db.models import CharField, QuerySet
from django.db.models.functions import Cast

from formats.prompts import Chat
from formats.text import is_storable, storable_text
from labeling.consensus import METHODS, consensus_ranking
from labeling.models import Comparison, Membership, Ranking, Response

Row = dict[str, Any]

CHUNK_SIZE = 2000  # rows fetched per round trip (server-side cursor on PostgreSQL)
JSONL_LINES_PER_CHUNK = 500  # rows per bytes chunk handed to the HTTP response
PARQUET_BATCH_SIZE = 10_000
RAW = "raw"  # the `method` of a labeler's own ranking row

# One encoder for every row: json.dumps(..., separators=...) would build a new one per call.
_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False, allow_nan=False
).encode


# --- Shared pieces ---------------------------------------------------------------------


def has_chat_prompts(queryset: QuerySet[Any], prompt_path: str = "prompt") -> bool:
    """Whether any row of `queryset` has a chat prompt (then the export is conversational)."""
    return queryset.filter(**{f"{prompt_path}__chat__isnull": False}).exists()


def pseudonyms_for(queryset: QuerySet[Any], project_path: str) -> dict[tuple[int, int], str]:
    """{(project_id, user_id): pseudonym} for the projects `queryset` spans (one query)."""
    projects = queryset.order_by().values(project_path)
    return {
        (project_id, user_id): pseudonym
        for project_id, user_id, pseudonym in Membership.objects.filter(
            project_id__in=projects
        ).values_list("project_id", "user_id", "pseudonym")
    }


def iso(moment: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, as `datasets` and pandas parse it."""
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def db_text(path: str) -> Cast:
    """A timestamp read as the database's text: parsing 100,000 timestamps into datetimes
    (and formatting them back) costs more than the rest of a row (measured on PostgreSQL)."""
    return Cast(path, output_field=CharField())


def iso_from_db_text(text: str) -> str:
    """ISO 8601 with a `Z` from the text of a UTC timestamp: PostgreSQL's
    '2026-11-23 21:40:00.5+00' (the session is in UTC) or SQLite's '2026-11-23 21:40:00.5'
    (Django stores UTC there, without an offset). The fraction gets six digits, as `iso`
    writes it: PostgreSQL drops trailing zeros (.611 for .611000)."""
    text = text.replace(" ", "T", 1)
    if text.endswith("+00"):
        text = text[:-3]
    elif not (len(text) <= 26 and "+" not in text and "-" not in text[10:]):
        return iso(datetime.fromisoformat(text))
    whole, dot, fraction = text.partition(".")
    return f"{whole}{dot}{fraction.ljust(6, '0') if dot else ''}Z"


def policy_label(kind: str | None, version: int | None, name: str) -> str | None:
    """A response's sampling policy: the registry label ("ppo-v3") or the imported name."""
    if kind is not None:
        return f"{kind}-v{version}"
    return name or None


def export_prompt(text: str, chat: Chat | None, conversational: bool) -> str | Chat:
    if chat:
        return export_chat(chat)
    text = export_text(text)
    return [{"role": "user", "content": text}] if conversational else text


def export_text(text: str) -> str:
    """Stored text as exports write it. A NUL stored before imports refused it (SQLite
    keeps one) would make the export a file that no import of ours accepts."""
    return text if is_storable(text) else storable_text(text)[0]


def export_chat(chat: Chat) -> Chat:
    if all(is_storable(message["content"]) for message in chat):
        return chat
    return [{**message, "content": export_text(message["content"])} for message in chat]


# --- Comparisons -----------------------------------------------------------------------

COMPARISON_COLUMNS = (
    "prompt__text",
    "prompt__chat",
    "chosen__text",
    "rejected__text",
    "prompt_id",
    "chosen_id",
    "rejected_id",
    "ranking_id",
    "project_id",
    "ranking__labeler_id",
    "round__number",
    "chosen__policy_version__kind",
    "chosen__policy_version__version",
    "chosen__policy_name",
    "rejected__policy_version__kind",
    "rejected__policy_version__version",
    "rejected__policy_name",
    "margin",
    "export_created_at",
)


def comparison_rows(
    queryset: QuerySet[Comparison], *, conversational: bool | None = None
) -> Iterator[Row]:
    """TRL preference rows for the comparisons of `queryset` (scoped by a selector), in its
    order. `conversational=None` decides the form from the data (see the module doc)."""
    if conversational is None:
        conversational = has_chat_prompts(queryset)
    pseudonyms = pseudonyms_for(queryset, "project_id")
    labels: dict[tuple[str | None, int | None, str], str | None] = {}
    rows = (
        queryset.prefetch_related(None)  # tuples: nothing to prefetch into
        .annotate(export_created_at=db_text("created_at"))
        .values_list(*COMPARISON_COLUMNS)
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for values in rows:
        yield _comparison_row(values, pseudonyms, labels, conversational)


def _comparison_row(
    values: Sequence[Any],
    pseudonyms: dict[tuple[int, int], str],
    labels: dict[tuple[str | None, int | None, str], str | None],
    conversational: bool,
) -> Row:
    """One row from the COMPARISON_COLUMNS of a comparison; `labels` caches policy labels."""
    prompt_text, chat, chosen_text, rejected_text = values[:4]
    prompt_id, chosen_id, rejected_id, ranking_id, project_id, labeler_id = values[4:10]
    round_number, margin, created_at = values[10], values[17], values[18]
    chosen_policy, rejected_policy = tuple(values[11:14]), tuple(values[14:17])
    for policy in (chosen_policy, rejected_policy):
        if policy not in labels:
            labels[policy] = policy_label(*policy)
    prompt: str | Chat = export_prompt(prompt_text, chat, conversational)
    chosen_text, rejected_text = export_text(chosen_text), export_text(rejected_text)
    if conversational:
        chosen: str | Chat = [{"role": "assistant", "content": chosen_text}]
        rejected: str | Chat = [{"role": "assistant", "content": rejected_text}]
    else:
        chosen, rejected = chosen_text, rejected_text
    return {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "prompt_id": prompt_id,
        "chosen_id": chosen_id,
        "rejected_id": rejected_id,
        "ranking_id": ranking_id,
        "labeler": pseudonyms.get((project_id, labeler_id)),
        "round": round_number,
        "policy_version": labels[chosen_policy],
        "rejected_policy_version": labels[rejected_policy],
        "margin": margin,
        "created_at": iso_from_db_text(created_at),
    }


def jsonl_stream(
    rows: Iterable[Row], *, lines_per_chunk: int = JSONL_LINES_PER_CHUNK
) -> Iterator[bytes]:
    """UTF-8 JSON Lines, a few hundred rows per chunk (one HTTP write each)."""
    lines: list[str] = []
    for row in rows:
        lines.append(_encode(row))
        if len(lines) >= lines_per_chunk:
            lines.append("")
            yield "\n".join(lines).encode("utf-8")
            lines = []
    if lines:
        lines.append("")
        yield "\n".join(lines).encode("utf-8")


# --- Parquet -----------------------------------------------------------------------------


def comparison_schema(conversational: bool) -> Any:
    """The Arrow schema of comparison rows (the prompt/chosen/rejected types depend on form)."""
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    text = messages if conversational else pa.string()
    return pa.schema(
        [
            ("prompt", text),
            ("chosen", text),
            ("rejected", text),
            ("prompt_id", pa.int64()),
            ("chosen_id", pa.int64()),
            ("rejected_id", pa.int64()),
            ("ranking_id", pa.int64()),
            ("labeler", pa.string()),
            ("round", pa.int64()),
            ("policy_version", pa.string()),
            ("rejected_policy_version", pa.string()),
            ("margin", pa.int64()),
            ("created_at", pa.string()),
        ]
    )


def write_parquet(
    rows: Iterable[Row],
    file: str | IO[bytes],
    *,
    batch_size: int = PARQUET_BATCH_SIZE,
    schema: Any = None,
) -> int:
    """Write comparison rows to Parquet, one record batch (row group) per `batch_size` rows,
    so memory holds one batch at a time. Returns the number of rows written.

    Without `schema`, the comparison schema in the form of the first row (conversational
    when its prompt is a list) is used.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    batches = _batches(rows, batch_size)
    first = next(batches, [])
    if schema is None:
        schema = comparison_schema(bool(first) and isinstance(first[0]["prompt"], list))
    written = 0
    with pq.ParquetWriter(file, schema, compression="zstd") as writer:
        for batch in [first] if first else []:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            written += len(batch)
        for batch in batches:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
            written += len(batch)
    return written


def _batches(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- K-wise rankings -----------------------------------------------------------------------

RANKING_COLUMNS = (
    "id",
    "task_id",
    "task__prompt_id",
    "task__prompt__text",
    "task__prompt__chat",
    "task__project_id",
    "task__round__number",
    "labeler_id",
    "tie_groups",
    "flags",
    "all_unacceptable",
    "time_spent_ms",
    "export_created_at",
)


def ranking_rows(
    queryset: QuerySet[Ranking],
    consensus: str | None = None,
    *,
    conversational: bool | None = None,
) -> Iterator[Row]:
    """K-wise rows, grouped by task: each labeler's ranking (`"method": "raw"`), then, with
    `consensus` (one of labeling.consensus.METHODS), one merged row per task.

    A row: {"prompt", "responses": [{"id", "text"}], "order": [[id, ...], ...] (tie groups,
    best first), "labeler", "flags", "all_unacceptable", "round", "task_id", "prompt_id",
    "time_spent_ms", "ranking_id", "method", "n_rankings", "created_at"} -- the shape
    `python -m training.ml train-rm --data` reads. Three queries, whatever the row count:
    rankings and responses are read as two streams sorted by task and merged.
    """
    if consensus is not None and consensus not in METHODS:
        raise ValueError(f"unknown consensus method {consensus!r}")
    if conversational is None:
        conversational = has_chat_prompts(queryset, "task__prompt")
    pseudonyms = pseudonyms_for(queryset, "task__project_id")
    rankings = (
        queryset.prefetch_related(None)
        .annotate(export_created_at=db_text("created_at"))
        .order_by("task_id", "id")
        .values_list(*RANKING_COLUMNS)
    )
    responses = _ResponsesByTask(queryset)
    for task_id, task_rankings in groupby(rankings.iterator(chunk_size=CHUNK_SIZE), itemgetter(1)):
        texts = responses.of(task_id)
        raw = [_raw_row(r, texts, pseudonyms, conversational) for r in task_rankings]
        yield from raw
        if consensus is not None:
            yield consensus_row(raw, consensus)


class _ResponsesByTask:
    """The responses of the exported tasks, read as one stream in task order and handed out
    task by task, alongside the rankings stream (a merge join: no query per task)."""

    def __init__(self, queryset: QuerySet[Ranking]) -> None:
        stream = (
            Response.objects.filter(task_id__in=queryset.order_by().values("task_id"))
            .order_by("task_id", "position")
            .values_list("task_id", "id", "text")
            .iterator(chunk_size=CHUNK_SIZE * 4)
        )
        self._groups = groupby(stream, itemgetter(0))
        self._current: tuple[int | None, list[dict[str, Any]]] = (-1, [])

    def of(self, task_id: int) -> list[dict[str, Any]]:
        """[{"id", "text"}...] of `task_id`; call with ascending task ids."""
        key, responses = self._current
        while key is not None and key < task_id:
            key, items = next(self._groups, (None, ()))
            responses = [
                {"id": response_id, "text": export_text(text)} for _, response_id, text in items
            ]
        self._current = (key, responses)
        return responses if key == task_id else []


def _raw_row(
    values: Sequence[Any],
    responses: list[dict[str, Any]],
    pseudonyms: dict[tuple[int, int], str],
    conversational: bool,
) -> Row:
    (ranking_id, task_id, prompt_id, text, chat, project_id, round_number, labeler_id) = values[:8]
    tie_groups, flags, all_unacceptable, time_spent_ms, created_at = values[8:]
    return {
        "prompt": export_prompt(text, chat, conversational),
        "responses": responses,
        "order": tie_groups,
        "labeler": pseudonyms.get((project_id, labeler_id)),
        "flags": flags,
        "all_unacceptable": all_unacceptable,
        "round": round_number,
        "task_id": task_id,
        "prompt_id": prompt_id,
        "time_spent_ms": time_spent_ms,
        "ranking_id": ranking_id,
        "method": RAW,
        "n_rankings": 1,
        "created_at": iso_from_db_text(created_at),
    }


def consensus_row(raw: list[Row], method: str) -> Row:
    """One task's merged row from its raw rows (all of the same task).

    The order merges the rankings that are not "all unacceptable" (those carry no order);
    the task counts as all unacceptable when more than half of its labelers said so, and its
    order is then a single group (no pairs to learn from). Flags are the union of everyone's.
    """
    first = raw[0]
    ranked = [row["order"] for row in raw if not row["all_unacceptable"]]
    unacceptable = 2 * (len(raw) - len(ranked)) > len(raw)
    all_ids = [response["id"] for response in first["responses"]]
    order = [all_ids] if unacceptable or not ranked else consensus_ranking(ranked, method)
    flags: dict[str, list[str]] = {}
    for row in raw:
        for response_id, names in row["flags"].items():
            merged = flags.setdefault(response_id, [])
            merged.extend(name for name in names if name not in merged)
    return {
        **first,
        "order": order,
        "labeler": None,
        "flags": flags,
        "all_unacceptable": unacceptable,
        "time_spent_ms": sum(row["time_spent_ms"] for row in raw),
        "ranking_id": None,
        "method": method,
        "n_rankings": len(raw),
        "created_at": max(row["created_at"] for row in raw),
    }
