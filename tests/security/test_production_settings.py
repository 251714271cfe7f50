"""Production settings refuse to start with a weak DJANGO_SECRET_KEY: whatever Django's own
security.W009 flags, and the throwaway keys of local.py and test.py."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STRONG = secrets.token_urlsafe(64)


def _start(tmp_path: Path, secret_key: str, *command: str) -> subprocess.CompletedProcess:
    # The browser tests' conftest sets DJANGO_ALLOW_ASYNC_UNSAFE for Playwright; a deploy
    # check rightly refuses it, and a real deployment never has it.
    inherited = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secret_key,
        "DJANGO_ALLOWED_HOSTS": "rlhf.example.org",
        "RLHF_STUDIO_VAR_DIR": str(tmp_path),
    }
    script = command or ("-c", "import django; django.setup()")
    return subprocess.run(
        [sys.executable, *script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    "secret_key",
    [
        "",
        STRONG[:49],  # shorter than 50
        "ab" * 40,  # 2 distinct characters
        "abcd" * 20,  # 4 distinct characters
        "django-insecure-" + STRONG,  # what startproject writes
        "local-dev-only-not-a-secret" + STRONG,
        "test-only-not-a-secret" + STRONG,
        "change-me" + STRONG,
    ],
)
def test_a_weak_secret_key_stops_the_start(tmp_path: Path, secret_key: str) -> None:
    result = _start(tmp_path, secret_key)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and "DJANGO_SECRET_KEY" in result.stderr


def test_a_random_key_starts_and_passes_the_deploy_check(tmp_path: Path) -> None:
    assert _start(tmp_path, STRONG).returncode == 0
    result = _start(tmp_path, STRONG, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "security.W009" not in result.stdout + result.stderr
