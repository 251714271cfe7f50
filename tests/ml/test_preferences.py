"""The ML core's preference reader: every format from a file, the HH-RLHF split, and errors
naming the file and the line (the rules themselves: tests/formats)."""

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from training.ml.preferences import (
    DataError,
    RankedExample,
    pairwise_rows,
    read_preferences,
)


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def test_explicit_format_strings(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "p.jsonl",
        [{"prompt": "Hi?", "chosen": " Hello!", "rejected": " Go away.", "labeler": "ann"}],
    )
    [example] = read_preferences(path)
    assert example == RankedExample("Hi?", [" Hello!", " Go away."], [[0], [1]], labeler="ann")
    assert example.pairs == [(0, 1, 1)]


def test_explicit_format_conversational(tmp_path: Path) -> None:
    prompt = [{"role": "user", "content": "Hi?"}]
    record = {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": "Hello!"}],
        "rejected": [{"role": "assistant", "content": "No."}],
    }
    [example] = read_preferences(write_jsonl(tmp_path / "p.jsonl", [record]))
    assert example.prompt == prompt
    assert example.responses == ["Hello!", "No."]


def test_implicit_hh_split_at_last_assistant_of_common_prefix(tmp_path: Path) -> None:
    prefix = "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Tell me a joke\n\nAssistant:"
    record = {"chosen": prefix + " A pun about cats.", "rejected": prefix + " A mean joke."}
    [example] = _read_one(tmp_path, record)
    assert example.prompt == prefix
    assert example.responses == [" A pun about cats.", " A mean joke."]


def test_implicit_split_keeps_a_shared_start_of_the_response_in_the_responses(
    tmp_path: Path,
) -> None:
    prefix = "\n\nHuman: Tell me a joke\n\nAssistant:"
    record = {"chosen": prefix + " Sure, a pun.", "rejected": prefix + " Sure, no."}
    [example] = _read_one(tmp_path, record)
    assert example.prompt == prefix
    assert example.responses == [" Sure, a pun.", " Sure, no."]


def test_implicit_conversational_split_after_common_messages(tmp_path: Path) -> None:
    turns = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    turns += [{"role": "user", "content": "Joke?"}]
    record = {
        "chosen": [*turns, {"role": "assistant", "content": "A pun."}],
        "rejected": [*turns, {"role": "assistant", "content": "No."}],
    }
    [example] = _read_one(tmp_path, record)
    assert example.prompt == turns
    assert example.responses == ["A pun.", "No."]


def test_kwise_format_with_ties_and_string_or_integer_ids(tmp_path: Path) -> None:
    record = {
        "prompt": "Name a colour.",
        "responses": [
            {"id": "a", "text": "Red"},
            {"id": "b", "text": "Blue"},
            {"id": 7, "text": "Seven"},
            {"id": "d", "text": "Green"},
        ],
        "order": [["d"], [7], ["a", "b"]],
        "labeler": 12,
        "prompt_id": "p1",
    }
    [example] = _read_one(tmp_path, record)
    assert example.responses == ["Red", "Blue", "Seven", "Green"]
    assert example.tie_groups == [[3], [2], [0, 1]]
    assert example.labeler == "12" and example.prompt_id == "p1"
    assert len(example.pairs) == 5


def test_parquet_input(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "p.parquet"
    table = pa.Table.from_pylist(
        [{"prompt": "Q1", "chosen": "good", "rejected": "bad"}] * 2
        + [{"prompt": "Q2", "chosen": "fine", "rejected": "poor"}]
    )
    pq.write_table(table, path)
    examples = read_preferences(path)
    assert [e.prompt for e in examples] == ["Q1", "Q1", "Q2"]
    assert examples[2].responses == ["fine", "poor"]


def test_pairwise_rows_expand_a_ranking_into_trl_explicit_pairs() -> None:
    example = RankedExample("Q", ["a", "b", "c"], [[1], [0, 2]])
    assert pairwise_rows(example) == [
        {"prompt": "Q", "chosen": "b", "rejected": "a", "margin": 1.0},
        {"prompt": "Q", "chosen": "b", "rejected": "c", "margin": 1.0},
    ]


GOOD = {"prompt": "Q", "chosen": "a", "rejected": "b"}
KWISE = {"prompt": "Q", "responses": [{"id": "x", "text": "1"}, {"id": "y", "text": "2"}]}


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"prompt": "Q", "chosen": "a"}), "unknown format"),
        (json.dumps({"prompt": "Q", "chosen": 3, "rejected": "b"}), "'chosen' must be"),
        (json.dumps({"prompt": "", "chosen": "a", "rejected": "b"}), "'prompt' is empty"),
        (json.dumps({"chosen": "same", "rejected": "same"}), "identical"),
        (json.dumps({"chosen": "abc", "rejected": "xyz"}), "share no prompt"),
        (json.dumps({**KWISE, "order": [["x"]]}), "'y' is missing"),
        (json.dumps({**KWISE, "order": [["x"], ["y"], ["x"]]}), "'x' appears twice"),
        (json.dumps({**KWISE, "order": [["x"], ["y", "z"]]}), "unknown response id 'z'"),
        (json.dumps({**KWISE, "order": [["x"], [], ["y"]]}), "empty tie group"),
        (json.dumps({**KWISE, "order": "x>y"}), "list of tie groups"),
        (
            json.dumps({"prompt": "Q", "responses": [{"id": 1, "text": "a"}] * 2, "order": [[1]]}),
            "twice",
        ),
        (json.dumps({"prompt": "Q", "responses": [{"id": 1}], "order": [[1]]}), "at least 2"),
    ],
)
def test_malformed_line_raises_data_error_naming_file_and_line(
    tmp_path: Path, bad_line: str, reason: str
) -> None:
    path = tmp_path / "prefs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + json.dumps(GOOD) + "\n" + bad_line + "\n")
    with pytest.raises(DataError) as caught:
        read_preferences(path)
    assert caught.value.line == 4  # blank lines still count
    assert str(caught.value).startswith(f"{path}, line 4: ")
    assert reason in str(caught.value)


def test_empty_or_missing_file_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no preference records"):
        read_preferences(tmp_path / "empty.jsonl")
    with pytest.raises(DataError, match="no such file"):
        read_preferences(tmp_path / "missing.jsonl")


def test_reading_preferences_does_not_import_torch(tmp_path: Path) -> None:
    import subprocess

    path = write_jsonl(tmp_path / "p.jsonl", [GOOD])
    code = (
        "import sys; from training.ml.preferences import read_preferences; "
        f"read_preferences({str(path)!r}); assert 'torch' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def _read_one(tmp_path: Path, record: dict[str, Any]) -> list[RankedExample]:
    return read_preferences(write_jsonl(tmp_path / "p.jsonl", [record]))


def test_all_unacceptable_rankings_are_skipped(tmp_path) -> None:
    import json

    from training.ml.preferences import read_preferences

    rows = [
        {"prompt": "p", "responses": [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}],
         "order": [[1], [2]]},
        {"prompt": "q", "responses": [{"id": 3, "text": "c"}, {"id": 4, "text": "d"}],
         "order": [[3], [4]], "all_unacceptable": True},
    ]  # fmt: skip
    path = tmp_path / "rankings.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    examples = read_preferences(path)
    assert [e.prompt for e in examples] == ["p"]


@pytest.mark.parametrize(
    ("hostile", "reason"),
    [
        ('"a\\u0000b"', "$.rejected: contains a NUL character (at 1)"),
        ("[" * 50_000 + "]" * 50_000, "$: nested deeper than 64 levels"),
        ("NaN", "$.rejected: NaN is not a JSON number"),
    ],
)
def test_train_rm_refuses_hostile_json_with_one_line_and_no_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hostile: str, reason: str
) -> None:
    from training.ml import cli

    path = tmp_path / "prefs.jsonl"
    bad = '{"prompt": "Q", "chosen": "a", "rejected": ' + hostile + "}"
    path.write_text(json.dumps(GOOD) + "\n" + bad + "\n")
    argv = ["train-rm", "--model", "tiny", "--data", str(path), "--out", str(tmp_path / "rm")]
    assert cli.main(argv) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err == f"error: {path}, line 2: {reason}\n"
    assert not (tmp_path / "rm").exists()
