"""The hostile-input corpus: values every door must refuse (400, nothing saved) or, for
text a model writes, store replaced.

`HOSTILE_JSON` holds JSON *texts* of one value each, to splice into a body or a JSONL line
where a value goes (`splice`); most are things Python's json module accepts but RFC 8259,
PostgreSQL or our fields do not (formats.json_safety). A fuzzer can draw from the same
lists.
"""

from dataclasses import dataclass

HOLE = "@HOSTILE@"


@dataclass(frozen=True)
class Hostile:
    name: str
    json: str  # the value as JSON text


HOSTILE_JSON = [
    Hostile("nul", '"a\\u0000b"'),
    Hostile("lone_high_surrogate", '"a\\ud800b"'),
    Hostile("lone_low_surrogate", '"\\udfff"'),
    Hostile("nul_in_key", '{"a\\u0000": 1}'),
    Hostile("deep_nesting", "[" * 50_000 + "]" * 50_000),
    Hostile("nesting_65", "[" * 65 + "]" * 65),
    Hostile("nan", "NaN"),
    Hostile("infinity", "Infinity"),
    Hostile("minus_infinity", "-Infinity"),
    Hostile("float_overflow", "1e400"),
    Hostile("huge_integer", "9" * 5000),
]

# JSON that must still be accepted as a value inside one object (the rules refuse no
# legitimate value).
BENIGN_JSON = [
    '"a surrogate pair \\ud83d\\ude00 is one character"',
    '"escaped \\u2028 and \\u0085"',
    '"raw \u2028 and \u0085: a JSONL line does not end at them"',
    "1e308",
    "-" + "9" * 100,
    "[" * 63 + "]" * 63,  # 64 levels with the object around it
]

# Text a model may decode: each must be stored with the characters replaced.
UNSTORABLE_TEXTS = ["\x00", "ends with NUL\x00", "a\ud800b", "\udc00\x00"]


def splice(template: str, hostile: str) -> str:
    """`template` (JSON text with HOLE where a value goes) with the hostile value in it."""
    return template.replace(f'"{HOLE}"', hostile)
