"""formats is pure: importing every module of it loads neither Django nor either app."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import formats
names = sorted(m.name for m in pkgutil.walk_packages(formats.__path__, "formats."))
for name in names:
    importlib.import_module(name)
banned = sorted(
    m for m in sys.modules
    if m.split(".")[0] in {"django", "rest_framework", "celery", "core", "config", "labeling",
                           "training", "torch", "pyarrow"}
)
print(json.dumps({"modules": names, "banned": banned}))
"""


def test_formats_imports_neither_django_nor_the_apps() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"formats.prompts", "formats.preferences", "formats.records"} <= set(report["modules"])
    assert report["banned"] == []  # pyarrow too: only a Parquet file imports it
