"""The Celery app: two queues, JSON only, late acks, one task at a time per GPU worker.

- `default`: bookkeeping, building pairs, exports, and playground replies (a person waits
  for those, so they stay off `gpu`, where they would queue behind hours of training; a
  worker that serves both queues still answers them, between runs).
- `gpu`: sampling and all training. GPU workers run `-Q gpu --concurrency 1`.

Run state lives in the database (training.models.TrainingRun); the broker is transport.
"""

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("rlhf_studio")
app.config_from_object("django.conf:settings", namespace="CELERY")


def _configure(settings_module: object) -> None:
    from django.conf import settings

    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_time_limit=settings.RLHF_TASK_HARD_TIME_LIMIT,
        task_soft_time_limit=settings.RLHF_TASK_SOFT_TIME_LIMIT,
        task_default_queue="default",
        task_queues=(Queue("default"), Queue("gpu")),
        task_routes={"training.tasks.gpu_*": {"queue": "gpu"}},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )


app.on_after_configure.connect(lambda sender, **kw: _configure(sender), weak=False)
app.autodiscover_tasks()
