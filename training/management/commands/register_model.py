from django.core.management.base import BaseCommand, CommandParser

from training.management.commands._rounds import get_project, user_errors
from training.models import ModelVersion
from training.services.registry import model_version_register


class Command(BaseCommand):
    help = (
        "Register a model folder trained elsewhere (under RLHF_MODEL_ROOTS) as a version of a "
        "project: a reward model (a *ForSequenceClassification with one label, e.g. from "
        "TRL's RewardTrainer) or a policy (a *ForCausalLM)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project slug")
        parser.add_argument("path", help="absolute path of a save_pretrained folder")
        parser.add_argument("--role", choices=ModelVersion.Role.values, required=True)
        parser.add_argument(
            "--make-current", action="store_true", help="make it the project's current one"
        )

    @user_errors
    def handle(self, *args: object, **opts: object) -> None:
        version = model_version_register(
            project=get_project(str(opts["project"])),
            path=str(opts["path"]),
            role=str(opts["role"]),
            make_current=bool(opts["make_current"]),
        )
        current = " (current)" if version.is_current else ""
        self.stdout.write(
            f"Registered {version.project.slug}/{version.label}{current}: {version.artifact}"
        )
