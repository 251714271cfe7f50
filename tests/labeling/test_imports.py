"""Imports: parsing (JSONL, CSV, chats), all-or-nothing storage, dedup, limits, raw HTML."""

import json

import pytest

from formats.preferences import RankedExample
from formats.prompts import SPLITS
from labeling.models import Comparison, Prompt, Ranking, RankingTask, Response
from labeling.services.imports import (
    ImportFileError,
    content_hash,
    parse_prompt_file,
    parse_prompt_list,
    parse_response_file,
)
from labeling.services.prompts import prompts_import
from labeling.services.task_imports import preferences_import, tasks_import_responses

CHAT = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name a prime."},
    {"role": "assistant", "content": "7"},
    {"role": "user", "content": "Another one?"},
]
HOSTILE = '<img src=x onerror="alert(1)"><script>alert(2)</script> &amp; done'


def jsonl(*rows: object) -> bytes:
    return "\n".join(json.dumps(row) for row in rows).encode()


# --- Parsing ---------------------------------------------------------------------------


def test_jsonl_text_and_chat_prompts() -> None:
    prompts = parse_prompt_file(
        jsonl({"prompt": "Hello?"}, {"prompt": CHAT, "split": "eval", "lang": "en"}), "p.jsonl"
    )
    assert [p.content for p in prompts] == ["Hello?", CHAT]
    assert prompts[1].text == "Another one?"  # the last user turn
    assert prompts[1].split == "eval"
    assert prompts[1].metadata == {"lang": "en"}
    assert [p.line for p in prompts] == [1, 2]


def test_csv_with_bom_quotes_and_extra_columns() -> None:
    data = '\ufeffprompt,topic\n"Say ""hi""",greeting\n"Two\nlines",misc\nLast,x\n'.encode()
    prompts = parse_prompt_file(data, "p.csv")
    assert [p.content for p in prompts] == ['Say "hi"', "Two\nlines", "Last"]
    assert prompts[0].metadata == {"topic": "greeting"}
    assert [p.line for p in prompts] == [2, 3, 5]  # a record spanning lines starts at 3


@pytest.mark.parametrize(
    ("data", "filename", "line", "fragment"),
    [
        (b'{"prompt": "ok"}\n\n{"prompt": 3}\n', "p.jsonl", 3, "must be a string or a chat list"),
        (b'{"prompt": "ok"}\n{"prompt": "a"\n', "p.jsonl", 2, "not valid JSON"),
        (b'{"prompt": "ok"}\n{"text": "a"}\n', "p.jsonl", 2, "missing 'prompt'"),
        (b'{"prompt": "   "}\n', "p.jsonl", 1, "empty"),
        (b'["prompt"]\n', "p.jsonl", 1, "expected a JSON object"),
        (b'{"prompt": []}\n', "p.jsonl", 1, "at least one message"),
        (b'{"prompt": [{"role": "robot", "content": "x"}]}\n', "p.jsonl", 1, "role must be"),
        (b'{"prompt": [{"role": "user"}]}\n', "p.jsonl", 1, "chat message 0"),
        (b'{"prompt": [{"role": "user", "content": 5}]}\n', "p.jsonl", 1, "content must be"),
        (
            jsonl(
                {
                    "prompt": [
                        {"role": "user", "content": "q"},
                        {"role": "assistant", "content": "a"},
                    ]
                }
            ),
            "p.jsonl",
            1,
            "end with a non-empty user message",
        ),
        (b'{"prompt": "x", "split": "test"}\n', "p.jsonl", 1, "'split'"),
        (b"prompt\nfine\n\xff\xfe\n", "p.csv", 3, "not valid UTF-8"),
        (b"text\nhello\n", "p.csv", 1, "no 'prompt' column"),
        (b"prompt,topic\nok,x\n,y\n", "p.csv", 3, "empty"),
        (b"prompt\nok\na,b\n", "p.csv", 3, "more fields than the header"),
    ],
)
def test_bad_line_is_named(data: bytes, filename: str, line: int, fragment: str) -> None:
    with pytest.raises(ImportFileError) as caught:
        parse_prompt_file(data, filename)
    assert caught.value.line == line
    assert caught.value.message.startswith(f"line {line}: ")
    assert fragment in caught.value.message
    assert caught.value.extra == {"line": line}


def test_the_splits_of_the_format_are_the_model_choices() -> None:
    assert set(SPLITS) == set(Prompt.Split.values)


def test_unknown_extension_and_empty_file_are_rejected() -> None:
    with pytest.raises(ImportFileError, match=r"expected a \.jsonl or \.csv"):
        parse_prompt_file(b'{"prompt": "x"}', "p.txt")
    with pytest.raises(ImportFileError, match="no prompts"):
        parse_prompt_file(b"\n\n", "p.jsonl")


def test_size_limit(settings) -> None:
    settings.RLHF_IMPORT_MAX_BYTES = 100
    with pytest.raises(ImportFileError, match="the limit is 100 bytes"):
        parse_prompt_file(jsonl(*[{"prompt": "x" * 10}] * 10), "p.jsonl")
    assert len(parse_prompt_file(jsonl({"prompt": "short"}), "p.jsonl")) == 1


def test_prompt_list_accepts_strings_and_objects() -> None:
    prompts = parse_prompt_list(["one", {"prompt": CHAT}])
    assert [p.content for p in prompts] == ["one", CHAT]
    with pytest.raises(ImportFileError, match="line 2: "):
        parse_prompt_list(["one", {"prompt": None}])


def test_response_file_accepts_strings_and_generate_output() -> None:
    rows = parse_response_file(
        jsonl(
            {"prompt": "Q", "responses": ["a", "b"]},
            {
                "prompt": CHAT,
                "responses": [
                    {"id": "r0", "text": "x", "token_count": 3, "finished": True, "seed": 7},
                    {"id": "r1", "text": "y", "token_count": 9, "finished": False, "seed": 8},
                    {"text": "z", "temperature": 0.7},
                ],
            },
        ),
        "r.jsonl",
    )
    assert [r.text for r in rows[0].responses] == ["a", "b"]
    first = rows[1].responses[0]
    assert (first.text, first.token_count, first.finished, first.seed) == ("x", 3, True, 7)
    assert first.generation == {"id": "r0"}
    assert rows[1].responses[2].generation == {"temperature": 0.7}


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ({"prompt": "Q", "responses": ["only one"]}, "2 to 9 responses"),
        ({"prompt": "Q", "responses": ["r"] * 10}, "2 to 9 responses"),
        ({"prompt": "Q"}, "2 to 9 responses"),
        ({"prompt": "Q", "responses": ["a", 3]}, "response 1 must be"),
        ({"prompt": "Q", "responses": ["a", {"text": "b", "seed": "x"}]}, "'seed'"),
        ({"prompt": "Q", "responses": ["a", {"text": "b", "token_count": -1}]}, "token_count"),
        ({"prompt": "Q", "responses": ["a", {"text": "b", "finished": 1}]}, "'finished'"),
        ({"prompt": 5, "responses": ["a", "b"]}, "'prompt' must be"),
    ],
)
def test_bad_response_rows(row: dict, fragment: str) -> None:
    with pytest.raises(ImportFileError) as caught:
        parse_response_file(jsonl({"prompt": "fine", "responses": ["a", "b"]}, row), "r.jsonl")
    assert caught.value.line == 2
    assert fragment in caught.value.message


# --- Storing ---------------------------------------------------------------------------


def test_prompts_import_dedups_within_file_and_against_stored(project) -> None:
    items = parse_prompt_file(jsonl({"prompt": "a"}, {"prompt": CHAT}, {"prompt": "a"}), "p.jsonl")
    result = prompts_import(project=project, items=items, source="first.jsonl")
    assert (result.created, result.duplicates, result.duplicate_lines) == (2, 1, [3])

    again = parse_prompt_file(jsonl({"prompt": "b"}, {"prompt": CHAT}), "p.jsonl")
    result = prompts_import(project=project, items=again, source="second.jsonl")
    assert (result.created, result.duplicates, result.duplicate_lines) == (1, 1, [2])

    stored = Prompt.objects.filter(project=project).order_by("id")
    assert [p.as_input for p in stored] == ["a", CHAT, "b"]
    assert [p.source for p in stored] == ["first.jsonl", "first.jsonl", "second.jsonl"]
    assert stored[1].content_hash == content_hash(CHAT)


def test_same_prompt_in_two_projects_is_not_a_duplicate(project, outsider) -> None:
    other = outsider.memberships.get().project
    items = parse_prompt_file(jsonl({"prompt": "a"}), "p.jsonl")
    assert prompts_import(project=project, items=items).created == 1
    assert prompts_import(project=other, items=items).created == 1


def test_malformed_file_saves_nothing(project) -> None:
    data = jsonl({"prompt": "good"}, {"prompt": "also good"}) + b'\n{"prompt": 7}\n'
    with pytest.raises(ImportFileError, match="line 3"):
        prompts_import(project=project, items=parse_prompt_file(data, "p.jsonl"))
    assert not Prompt.objects.exists()


def test_html_is_stored_verbatim(project) -> None:
    prompts_import(project=project, items=parse_prompt_file(jsonl({"prompt": HOSTILE}), "p.jsonl"))
    rows = parse_response_file(jsonl({"prompt": "Q", "responses": [HOSTILE, "plain"]}), "r.jsonl")
    tasks_import_responses(project=project, items=rows, source="r.jsonl")
    assert Prompt.objects.get(text=HOSTILE).text == HOSTILE
    assert Response.objects.get(position=0).text == HOSTILE


def test_response_import_makes_open_tasks_with_provenance(project) -> None:
    project.overlap = 3
    project.save()
    rows = parse_response_file(
        jsonl(
            {"prompt": "Q1", "responses": ["a", "b", "c"]},
            {"prompt": "Q2", "responses": [{"id": 4, "text": "x", "seed": 1}, "y"]},
            {"prompt": "Q1", "responses": ["a", "b", "c"]},  # duplicate of line 1
            {"prompt": "Q1", "responses": ["c", "b", "a"]},  # other order: a new task
        ),
        "r.jsonl",
    )
    result = tasks_import_responses(project=project, items=rows, source="r.jsonl")
    assert (result.created, result.duplicates, result.duplicate_lines) == (3, 1, [3])
    tasks = list(RankingTask.objects.filter(project=project).order_by("id"))
    assert [t.responses.count() for t in tasks] == [3, 2, 3]  # K per task
    assert {(t.status, t.overlap, t.source) for t in tasks} == {("open", 3, "imported")}
    assert tasks[0].prompt_id == tasks[2].prompt_id  # one prompt, two tasks
    response = tasks[1].responses.get(position=0)
    assert (response.policy_name, response.seed, response.generation) == ("imported", 1, {"id": 4})

    again = tasks_import_responses(project=project, items=rows, source="r.jsonl")
    assert (again.created, again.duplicates) == (0, 4)


def test_preferences_import_makes_closed_tasks_rankings_and_comparisons(project) -> None:
    examples = [
        RankedExample("Q", ["good", "bad"], [[0], [1]], labeler="ann"),
        RankedExample(CHAT, ["w", "x", "y", "z"], [[3], [2], [0, 1]], prompt_id="p-9"),
        RankedExample("Q", ["good", "bad"], [[0], [1]], labeler="bob"),  # another labeler
        RankedExample("Q", ["good", "bad"], [[0], [1]], labeler="ann"),  # duplicate
    ]
    result = preferences_import(project=project, examples=examples, lines=[1, 2, 4, 5])
    assert (result.created, result.duplicates, result.duplicate_lines) == (3, 1, [5])

    tasks = RankingTask.objects.filter(project=project).order_by("id")
    assert {(t.status, t.source, t.rankings_count) for t in tasks} == {("closed", "preferences", 1)}
    ranking = Ranking.objects.get(task=tasks[1])
    ids = list(tasks[1].responses.order_by("position").values_list("id", flat=True))
    assert ranking.tie_groups == [[ids[3]], [ids[2]], [ids[0], ids[1]]]
    assert (ranking.source, ranking.labeler, ranking.imported_labeler) == ("imported", None, "")
    assert Ranking.objects.get(task=tasks[0]).imported_labeler == "ann"
    pairs = Comparison.objects.filter(ranking=ranking)
    assert sorted((c.chosen_id, c.rejected_id, c.margin) for c in pairs) == sorted(
        [
            (ids[3], ids[2], 1),
            (ids[3], ids[0], 2),
            (ids[3], ids[1], 2),
            (ids[2], ids[0], 1),
            (ids[2], ids[1], 1),
        ]
    )
    assert Comparison.objects.filter(project=project).count() == 1 + 5 + 1
    assert tasks[1].prompt.metadata == {"prompt_id": "p-9"}

    again = preferences_import(project=project, examples=examples)
    assert (again.created, again.duplicates) == (0, 4)


def test_preferences_import_rejects_a_bad_prompt_and_saves_nothing(project) -> None:
    examples = [
        RankedExample("Q", ["a", "b"], [[0], [1]]),
        RankedExample(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            ["a", "b"],
            [[0], [1]],
        ),
    ]
    with pytest.raises(ImportFileError, match="line 7: "):
        preferences_import(project=project, examples=examples, lines=[3, 7])
    assert not RankingTask.objects.exists()
    assert not Prompt.objects.exists()
