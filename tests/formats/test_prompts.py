"""formats.prompts: the one prompt and chat rule, on the shared corpus and by hand."""

import hashlib

import pytest

from formats.errors import FormatError
from formats.prompts import (
    PromptRow,
    check_prompt,
    content_hash,
    prompt_row,
    prompt_rows,
    prompt_text,
)
from tests.formats.corpus import CHAT, PROMPT_CSV, PROMPTS, Entry, assistant, user

GOOD = b'{"prompt": "first"}\n\n'  # a blank line still counts: the entry is on line 3


@pytest.mark.parametrize("entry", PROMPTS, ids=lambda e: e.name)
def test_corpus_entry_is_taken_or_refused_on_its_line(entry: Entry) -> None:
    data = GOOD + entry.raw + b"\n"
    if entry.refusal is None:
        assert [line for line, _ in prompt_rows(data, "p.jsonl")] == [1, 3]
        return
    with pytest.raises(FormatError) as refused:
        prompt_rows(data, "p.jsonl")
    assert refused.value.line == 3
    assert entry.refusal in refused.value.reason
    assert str(refused.value) == f"line 3: {refused.value.reason}"


@pytest.mark.parametrize(("name", "text", "refusal"), PROMPT_CSV, ids=lambda v: str(v)[:20])
def test_csv_files(name: str, text: str, refusal: str | None) -> None:
    if refusal is None:
        rows = prompt_rows(text.encode(), "p.csv")
        assert [(line, row.content) for line, row in rows] == [
            (2, 'Say "hi"'),
            (3, "Two\nlines"),  # a record spanning lines is numbered where it starts
            (5, "Last"),
        ]
        assert rows[0][1].metadata == {"topic": "x"}
        return
    with pytest.raises(FormatError) as refused:
        prompt_rows(text.encode(), "p.csv")
    assert str(refused.value).startswith(refusal)


def test_a_row_keeps_split_metadata_and_other_keys() -> None:
    row = prompt_row({"prompt": CHAT, "split": "eval", "lang": "en", "metadata": {"n": 1}})
    assert row == PromptRow(CHAT, "eval", {"lang": "en", "n": 1})
    assert prompt_row({"prompt": "x"}) == PromptRow("x", "train", {})


def test_a_chat_ending_with_the_user_is_taken_and_copied() -> None:
    chat = [dict(message) for message in CHAT]
    checked = check_prompt(chat)
    assert checked == CHAT and checked is not chat
    assert check_prompt([user("only")]) == [user("only")]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([user("q"), assistant("a")], "a chat prompt must end with a non-empty user message"),
        ([assistant("a")], "a chat prompt must end with a non-empty user message"),
        ("", "'prompt' is empty"),
        ("a\x00", "'prompt' contains a NUL character (at 1)"),
        ([user("a\ud800")], "chat message 0: content contains a lone surrogate U+D800 (at 1)"),
        ({"role": "user", "content": "q"}, "'prompt' must be a string or a chat list"),
    ],
)
def test_check_prompt_refuses(value: object, reason: str) -> None:
    with pytest.raises(FormatError) as refused:
        check_prompt(value)
    assert refused.value.reason == reason and refused.value.line is None


def test_prompt_text_is_the_last_user_turn() -> None:
    assert prompt_text("plain") == "plain"
    assert prompt_text(CHAT) == "Another one?"


def test_content_hash_is_sha256_of_canonical_json() -> None:
    assert content_hash("a") == hashlib.sha256(b'"a"').hexdigest()
    reordered = [{"content": m["content"], "role": m["role"]} for m in CHAT]
    assert content_hash(reordered) == content_hash(CHAT)
    assert content_hash("\u00e9") == hashlib.sha256('"\u00e9"'.encode()).hexdigest()


def test_an_empty_file_holds_no_prompts() -> None:
    with pytest.raises(FormatError, match=r"^the file holds no prompts$"):
        prompt_rows(b"\n\n", "p.jsonl")
