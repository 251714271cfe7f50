"""Labeling events the loop listens to: training subscribes to labeling's signals, so
labeling's services need not know the loop (labeling reaches training only through
`labeling.seams`)."""

from django.db import transaction
from django.db.models.signals import post_save
from django.dispatch import receiver

from labeling.models import Ranking


@receiver(post_save, sender=Ranking, dispatch_uid="training.round_progress")
def _ranking_saved(sender, instance: Ranking, created: bool, **kwargs) -> None:
    if not created or instance.task.round_id is None:
        return
    from training.services.rounds import round_on_ranking_submitted

    task = instance.task
    transaction.on_commit(lambda: round_on_ranking_submitted(task=task))
