"""The one error of every format rule: what is wrong, and where (file and line)."""

from typing import Any


class FormatError(ValueError):
    """A record or file that breaks a format rule.

    `reason` is the same text at every door (the web import, the CLI imports, the ML
    core's readers); `line` is the 1-based line (or row, or list position) of the bad
    record, None for the file as a whole; `path` names the file where the reader knows
    it. The readers fill in `line` and `path` as the error passes them.
    """

    def __init__(self, reason: str, *, line: int | None = None, path: str | None = None):
        self.reason = reason
        self.line = line
        self.path = path
        super().__init__(reason)

    @property
    def located(self) -> str:
        """`reason` with its line, without the file: "line 3: 'prompt' is empty"."""
        return f"line {self.line}: {self.reason}" if self.line else self.reason

    def __str__(self) -> str:
        """`located` after the file, where known: "p.jsonl, line 3: 'prompt' is empty"."""
        if self.path is None:
            return self.located
        return f"{self.path}, {self.located}" if self.line else f"{self.path}: {self.reason}"


def at_line(error: FormatError, line: int) -> FormatError:
    """`error` placed at `line` unless it already names one (a reader's loop calls this)."""
    if error.line is None:
        error.line = line
    return error


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type, for refusals ("object", "array", ...)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    names = {dict: "object", list: "array", str: "string", type(None): "null"}
    return names.get(type(value), type(value).__name__)
