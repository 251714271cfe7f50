"""formats.records: the same line numbers and refusals for JSONL, CSV and Parquet."""

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from formats.errors import FormatError
from formats.records import checked, csv_records, file_records, parse_numbered, read_file


def lines_of(data: bytes, filename: str, **kwargs: str) -> list[int]:
    return [line for line, _ in file_records(data, filename, **kwargs)]


def test_jsonl_counts_blank_lines_crlf_and_a_bom() -> None:
    data = b'\xef\xbb\xbf{"a": 1}\r\n\r\n  \n{"a": 2}\n'
    assert list(file_records(data, "x.jsonl")) == [(1, {"a": 1}), (4, {"a": 2})]


def test_jsonl_lines_end_at_newline_only() -> None:
    data = '{"a": "x\u2028y\u0085z"}\n{"b": 1}\n'.encode()
    assert list(file_records(data, "x.ndjson")) == [(1, {"a": "x\u2028y\u0085z"}), (2, {"b": 1})]


def test_invalid_utf8_is_refused_at_its_line() -> None:
    with pytest.raises(FormatError) as refused:
        list(file_records(b'{"a": 1}\n\n{"a": "\xff"}\n', "x.jsonl"))
    assert (refused.value.line, refused.value.reason) == (3, "not valid UTF-8")


def test_csv_is_read_only_where_the_caller_takes_it() -> None:
    assert lines_of(b"prompt\na\nb\n", "p.csv", csv_column="prompt") == [2, 3]
    with pytest.raises(FormatError, match=r"^line 1: not valid JSON"):
        list(file_records(b"prompt\na\n", "p.csv"))


def test_csv_numbers_a_record_by_the_line_it_starts_on() -> None:
    rows = list(csv_records('prompt,n\n"one\ntwo\nthree",1\n\nlast,2\n', column="prompt"))
    assert rows == [(2, {"prompt": "one\ntwo\nthree", "n": "1"}), (6, {"prompt": "last", "n": "2"})]


def test_csv_with_a_short_row_keeps_the_cells_it_has() -> None:
    assert list(csv_records("prompt,n\nonly\n", column="prompt")) == [(2, {"prompt": "only"})]


def test_parquet_rows_are_numbered_from_one_and_checked() -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([{"a": "fine"}, {"a": "NUL\x00"}]), buffer)
    with pytest.raises(FormatError) as refused:
        list(file_records(buffer.getvalue(), "x.parquet"))
    assert str(refused.value) == "line 2: $.a: contains a NUL character (at 3)"
    with pytest.raises(FormatError, match=r"^not a readable Parquet file"):
        list(file_records(b"PAR1 but not really", "x.parquet"))


def test_checked_names_the_path_and_line() -> None:
    assert checked({"a": [1, "b"]}, 5) == {"a": [1, "b"]}
    with pytest.raises(FormatError, match=r"^line 5: \$\.a\[1\]: nan is not a JSON number$"):
        checked({"a": [1, float("nan")]}, 5)


def test_parse_numbered_puts_a_refusal_on_its_line() -> None:
    def parse(value: int) -> int:
        if value < 0:
            raise FormatError("negative")
        return value

    assert parse_numbered([(1, 1), (4, 2)], parse) == [(1, 1), (4, 2)]
    with pytest.raises(FormatError, match=r"^line 4: negative$"):
        parse_numbered([(1, 1), (4, -2)], parse)


def test_read_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"a": NaN}\n')
    with pytest.raises(FormatError) as refused:
        read_file(path, lambda data, name: list(file_records(data, name)))
    assert str(refused.value) == f"{path}, line 2: $.a: NaN is not a JSON number"
    with pytest.raises(FormatError) as missing:
        read_file(tmp_path / "none.jsonl", lambda data, name: data)
    assert str(missing.value) == f"{tmp_path / 'none.jsonl'}: no such file"
