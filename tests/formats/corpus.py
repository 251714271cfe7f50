"""The shared corpus of prompt and preference records, valid and invalid.

Every door that reads a format is tested against the same entries (tests/formats/
test_doors.py: `manage.py import_prompts`, the REST prompt import and
`training.ml.data.read_prompts`; `manage.py import_preferences` and
`training.ml.preferences.read_preferences`), and the pure modules too
(tests/formats/test_prompts.py, test_preferences.py). An entry is one raw JSONL line;
`refusal` is None where every door takes it, else a fragment of the one reason every
door gives (after its "line N: ").
"""

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Entry:
    name: str
    raw: bytes  # one JSONL line, without its "\n"
    refusal: str | None = None  # None: accepted everywhere

    @property
    def accepted(self) -> bool:
        return self.refusal is None


def line(value: Any) -> bytes:
    return json.dumps(value).encode()


def user(content: str) -> dict[str, str]:
    return {"role": "user", "content": content}


def assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


SYSTEM = {"role": "system", "content": "You are terse."}
CHAT = [SYSTEM, user("Name a prime."), assistant("7"), user("Another one?")]
HH = "\n\nHuman: Tell me a joke\n\nAssistant:"
DEEP = b"[" * 50_000 + b"]" * 50_000

PROMPTS = [
    Entry("text", line({"prompt": "Name a prime."})),
    Entry("chat", line({"prompt": CHAT})),
    Entry("split_metadata_extra", line({"prompt": "Q", "split": "eval", "metadata": {"a": 1}})),
    Entry("extra_key_only", line({"prompt": "Q2", "lang": "en"})),
    Entry("html_is_text", line({"prompt": '<img src=x onerror="alert(1)">'})),
    Entry("unicode", '{"prompt": "pair \\ud83d\\ude00, raw \u2028 and \u0085"}'.encode()),
    Entry("not_json", b'{"prompt": "a"', "not valid JSON"),
    Entry("array", line(["prompt"]), "expected a JSON object, got array"),
    Entry("string", line("just text"), "expected a JSON object, got string"),
    Entry("no_prompt", line({"text": "a"}), "missing 'prompt'"),
    Entry("blank", line({"prompt": "   "}), "'prompt' is empty"),
    Entry("number", line({"prompt": 3}), "'prompt' must be a string or a chat list"),
    Entry("null", line({"prompt": None}), "'prompt' must be a string or a chat list"),
    Entry("empty_chat", line({"prompt": []}), "a chat prompt needs at least one message"),
    Entry(
        "unknown_role",
        line({"prompt": [{"role": "robot", "content": "x"}]}),
        "chat message 0: role must be one of system, user, assistant",
    ),
    Entry("no_content", line({"prompt": [{"role": "user"}]}), 'chat message 0 must be {"role"'),
    Entry(
        "extra_message_key",
        line({"prompt": [{"role": "user", "content": "x", "name": "ann"}]}),
        'chat message 0 must be {"role", "content"}',
    ),
    Entry(
        "content_not_string",
        line({"prompt": [SYSTEM, {"role": "user", "content": 5}]}),
        "chat message 1: content must be a string",
    ),
    # The disagreement of issue 10: the ML core took a chat the policy cannot answer.
    Entry(
        "ends_with_assistant",
        line({"prompt": [user("q"), assistant("a")]}),
        "a chat prompt must end with a non-empty user message",
    ),
    Entry(
        "ends_with_blank_user",
        line({"prompt": [SYSTEM, user(" ")]}),
        "a chat prompt must end with a non-empty user message",
    ),
    Entry("bad_split", line({"prompt": "x", "split": "test"}), "'split' must be 'train' or 'eval'"),
    Entry("bad_metadata", line({"prompt": "x", "metadata": [1]}), "'metadata' must be an object"),
    Entry("nul", b'{"prompt": "a\\u0000b"}', "$.prompt: contains a NUL character (at 1)"),
    Entry(
        "nul_in_chat",
        b'{"prompt": [{"role": "user", "content": "\\u0000"}]}',
        "$.prompt[0].content: contains a NUL character",
    ),
    Entry("surrogate", b'{"prompt": "\\ud800"}', "$.prompt: contains a lone surrogate U+D800"),
    Entry("nan", b'{"prompt": "x", "score": NaN}', "$.score: NaN is not a JSON number"),
    Entry("deep", b'{"prompt": "x", "m": ' + DEEP + b"}", "nested deeper than 64 levels"),
    Entry("huge_int", b'{"prompt": "x", "n": ' + b"9" * 5000 + b"}", "an integer of 5000 digits"),
    Entry("not_utf8", b'{"prompt": "\xff"}', "not valid UTF-8"),
]

# Whole CSV prompt files: (name, file, refusal with its line, or None).
PROMPT_CSV = [
    ("quoted_multiline", '\ufeffprompt,topic\n"Say ""hi""",x\n"Two\nlines",y\nLast,z\n', None),
    ("no_prompt_column", "text\nhello\n", "line 1: the CSV header has no 'prompt' column"),
    ("empty_cell", "prompt,topic\nok,x\n,y\n", "line 3: 'prompt' is empty"),
    ("extra_field", "prompt\nok\na,b\n", "line 3: the row has more fields than the header"),
    ("after_multiline", 'prompt,split\n"a\nb",eval\nc,test\n', "line 4: 'split' must be"),
    ("nul", "prompt\nfine\na\x00b\n", "line 3: $.prompt: contains a NUL character"),
]

KWISE = {
    "prompt": "Name a colour.",
    "responses": [{"id": "a", "text": "Red"}, {"id": "b", "text": "Blue"}, {"id": 7, "text": "7"}],
    "order": [[7], ["a", "b"]],
}
PAIR = {"prompt": "Q", "chosen": "a", "rejected": "b"}

PREFERENCES = [
    Entry("explicit", line({**PAIR, "labeler": "ann", "prompt_id": 4})),
    Entry(
        "explicit_chat",
        line(
            {
                "prompt": [user("Hi?")],
                "chosen": [assistant("Hello!")],
                "rejected": [assistant("No.")],
            }
        ),
    ),
    Entry("implicit_hh", line({"chosen": HH + " A pun.", "rejected": HH + " A mean joke."})),
    Entry("implicit_trl", line({"chosen": "The sky is blue.", "rejected": "The sky is green."})),
    Entry("implicit_null_prompt", line({"prompt": None, "chosen": "Q: a", "rejected": "Q: b"})),
    Entry(
        "implicit_chat",
        line(
            {
                "chosen": [user("Hi"), assistant("A pun.")],
                "rejected": [user("Hi"), assistant("No.")],
            }
        ),
    ),
    Entry("kwise_ties", line({**KWISE, "labeler": 12})),
    Entry("kwise_all_unacceptable", line({**KWISE, "all_unacceptable": True})),
    Entry("not_json", b"{not json", "not valid JSON"),
    Entry("array", line([1, 2]), "expected a JSON object, got array"),
    Entry("unknown", line({"prompt": "Q", "chosen": "a"}), "unknown format"),
    Entry(
        "chosen_number",
        line({**PAIR, "chosen": 3}),
        "'chosen' must be a string or a chat list, got number",
    ),
    Entry("empty_prompt", line({**PAIR, "prompt": ""}), "'prompt' is empty"),
    # The disagreement of issue 10: train-rm took it, import_preferences refused it.
    Entry(
        "prompt_ends_with_assistant",
        line({**PAIR, "prompt": [user("q"), assistant("a")]}),
        "a chat prompt must end with a non-empty user message",
    ),
    Entry("identical", line({"chosen": "same", "rejected": "same"}), "are identical"),
    Entry("no_prefix", line({"chosen": "abc", "rejected": "xyz"}), "share no prompt prefix"),
    Entry("blank_prefix", line({"chosen": "\n\nA", "rejected": "\n\nB"}), "'prompt' is empty"),
    Entry("mixed", line({"chosen": "a", "rejected": [assistant("b")]}), "must both be strings"),
    Entry(
        "chat_no_shared",
        line({"chosen": [user("a"), assistant("x")], "rejected": [user("b"), assistant("y")]}),
        "share no prompt messages",
    ),
    Entry(
        "chat_prefix_ends_with_assistant",
        line(
            {
                "chosen": [user("q"), assistant("Hi"), assistant("A")],
                "rejected": [user("q"), assistant("Hi"), assistant("B")],
            }
        ),
        "a chat prompt must end with a non-empty user message",
    ),
    Entry(
        "chat_role",
        line({**PAIR, "chosen": [{"role": "robot", "content": "x"}]}),
        "chat message 0: role must be one of",
    ),
    Entry(
        "chosen_two_messages",
        line({**PAIR, "chosen": [assistant("x"), assistant("y")]}),
        "'chosen' must hold exactly one assistant message after the prompt",
    ),
    Entry(
        "chosen_user_message",
        line({**PAIR, "rejected": [user("x")]}),
        "'rejected' must hold exactly one assistant message",
    ),
    Entry("kwise_no_order", line({**KWISE, "order": None}), "'order' must be a list"),
    Entry(
        "kwise_missing_key",
        line({"prompt": "Q", "responses": KWISE["responses"]}),
        "a K-wise ranking needs 'order'",
    ),
    Entry(
        "kwise_missing_id", line({**KWISE, "order": [[7], ["a"]]}), "'b' is missing from 'order'"
    ),
    Entry(
        "kwise_twice",
        line({**KWISE, "order": [[7], ["a", "b"], ["a"]]}),
        "response id 'a' appears twice in 'order'",
    ),
    Entry(
        "kwise_unknown",
        line({**KWISE, "order": [[7], ["a", "b", "z"]]}),
        "'order' names unknown response id 'z'",
    ),
    Entry("kwise_empty_group", line({**KWISE, "order": [[7], [], ["a", "b"]]}), "empty tie group"),
    Entry("kwise_string_order", line({**KWISE, "order": "7>a=b"}), "list of tie groups"),
    Entry(
        "kwise_duplicate_id",
        line({"prompt": "Q", "responses": [{"id": 1, "text": "a"}] * 2, "order": [[1]]}),
        "response id 1 appears twice in 'responses'",
    ),
    Entry(
        "kwise_one_response",
        line({"prompt": "Q", "responses": [{"id": 1, "text": "a"}], "order": [[1]]}),
        "at least 2",
    ),
    Entry(
        "kwise_no_text",
        line({**KWISE, "responses": [{"id": "a"}, {"id": "b", "text": "x"}]}),
        "response 0 must be an object with 'id' and 'text'",
    ),
    Entry(
        "kwise_text_number",
        line({**KWISE, "responses": [{"id": "a", "text": 1}, {"id": "b", "text": "x"}]}),
        "response 'a': 'text' must be a string",
    ),
    Entry(
        "kwise_bool_id",
        line({**KWISE, "order": [[True]]}),
        "response id True must be a string or an integer",
    ),
    Entry(
        "all_unacceptable_not_bool",
        line({**KWISE, "all_unacceptable": "yes"}),
        "'all_unacceptable' must be true or false",
    ),
    Entry(
        "nul",
        b'{"prompt": "Q", "chosen": "a", "rejected": "\\u0000"}',
        "$.rejected: contains a NUL",
    ),
    Entry("deep", b'{"prompt": "Q", "chosen": "a", "rejected": ' + DEEP + b"}", "nested deeper"),
    Entry("infinity", b'{"prompt": "Q", "chosen": "a", "rejected": "b", "m": 1e400}', "too large"),
]
