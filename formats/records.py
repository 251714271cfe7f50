"""Files as numbered records: every reader reports the same line for the same record.

- JSONL (any name but .csv and .parquet): one JSON value a line, decoded by
  formats.json_safety (its line numbers: blank lines count, lines end at "\\n" only).
- CSV (`.csv`, where the caller takes it): the header names the columns; a record is
  numbered by the line it starts on (a quoted field may span lines).
- Parquet (`.parquet`): rows numbered from 1; pyarrow is imported only for these.

Text is UTF-8 (a BOM is tolerated). Every record follows formats.json_safety's rules
(no NUL or lone surrogate in any string, no NaN, ...), whichever of the three it came
from. Every refusal is a FormatError with its line.
"""

import csv
import io
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from formats.errors import FormatError, at_line
from formats.json_safety import JsonRefused, check_value, jsonl_values

T = TypeVar("T")


def read_file(path: str | os.PathLike[str], parse: Callable[[bytes, str], T]) -> T:
    """`parse(data, name)` of the file at `path`; its FormatError names the file.

    FormatError "no such file" if there is none."""
    file = Path(path)
    if not file.is_file():
        raise FormatError("no such file", path=str(path))
    try:
        return parse(file.read_bytes(), file.name)
    except FormatError as error:
        error.path = str(path)
        raise


def file_records(
    data: bytes, filename: str, *, csv_column: str | None = None
) -> Iterator[tuple[int, Any]]:
    """(line, record) for each record of a file's `data`, by the kind its name says.

    A `.csv` name is read as CSV only where the caller takes CSV (`csv_column` names the
    column its header must have); otherwise as JSONL, whose first line then fails.
    """
    name = filename.lower()
    if name.endswith(".parquet"):
        return parquet_records(data)
    if name.endswith(".csv") and csv_column is not None:
        return csv_records(decode_text(data), column=csv_column)
    return jsonl_records(decode_text(data))


def decode_text(data: bytes) -> str:
    """`data` as UTF-8 (without a BOM); FormatError at the line of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
        line = data.count(b"\n", 0, error.start + bom) + 1
        raise FormatError("not valid UTF-8", line=line) from None


def jsonl_records(text: str) -> Iterator[tuple[int, Any]]:
    """(line, value) for each non-blank line of a JSON Lines text."""
    try:
        yield from jsonl_values(text)
    except JsonRefused as error:
        raise FormatError(error.located, line=error.line) from None


def csv_records(text: str, *, column: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line where it starts, {column: value}) for each row of a CSV text with a header.

    Blank lines are skipped; a row shorter than the header lacks the missing columns."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    try:
        while True:
            start = reader.line_num + 1
            row = next(reader, None)
            if row is None:
                break
            if not row:  # a blank line
                continue
            if header is None:
                header = _header(row, column)
                continue
            if len(row) > len(header):
                raise FormatError("the row has more fields than the header", line=start)
            yield start, checked(dict(zip(header, row, strict=False)), start)
    except csv.Error as error:
        raise FormatError(f"not valid CSV ({error})", line=reader.line_num) from None
    if header is None:
        _header([], column)


def _header(row: list[str], column: str) -> list[str]:
    if column not in row:
        raise FormatError(f"the CSV header has no '{column}' column", line=1)
    return row


def parquet_records(data: bytes) -> Iterator[tuple[int, Any]]:
    """(row number from 1, row as a dict) for each row of a Parquet file's bytes."""
    import pyarrow as pa  # only Parquet input needs pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
    except Exception as error:  # pyarrow raises several unrelated types for bad files
        raise FormatError(f"not a readable Parquet file ({error})") from None
    for row, record in enumerate(table.to_pylist(), start=1):
        yield row, checked(record, row)


def checked(record: T, line: int) -> T:
    """`record` if it follows formats.json_safety's rules; else FormatError at `line`.

    For records that did not come through formats.json_safety's decoder (CSV and Parquet
    rows, the items of an API's JSON list)."""
    try:
        check_value(record)
    except JsonRefused as error:
        raise FormatError(error.located, line=line) from None
    return record


def parse_numbered(
    records: Iterable[tuple[int, Any]], parse: Callable[[Any], T]
) -> list[tuple[int, T]]:
    """(line, parse(record)) for each numbered record; a FormatError of `parse` gets the
    record's line."""
    parsed: list[tuple[int, T]] = []
    for line, record in records:
        try:
            parsed.append((line, parse(record)))
        except FormatError as error:
            raise at_line(error, line) from None
    return parsed
