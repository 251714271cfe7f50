"""The ML core is pure PyTorch + transformers: importing it never loads Django or Celery."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import training.ml
names = sorted(m.name for m in pkgutil.walk_packages(training.ml.__path__, "training.ml."))
for name in names:
    if name != "training.ml.__main__":
        importlib.import_module(name)
banned = sorted(
    m for m in sys.modules if m.split(".")[0] in {"django", "celery", "rest_framework", "labeling"}
)
print(json.dumps({"modules": names, "banned": banned}))
"""


def test_training_ml_never_imports_django_or_celery():
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = {"training.ml.loading", "training.ml.reward.train", "training.ml.sampling"}
    assert expected | {"training.ml.sft"} <= set(report["modules"])
    assert "training.ml.commands.generate" in report["modules"]
    assert report["banned"] == []
