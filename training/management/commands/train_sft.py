import time

from django.core.management.base import BaseCommand, CommandParser
from tqdm import tqdm

from training.management.commands._rounds import get_project, user_errors
from training.services.sft import sft_start


class Command(BaseCommand):
    help = "Fine-tune the project's policy on its demonstrations (the result becomes current)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("--wait", action="store_true", help="follow progress until it ends")

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        run = sft_start(project=get_project(str(opts["project"])))
        self.stdout.write(f"SFT run {run.pk} queued on {run.inputs['demonstrations']} demos.")
        if not opts["wait"]:
            return
        with tqdm(desc="sft", unit="step") as bar:
            while run.status in ("queued", "running"):
                time.sleep(1)
                run.refresh_from_db()
                bar.total = run.progress_total or None
                bar.n = run.progress_done
                bar.refresh()
        self.stdout.write(f"SFT run {run.pk} {run.status}. {run.error}".strip())
