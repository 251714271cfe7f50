"""Screenshots of the review and promotion-gate flows for docs/concepts.md (issue 11).

    .venv/bin/python docs/screenshots.py [--out docs/images] [--keep]

Reproducible end to end, in a throwaway temp folder (SQLite database, var and artifact
dirs; removed afterwards unless --keep): a project on the `tiny` model with K=4 and
overlap 2, a few train and eval prompts, one round through the real services
(`round_start` samples, two simulated labelers rank through `task_lease_next` /
`ranking_submit`, the last ranking moves the round through pairs and the RM; Celery runs
eagerly, in this process and in the web server's) until the promotion gate stops it in
needs_review. With the default thresholds the tiny model's RM fails the RM gate (it prints
which check failed). If no gate stops the round, the script stops with a message: raise the
project's thresholds in `build_round` and say so in the captions; it never fakes a stop.

Then `runserver --insecure` (DEBUG off, as `manage.py demo` runs it) serves that database
on a free port, and Debian's Chromium (headless, through Playwright) takes 1280x800 shots:
the review list and one task's review, the dashboard with the gate's panel, Approve
clicked in the browser (until no gate stops the round; after the RM gate that runs the
policy stage and its gate inside the request) and the dashboard after it, and a labeler's
"My work" page. PNGs are quantized with Pillow when it is installed (else kept as
Playwright writes them).
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
VIEWPORT = {"width": 1280, "height": 800}
SLUG = "shots"
MAX_BYTES = 300_000
TRAIN_PROMPTS = [
    "In one sentence, what are volcanoes?",
    "Tell me one interesting fact about honeybees.",
    "In one sentence, what is photosynthesis?",
    "Tell me one interesting fact about the moon.",
    "In one sentence, what is jazz?",
    "Tell me one interesting fact about glaciers.",
]
EVAL_PROMPTS = [
    "In one sentence, what are owls?",
    "Tell me one interesting fact about bridges.",
    "In one sentence, what is tea?",
]
# Small enough for a CPU in a minute or two (as the demo's config, fewer steps).
TRAINING_CONFIG = {
    "prompts_per_round": len(TRAIN_PROMPTS),
    "rm": {"batch_size": 4, "max_length": 256, "train_top_layers": 2, "epochs": 2},
    "ppo": {
        "steps": 4,
        "batch_size": 4,
        "mini_batch_size": 4,
        "max_new_tokens": 24,
        "train_top_layers": 2,
        "kl_target": 1.0,
    },
}


def setup_django(workdir: Path) -> dict[str, str]:
    """A throwaway SQLite database and var dir; Celery tasks run in-process. Returns the
    environment the web server gets too."""
    env = {
        "DJANGO_SETTINGS_MODULE": "config.settings.local",
        "DJANGO_DEBUG": "false",
        "DATABASE_URL": f"sqlite:///{workdir / 'shots.sqlite3'}",
        "CELERY_BROKER_URL": "memory://localhost/",
        "CELERY_TASK_ALWAYS_EAGER": "true",
        "RLHF_STUDIO_VAR_DIR": str(workdir / "var"),
        "RLHF_ARTIFACT_DIR": str(workdir / "models"),
        "RLHF_DEVICE": "cpu",
        "RLHF_DTYPE": "float32",
        "RLHF_PROGRESS_INTERVAL": "5",
        "DJANGO_LOG_LEVEL": "WARNING",
    }
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return env


def set_password(username: str, *, superuser: bool = False) -> str:
    from django.contrib.auth import get_user_model

    user, _ = get_user_model().objects.get_or_create(username=username)
    password = secrets.token_urlsafe(12)
    user.set_password(password)
    user.is_superuser = user.is_staff = superuser
    user.save()
    return password


def build_round() -> dict[str, Any]:
    """The project and one round, stopped by the promotion gate at the policy stage."""
    from labeling.models import Membership, RankingTask
    from labeling.services.imports import PromptIn
    from labeling.services.projects import membership_add, project_create, project_update
    from labeling.services.prompts import prompts_import
    from training.models import Round
    from training.services.rounds import round_start
    from training.services.simulation import labelers_simulate

    passwords = {"admin": set_password("admin", superuser=True)}
    project = project_create(
        slug=SLUG,
        name="Screenshots",
        k=4,
        overlap=2,
        base_model="tiny",
        training_config=TRAINING_CONFIG,
        guidelines="Rank from best to worst; tie equal answers; flag harmful ones.",
    )
    project = project_update(project=project, max_new_tokens=24)
    membership_add(project=project, username="admin", role=Membership.Role.ADMIN)
    items = [PromptIn(p) for p in TRAIN_PROMPTS] + [PromptIn(p, split="eval") for p in EVAL_PROMPTS]
    prompts_import(project=project, items=items, source="screenshots")

    round_ = round_start(project=project)
    round_.refresh_from_db()
    if round_.stage != Round.Stage.LABELING:
        raise SystemExit(f"the round did not reach labeling: {round_.stage} {round_.error}")
    summary = labelers_simulate(
        project=project, preference="length:shorter", labelers=2, noise=1.0, seed=1
    )
    print(f"simulated labelers: {summary['rankings']} rankings by {summary['labelers']}")
    round_.refresh_from_db()
    if round_.stage == Round.Stage.DONE:
        raise SystemExit(
            "no gate stopped the round; raise the project's gate thresholds "
            "(gate_min_rm_accuracy) so that it stops, and say so in the captions"
        )
    if round_.stage != Round.Stage.NEEDS_REVIEW:
        raise SystemExit(f"the round ended {round_.stage}: {round_.error}")
    checks = round_.gate[round_.review_stage]["checks"]
    print(f"the {round_.review_stage} gate stopped the round: failed", end=" ")
    print(", ".join(f"{c['name']} ({c['detail']})" for c in checks if not c["passed"]))
    labeler = summary["labelers"][0]
    passwords[labeler] = set_password(labeler)
    # The review page is most telling where the two labelers disagree.
    tasks = RankingTask.objects.filter(project=project, rankings_count__gte=2).order_by("id")
    orders = {t.pk: [r.tie_groups for r in t.rankings.order_by("id")] for t in tasks}
    if not orders:
        raise SystemExit("no task has two rankings")
    task = next((pk for pk, o in orders.items() if o[0] != o[1]), next(iter(orders)))
    return {"round": round_.number, "task": task, "labeler": labeler, "passwords": passwords}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}"]
    cmd += ["--noreload", "--insecure"]  # DEBUG off; static files served by runserver
    server = subprocess.Popen(cmd, cwd=ROOT, env=os.environ | env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"runserver exited with {server.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2)
            return server
        except OSError:
            time.sleep(0.5)
    server.terminate()
    raise SystemExit("runserver did not answer within 60 s")


def compress(path: Path) -> None:
    try:
        from PIL import Image
    except ImportError:
        return  # keep Playwright's PNG
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)


def shoot(base: str, out: Path, data: dict[str, Any]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    shots: list[Path] = []

    def snap(page: Any, name: str) -> None:
        path = out / name
        page.screenshot(path=str(path))
        compress(path)
        shots.append(path)

    def log_in(browser: Any, username: str) -> Any:
        context = browser.new_context(base_url=base, viewport=VIEWPORT)
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.goto("/accounts/login/")
        page.fill("input[name=username]", username)
        page.fill("input[name=password]", data["passwords"][username])
        page.click("button[type=submit], input[type=submit]")
        page.wait_for_load_state("networkidle")
        return page

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        admin = log_in(browser, "admin")
        admin.goto(f"/projects/{SLUG}/review/")
        admin.wait_for_load_state("networkidle")
        snap(admin, "review-list.png")
        admin.goto(f"/projects/{SLUG}/review/{data['task']}/")
        admin.wait_for_load_state("networkidle")
        snap(admin, "review-task.png")
        admin.goto(f"/projects/{SLUG}/rounds/")
        admin.wait_for_load_state("networkidle")
        approve = admin.locator("#review-panel:not([hidden]) #approve-round:enabled")
        approve.wait_for()  # the dashboard's script has drawn the gate's panel
        admin.locator("#review-panel").evaluate("e => e.scrollIntoView({block: 'start'})")
        admin.evaluate("window.scrollBy(0, -64)")
        snap(admin, "gate-needs-review.png")
        while approve.count():  # after the RM gate, approving runs PPO (eagerly) and
            approve.click()  # the policy gate may stop the round once more
            admin.get_by_text("Approved: round").wait_for(timeout=600_000)
            admin.reload()
            admin.locator("#stages li").first.wait_for()
            admin.wait_for_timeout(1000)
        admin.goto(f"/projects/{SLUG}/rounds/")
        admin.locator("#stages li").first.wait_for()
        admin.locator("#review-panel").wait_for(state="hidden")
        drawn = '#chart-ppo-reward svg.chart__svg[data-points]:not([data-points="0"])'
        admin.locator(drawn).wait_for()  # the round's curves are loaded
        snap(admin, "gate-approved.png")
        labeler = log_in(browser, data["labeler"])
        labeler.goto(f"/projects/{SLUG}/history/")
        labeler.wait_for_load_state("networkidle")
        snap(labeler, "my-work.png")
        browser.close()
    return shots


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="rlhf-shots-"))
    server = None
    try:
        env = setup_django(workdir)
        data = build_round()
        port = free_port()
        server = serve(env, port)
        shots = shoot(f"http://127.0.0.1:{port}", args.out, data)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for path in shots:
        size = path.stat().st_size
        print(f"{path.relative_to(ROOT)}: {size // 1024} KB")
        if size > MAX_BYTES:
            print(f"  over {MAX_BYTES // 1000} KB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
