"""Supervised fine-tuning on demonstrations, on demand (InstructGPT step 1).

The resulting SFT version becomes the current policy, the reference of later PPO runs and
the initialisation of later reward models.
"""

from django.db import transaction

from core.exceptions import ApplicationError, ConflictError
from labeling.models import Demonstration, Project
from training.models import TrainingRun
from training.services.runs import run_create

MIN_DEMONSTRATIONS = 1


@transaction.atomic
def sft_start(*, project: Project, config: dict | None = None) -> TrainingRun:
    Project.objects.select_for_update().get(pk=project.pk)
    if TrainingRun.objects.filter(
        project=project, kind=TrainingRun.Kind.SFT, status__in=["queued", "running"]
    ).exists():
        raise ConflictError("An SFT run of this project is already queued or running.")
    count = Demonstration.objects.filter(project=project).count()
    if count < MIN_DEMONSTRATIONS:
        raise ApplicationError("The project has no demonstrations yet: write some first.")
    merged = {**project.training_config.get("sft", {}), **(config or {})}
    return run_create(
        project=project, kind=TrainingRun.Kind.SFT, config=merged, inputs={"demonstrations": count}
    )
