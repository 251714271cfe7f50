"""Exports: TRL's preference format, chat prompts, pseudonyms, Parquet, K-wise rankings and
consensus rows, and a constant number of queries whatever the row count."""

import io
import json
from datetime import UTC, datetime

import pyarrow.json as pa_json
import pyarrow.parquet as pq
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from labeling.exports import (
    comparison_rows,
    iso,
    iso_from_db_text,
    jsonl_stream,
    ranking_rows,
    write_parquet,
)
from labeling.models import Comparison, Membership, Project, Ranking, RankingTask
from labeling.selectors import comparisons_for_project, rankings_for_project
from labeling.services.leasing import task_lease_next
from labeling.services.rankings import ranking_submit
from tests.factories import (
    MembershipFactory,
    ModelVersionFactory,
    ProjectFactory,
    PromptFactory,
    RankingTaskFactory,
    RoundFactory,
)
from training.ml.preferences import parse_record

CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a bird."},
]


def rank(
    project: Project, user: object, order: list[list[int]], **kwargs: object
) -> tuple[RankingTask, Ranking]:
    """Lease the user's next task and rank it; `order` holds response positions."""
    assignment = task_lease_next(project=project, labeler=user)
    assert assignment is not None
    task = assignment.task
    ids = list(task.responses.order_by("position").values_list("id", flat=True))
    kwargs.setdefault("flags", None)
    ranking = ranking_submit(
        task=task,
        labeler=user,
        order=[[ids[p] for p in group] for group in order],
        time_spent_ms=1200,
        **kwargs,  # type: ignore[arg-type]
    )
    return task, ranking


def export(project: Project, **kwargs: object) -> list[dict]:
    return list(comparison_rows(comparisons_for_project(project=project), **kwargs))  # type: ignore[arg-type]


@pytest.fixture
def k3_project(db) -> Project:
    return ProjectFactory(k=3)


def test_text_prompt_rows_are_trl_explicit_preferences(k3_project, labeler) -> None:
    MembershipFactory(project=k3_project, user=labeler)
    task = RankingTaskFactory(project=k3_project, responses=["first", "second", "third é"])
    _, ranking = rank(k3_project, labeler, [[2], [0, 1]])  # third > first = second
    pseudonym = Membership.objects.get(project=k3_project, user=labeler).pseudonym
    rows = export(k3_project)
    ids = list(task.responses.order_by("position").values_list("id", flat=True))
    assert [(r["chosen"], r["rejected"]) for r in rows] == [
        ("third é", "first"),
        ("third é", "second"),
    ]
    first = rows[0]
    comparison = Comparison.objects.order_by("id").first()
    assert first == {
        "prompt": task.prompt.text,
        "chosen": "third é",
        "rejected": "first",
        "prompt_id": task.prompt_id,
        "chosen_id": ids[2],
        "rejected_id": ids[0],
        "ranking_id": ranking.pk,
        "labeler": pseudonym,
        "round": None,
        "policy_version": "imported",
        "rejected_policy_version": "imported",
        "margin": 1,
        "created_at": comparison.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    assert labeler.username not in json.dumps(rows)


def test_chat_prompts_are_in_trls_conversational_form(k3_project, labeler) -> None:
    prompt = PromptFactory(project=k3_project, chat=CHAT, text="Name a bird.")
    RankingTaskFactory(project=k3_project, prompt=prompt, responses=["Robin.", "A bird.", "Tree."])
    rank(k3_project, labeler, [[0], [1], [2]])
    rows = export(k3_project)
    assert len(rows) == 3
    assert rows[0]["prompt"] == CHAT
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "Robin."}]
    assert rows[0]["rejected"] == [{"role": "assistant", "content": "A bird."}]
    assert rows[2]["margin"] == 1 and rows[1]["margin"] == 2


def test_one_chat_prompt_makes_the_whole_export_conversational(k3_project, labeler) -> None:
    RankingTaskFactory(project=k3_project, responses=["a", "b", "c"])
    chat_prompt = PromptFactory(project=k3_project, chat=CHAT, text="Name a bird.")
    RankingTaskFactory(project=k3_project, prompt=chat_prompt, responses=["d", "e", "f"])
    text_task, _ = rank(k3_project, labeler, [[0], [1], [2]])
    rank(k3_project, labeler, [[0], [1], [2]])
    rows = export(k3_project)
    text_row = next(r for r in rows if r["prompt_id"] == text_task.prompt_id)
    assert text_row["prompt"] == [{"role": "user", "content": text_task.prompt.text}]
    assert text_row["chosen"] == [{"role": "assistant", "content": "a"}]
    # A `datasets` JSON column has one type: pyarrow (what `datasets` reads JSON with)
    # must load the whole file as one table.
    table = pa_json.read_json(io.BytesIO(b"".join(jsonl_stream(rows))))
    assert table.num_rows == 6
    # The caller may also force the conversational form.
    assert isinstance(export(k3_project, conversational=True)[0]["prompt"], list)


def test_round_and_policy_version_provenance(k3_project, labeler) -> None:
    round_ = RoundFactory(project=k3_project, number=3)
    task = RankingTaskFactory(project=k3_project, round=round_, responses=["a", "b", "c"])
    ppo = ModelVersionFactory(project=k3_project, kind="ppo", version=7)
    task.responses.filter(position=0).update(policy_version=ppo)
    task.responses.filter(position=1).update(policy_name="", policy_version=None)
    rank(k3_project, labeler, [[0], [1], [2]])
    rows = export(k3_project)
    assert {r["round"] for r in rows} == {3}
    first = rows[0]  # response 0 over response 1
    assert (first["policy_version"], first["rejected_policy_version"]) == ("ppo-v7", None)
    assert rows[2]["policy_version"] is None and rows[2]["rejected_policy_version"] == "imported"
    assert list(comparison_rows(comparisons_for_project(project=k3_project, round_number=4))) == []


def test_rows_are_readable_by_the_rm_trainer(k3_project, labeler) -> None:
    RankingTaskFactory(project=k3_project, responses=["good", "ok", "bad"])
    rank(k3_project, labeler, [[0], [1], [2]])
    for line, row in enumerate(export(k3_project), start=1):
        example = parse_record(json.loads(json.dumps(row)), "export.jsonl", line)
        assert example.tie_groups == [[0], [1]]
        assert example.labeler == row["labeler"]


def test_query_count_is_constant_in_the_row_count(project, labeler) -> None:
    def queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as ctx:
            rows = comparison_rows(comparisons_for_project(project=project))
            n = sum(chunk.count(b"\n") for chunk in jsonl_stream(rows, lines_per_chunk=4))
        return n, len(ctx.captured_queries)

    RankingTaskFactory(project=project)
    rank(project, labeler, [[0], [1], [2], [3]])
    small = queries()
    for _ in range(5):
        RankingTaskFactory(project=project)
        rank(project, labeler, [[0], [1, 2], [3]])
    large = queries()
    assert (small[0], large[0]) == (6, 6 + 5 * 5)
    assert small[1] == large[1] == 3  # chat check, pseudonyms, the rows themselves


def test_jsonl_stream_chunks_lines() -> None:
    rows = [{"i": i, "text": "é\n<b>"} for i in range(7)]
    chunks = list(jsonl_stream(rows, lines_per_chunk=3))
    assert len(chunks) == 3
    data = b"".join(chunks)
    assert data.endswith(b"\n") and data.count(b"\n") == 7
    assert [json.loads(line) for line in data.splitlines()] == rows
    assert "é".encode() in data  # UTF-8, not \u escapes
    assert list(jsonl_stream([])) == []


@pytest.mark.parametrize("chat", [None, CHAT])
def test_parquet_roundtrip(k3_project, labeler, tmp_path, chat) -> None:
    for i in range(3):
        prompt = PromptFactory(project=k3_project, chat=chat, text=f"Prompt {i}")
        RankingTaskFactory(project=k3_project, prompt=prompt, responses=["x", "y", "z"])
        rank(k3_project, labeler, [[0], [1], [2]])
    rows = export(k3_project)
    path = tmp_path / "pairs.parquet"
    assert write_parquet(iter(rows), str(path), batch_size=4) == 9
    assert pq.ParquetFile(path).metadata.num_row_groups == 3  # written batch by batch
    assert pq.read_table(path).to_pylist() == rows
    buffer = io.BytesIO()
    write_parquet(iter(rows), buffer)
    assert pq.read_table(io.BytesIO(buffer.getvalue())).to_pylist() == rows


def test_empty_parquet_export_is_readable(tmp_path) -> None:
    path = tmp_path / "empty.parquet"
    assert write_parquet(iter([]), str(path)) == 0
    table = pq.read_table(path)
    assert table.num_rows == 0 and "chosen" in table.column_names


def test_iso_from_db_text() -> None:
    # PostgreSQL drops trailing zeros; the export writes what `iso` writes for the moment,
    # whatever its digits (the row test once failed on a .611000 timestamp).
    assert iso_from_db_text("2026-11-23 21:40:00.25+00") == "2026-11-23T21:40:00.250000Z"
    assert iso_from_db_text("2026-11-23 21:40:00.611+00") == iso(
        datetime(2026, 11, 23, 21, 40, 0, 611000, tzinfo=UTC)
    )
    assert iso_from_db_text("2026-11-23 21:40:00.5") == "2026-11-23T21:40:00.500000Z"
    assert iso_from_db_text("2026-11-23 21:40:00.123456") == "2026-11-23T21:40:00.123456Z"
    assert iso_from_db_text("2026-11-23 21:40:00") == "2026-11-23T21:40:00Z"
    assert iso_from_db_text("2026-11-23 23:40:00+02:00") == "2026-11-23T21:40:00Z"
    parsed = datetime.fromisoformat(iso_from_db_text("2026-11-23 21:40:00+00"))
    assert parsed == datetime(2026, 11, 23, 21, 40, tzinfo=UTC)


# --- K-wise rankings -------------------------------------------------------------------


@pytest.fixture
def overlap_project(db) -> Project:
    return ProjectFactory(k=3, overlap=3)


def _members(project: Project, n: int) -> list:
    return [MembershipFactory(project=project).user for _ in range(n)]


def test_raw_ranking_rows(overlap_project) -> None:
    (alice,) = _members(overlap_project, 1)
    task = RankingTaskFactory(project=overlap_project, responses=["a", "b", "c"])
    ids = list(task.responses.order_by("position").values_list("id", flat=True))
    _, ranking = rank(overlap_project, alice, [[1], [0, 2]], flags={str(ids[2]): ["harmful"]})
    (row,) = ranking_rows(rankings_for_project(project=overlap_project))
    pseudonym = Membership.objects.get(project=overlap_project, user=alice).pseudonym
    assert row == {
        "prompt": task.prompt.text,
        "responses": [
            {"id": ids[0], "text": "a"},
            {"id": ids[1], "text": "b"},
            {"id": ids[2], "text": "c"},
        ],
        "order": [[ids[1]], [ids[0], ids[2]]],
        "labeler": pseudonym,
        "flags": {str(ids[2]): ["harmful"]},
        "all_unacceptable": False,
        "round": None,
        "task_id": task.pk,
        "prompt_id": task.prompt_id,
        "time_spent_ms": 1200,
        "ranking_id": ranking.pk,
        "method": "raw",
        "n_rankings": 1,
        "created_at": ranking.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    example = parse_record(json.loads(json.dumps(row)), "rankings.jsonl", 1)
    assert example.tie_groups == [[1], [0, 2]] and example.responses == ["a", "b", "c"]


def test_consensus_rows_follow_the_raw_rows_of_their_task(overlap_project) -> None:
    labelers = _members(overlap_project, 3)
    first = RankingTaskFactory(project=overlap_project, responses=["a", "b", "c"])
    second = RankingTaskFactory(project=overlap_project, responses=["d", "e", "f"])
    a, b, c = first.responses.order_by("position").values_list("id", flat=True)
    # First task: two labelers say a > b > c, one says c > a > b -> ranked pairs a > b > c.
    # Second task: everyone ranks it e > d > f except the last, who says all unacceptable.
    for user, order in zip(
        labelers, ([[0], [1], [2]], [[0], [1], [2]], [[2], [0], [1]]), strict=True
    ):
        rank(overlap_project, user, order)
    for user in labelers[:2]:
        rank(overlap_project, user, [[1], [0], [2]])
    rank(overlap_project, labelers[2], [], all_unacceptable=True)
    rows = list(ranking_rows(rankings_for_project(project=overlap_project), "ranked_pairs"))
    assert [(r["task_id"], r["method"]) for r in rows] == [
        *[(first.pk, "raw")] * 3,
        (first.pk, "ranked_pairs"),
        *[(second.pk, "raw")] * 3,
        (second.pk, "ranked_pairs"),
    ]
    merged_first, merged_second = rows[3], rows[7]
    assert merged_first["order"] == [[a], [b], [c]]
    assert (merged_first["labeler"], merged_first["ranking_id"], merged_first["n_rankings"]) == (
        None,
        None,
        3,
    )
    assert merged_first["time_spent_ms"] == 3 * 1200
    d, e, f = second.responses.order_by("position").values_list("id", flat=True)
    assert merged_second["order"] == [[e], [d], [f]]  # one all-unacceptable of three: a minority
    assert merged_second["all_unacceptable"] is False
    borda_rows = list(ranking_rows(rankings_for_project(project=overlap_project), "borda"))
    assert borda_rows[3]["method"] == "borda"
    # Every row keeps one key set and one type per key: a JSON table for `datasets`.
    table = pa_json.read_json(io.BytesIO(b"".join(jsonl_stream(rows))))
    assert table.num_rows == 8


def test_ranking_export_query_count_is_constant(overlap_project) -> None:
    labelers = _members(overlap_project, 2)

    def queries() -> tuple[int, int]:
        with CaptureQueriesContext(connection) as ctx:
            n = len(list(ranking_rows(rankings_for_project(project=overlap_project), "borda")))
        return n, len(ctx.captured_queries)

    RankingTaskFactory(project=overlap_project)
    for user in labelers:
        rank(overlap_project, user, [[0], [1], [2]])
    small = queries()
    for _ in range(4):
        RankingTaskFactory(project=overlap_project)
        for user in labelers:
            rank(overlap_project, user, [[2], [1], [0]])
    large = queries()
    assert (small[0], large[0]) == (3, 15)
    assert small[1] == large[1] == 4  # chat check, pseudonyms, rankings, responses


def test_unknown_consensus_method_is_refused(overlap_project) -> None:
    with pytest.raises(ValueError, match="unknown consensus"):
        list(ranking_rows(rankings_for_project(project=overlap_project), "kemeny"))
