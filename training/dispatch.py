"""Queue Celery work by task name: the one way services send work to the workers.

Services never import `training.tasks` (the Celery door, which imports the services): they
name the task here and Celery's registry finds it, so the layers stay one-way
(doors -> services -> dispatch). Routing is by name too (`config/celery.py`: `gpu_*` tasks
go to the `gpu` queue). Eager mode in tests runs the task in-process, as `delay` does.
"""

from typing import Any

from celery import current_app
from django.db import transaction

GPU_EXECUTE_RUN = "training.tasks.gpu_execute_run"
ROUND_BUILD_PAIRS = "training.tasks.round_build_pairs"
REAP_STALE_RUNS = "training.tasks.reap_stale_runs"
PLAYGROUND_REPLY = "training.tasks.playground_reply"


def enqueue(name: str, *args: Any) -> None:
    """Send task `name` now (call outside a transaction, or when the rows it reads are
    already committed)."""
    current_app.tasks[name].delay(*args)


def enqueue_on_commit(name: str, *args: Any) -> None:
    """Send task `name` once the current transaction commits (never for rolled-back rows)."""
    transaction.on_commit(lambda: enqueue(name, *args))
