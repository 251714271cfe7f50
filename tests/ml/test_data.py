from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.ml.data import DataError, Demonstration, read_demonstrations, read_prompts


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


CHAT = [{"role": "user", "content": "Hi"}]


def test_prompts_from_jsonl_skip_blank_lines(tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, "", {"prompt": CHAT, "source": "x"}])
    assert read_prompts(path) == ["a", CHAT]


def test_prompts_from_csv(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text('id,prompt\n1,"first, with comma"\n2,second\n')
    assert read_prompts(path) == ["first, with comma", "second"]


@pytest.mark.parametrize(
    ("rows", "line", "reason"),
    [
        ([{"prompt": "ok"}, "{not json"], 2, "not valid JSON"),
        ([{"prompt": "ok"}, {"prompt": "ok"}, {"text": "x"}], 3, "missing 'prompt'"),
        ([{"prompt": "   "}], 1, "empty"),
        ([{"prompt": [{"role": "user"}]}], 1, "chat message 0"),
        ([{"prompt": 5}], 1, "string or a chat list"),
    ],
)
def test_bad_prompt_lines_name_file_and_line(tmp_path, rows, line, reason):
    path = _jsonl(tmp_path / "p.jsonl", rows)
    with pytest.raises(DataError, match=reason) as info:
        read_prompts(path)
    assert info.value.line == line and f"{path}, line {line}" in str(info.value)


def test_csv_without_prompt_column_or_with_empty_cell(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("text\nhello\n")
    with pytest.raises(DataError, match="'prompt' column"):
        read_prompts(path)
    path.write_text('prompt\nhello\n""\n')
    with pytest.raises(DataError, match="line 3"):
        read_prompts(path)


def test_empty_or_missing_files(tmp_path):
    with pytest.raises(DataError, match="no prompts"):
        read_prompts(_jsonl(tmp_path / "e.jsonl", [""]))
    with pytest.raises(DataError, match="no such file"):
        read_prompts(tmp_path / "missing.jsonl")


def test_demonstration_formats(tmp_path):
    rows = [
        {"prompt": "p1", "response": "r1"},
        {"prompt": "p2", "completion": "r2"},
        {"prompt": CHAT, "completion": [{"role": "assistant", "content": "r3"}]},
        {"messages": [*CHAT, {"role": "assistant", "content": "r4"}]},
    ]
    assert read_demonstrations(_jsonl(tmp_path / "d.jsonl", rows)) == [
        Demonstration("p1", "r1"),
        Demonstration("p2", "r2"),
        Demonstration(CHAT, "r3"),
        Demonstration(CHAT, "r4"),
    ]


@pytest.mark.parametrize(
    "bad",
    [
        {"prompt": "p"},
        {"prompt": "p", "response": ""},
        {"prompt": "p", "response": 3},
        {"messages": CHAT},
        {"response": "r"},
        ["p", "r"],
    ],
)
def test_bad_demonstration_line(tmp_path, bad):
    path = _jsonl(tmp_path / "d.jsonl", [{"prompt": "p", "response": "r"}, bad])
    with pytest.raises(DataError) as info:
        read_demonstrations(path)
    assert info.value.line == 2
