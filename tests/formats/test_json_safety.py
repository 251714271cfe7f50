"""formats.json_safety: what it refuses, where it says it is, and what it still takes."""

import json

import pytest

from formats.json_safety import MAX_DEPTH, JsonRefused, check_value, jsonl_values, loads
from formats.text import storable_text, unstorable_reason
from tests.security.corpus import BENIGN_JSON, HOSTILE_JSON, UNSTORABLE_TEXTS


@pytest.mark.parametrize("hostile", HOSTILE_JSON, ids=lambda h: h.name)
def test_every_hostile_value_is_refused_at_its_path(hostile) -> None:
    with pytest.raises(JsonRefused) as refused:
        loads(f'{{"rows": [1, {{"note": {hostile.json}}}]}}')
    error = refused.value
    assert error.path is not None and error.path.startswith("$")
    assert str(error) == f"{error.path}: {error.reason}"


@pytest.mark.parametrize("benign", BENIGN_JSON)
def test_benign_values_are_taken(benign: str) -> None:
    assert loads(f'{{"x": {benign}}}') == {"x": json.loads(benign)}


def test_paths_name_the_first_bad_value_in_document_order() -> None:
    with pytest.raises(JsonRefused, match=r"^\$\[1\]\.metadata\[\"odd key\"\]\[2\]: "):
        loads('[{}, {"metadata": {"odd key": [1, 2, NaN], "ok": "\\u0000"}, "z": NaN}]')
    with pytest.raises(JsonRefused, match=r"^\$\.a: a key contains a NUL character"):
        loads('{"a": {"b\\u0000": 1}}')


def test_depth_limit_is_exact() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(JsonRefused, match="nested deeper than 64 levels"):
        loads("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1))
    deep: list = []
    for _ in range(100_000):  # built without the parser: the walk does not recurse either
        deep = [deep]
    with pytest.raises(JsonRefused, match="nested deeper"):
        check_value(deep)


def test_integer_digits_and_float_range() -> None:
    assert loads("9" * 100) == int("9" * 100)
    with pytest.raises(JsonRefused, match="an integer of 101 digits"):
        loads("-" + "9" * 101)
    assert loads("1e-400") == 0.0  # underflow is a number, overflow is not
    with pytest.raises(JsonRefused, match="too large"):
        loads("-1e400")
    with pytest.raises(JsonRefused, match="not a JSON number"):
        check_value({"x": float("nan")})


def test_syntax_errors_have_no_path_and_jsonl_names_the_line() -> None:
    with pytest.raises(JsonRefused) as refused:
        loads("{")
    assert refused.value.path is None and refused.value.reason.startswith("not valid JSON")
    with pytest.raises(JsonRefused) as refused:
        list(jsonl_values('{"a": 1}\n\n{"a": "\\ud800"}\n'))
    assert (refused.value.line, refused.value.path) == (3, "$.a")


def test_storable_text_replaces_and_counts() -> None:
    assert storable_text("fine \U0001f600 text") == ("fine \U0001f600 text", 0)
    assert storable_text("a\x00b\ud800\udfff") == ("a\ufffdb\ufffd\ufffd", 3)
    assert unstorable_reason("ab\x00") == "contains a NUL character (at 2)"
    assert unstorable_reason("\udc00") == "contains a lone surrogate U+DC00 (at 0)"
    assert unstorable_reason("é and \u2028") is None
    for text in UNSTORABLE_TEXTS:
        clean, replaced = storable_text(text)
        assert unstorable_reason(clean) is None and replaced == clean.count("\ufffd") > 0


def test_a_parquet_map_value_is_walked_too() -> None:
    """pyarrow reads a Parquet map as a list of (key, value) tuples."""
    from formats.json_safety import JsonRefused, check_value

    with pytest.raises(JsonRefused, match="NUL"):
        check_value({"metadata": [("k", "v\x00")]})
