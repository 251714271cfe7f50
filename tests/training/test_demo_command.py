"""`python manage.py demo`, the whole product's setup-and-serve command (training app)."""

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth import authenticate, get_user_model
from django.core.management import call_command
from django.http import HttpRequest

from labeling.models import Project, Ranking, RankingTask
from training.models import ModelVersion

User = get_user_model()


def run(*args: object) -> str:
    out = io.StringIO()
    call_command(*[str(a) for a in args], stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_demo_sets_up_once_and_keeps_users() -> None:
    first = run("demo", "--no-server")
    admin, labeler = User.objects.get(username="admin"), User.objects.get(username="labeler")
    assert admin.is_superuser and admin.is_staff and not labeler.is_superuser
    password = re.search(r"^ +admin +(\S+)$", first, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert authenticate(HttpRequest(), username="admin", password=password) == admin
    project = Project.objects.get(slug="demo")
    roles = dict(project.memberships.values_list("user__username", "role"))
    assert roles == {
        "admin": "admin",
        "labeler": "labeler",
        "sim-labeler-1": "labeler",
        "sim-labeler-2": "labeler",
    }
    # Overlap 2, half of it ranked by the two simulated labelers: agreement has numbers.
    assert project.overlap == 2
    rankings = Ranking.objects.filter(task__project=project)
    assert rankings.count() == project.tasks.count()  # half of 2 per task
    assert set(rankings.values_list("labeler__username", flat=True)) == {
        "sim-labeler-1",
        "sim-labeler-2",
    }
    counts = (project.prompts.count(), project.tasks.count())
    assert counts[0] >= 20 and counts[1] >= 8
    assert project.prompts.exclude(chat=None).exists()
    hostile = "<img src=x onerror=alert(1)>"
    assert RankingTask.objects.filter(project=project, responses__text__contains=hostile).exists()
    assert ModelVersion.objects.filter(project=project, is_current=True).count() == 1

    second = run("demo", "--no-server")
    assert second.count("password unchanged") == 2
    assert authenticate(HttpRequest(), username="admin", password=password) == admin
    assert (project.prompts.count(), project.tasks.count()) == counts
    assert User.objects.count() == 4
    assert rankings.count() == project.tasks.count()  # simulated once, on first set-up
    assert ModelVersion.objects.filter(project=project).count() == 1

    third = run("demo", "--no-server", "--reset-passwords")
    assert "password unchanged" not in third
    assert authenticate(HttpRequest(), username="admin", password=password) is None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_demo_serves_web_and_worker_until_interrupted(tmp_path) -> None:
    """The real thing: `manage.py demo` on a fresh SQLite database, then Ctrl-C."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "CELERY_BROKER_URL"}}
    env |= {"RLHF_STUDIO_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings.local"}
    log = tmp_path / "demo.log"
    with log.open("w") as handle:
        demo = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", str(port)],
            cwd=settings.BASE_DIR,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        status = _wait_for_http(f"http://127.0.0.1:{port}/accounts/login/", demo, timeout=90)
        assert status == 200
        # Both workers: "gpu@host ready." (training, with beat) and "default@host ready.".
        _wait_for_text(log, "gpu@", timeout=60)
        _wait_for_text(log, "default@", timeout=60)
        _wait_for_text(log, "beat: Starting", timeout=60)
        deadline = time.monotonic() + 60
        while log.read_text().count(" ready.") < 2:
            assert time.monotonic() < deadline, "the two workers did not both come up"
            time.sleep(0.5)
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        demo.wait(timeout=60)
    finally:
        if demo.poll() is None:  # stop it and its children, then make sure
            demo.terminate()
            try:
                demo.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(demo.pid, signal.SIGKILL)
    output = log.read_text()
    assert demo.returncode == 0, output
    assert f"http://127.0.0.1:{port}/accounts/login/" in output
    assert "gpu@" in output and "default@" in output  # both workers came up
    assert "Stopped." in output
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2)


def _wait_for_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert time.monotonic() < deadline, f"{text!r} not in the demo's output"
        time.sleep(0.5)


def _wait_for_http(url: str, process: subprocess.Popen, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the demo stopped"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (local URL)
                return int(response.status)
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s")
