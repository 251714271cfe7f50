"""Celery doors: load the row, call the service that does the work, nothing else (a run's
task also hands its outcome to the round, `rounds.round_on_run_finished`).

Tasks named `gpu_*` are routed to the `gpu` queue (config/celery.py); the rest run on
`default`. Every task is idempotent on the id it carries.
"""

import logging

from celery import shared_task
from celery.signals import worker_ready

from training import dispatch
from training.models import Round, TrainingRun

logger = logging.getLogger(__name__)


@shared_task(name=dispatch.GPU_EXECUTE_RUN, acks_late=True, bind=True)
def gpu_execute_run(self, run_id: int) -> None:
    from training.services import rounds, run_bodies
    from training.services.runs import run_execute

    run = TrainingRun.objects.filter(pk=run_id).first()
    if run is None:
        logger.warning("run %s does not exist (deleted?)", run_id)
        return
    # The worker's node name (gpu@host) lets a restarted worker fail what it left behind.
    body = run_bodies.body_for(run.kind)
    run = run_execute(run_id=run_id, body=body, worker=self.request.hostname)
    rounds.round_on_run_finished(run=run)


@shared_task(name=dispatch.ROUND_BUILD_PAIRS, acks_late=True)
def round_build_pairs(round_id: int) -> None:
    from training.services import rounds

    round_ = Round.objects.filter(pk=round_id).first()
    if round_ is not None:
        rounds.round_build_pairs(round_=round_)


@shared_task(name=dispatch.REAP_STALE_RUNS)
def reap_stale_runs(dead_worker: str | None = None) -> list[int]:
    """Fail abandoned runs (and their rounds). Celery beat runs it every
    RLHF_REAP_INTERVAL seconds; a starting worker runs it for its own node name."""
    from training.services.rounds import rounds_reap_stale_runs

    failed = rounds_reap_stale_runs(dead_worker=dead_worker)
    if failed:
        logger.warning("failed abandoned runs %s", failed)
    return failed


@worker_ready.connect
def _recover_on_start(sender=None, **kwargs) -> None:
    """A worker that (re)starts fails the runs its previous process (same node name) or any
    dead worker left behind; a `gpu` worker also re-sends the messages of queued runs, in
    case the broker lost them (run_execute ignores the copies of a message it already ran)."""
    hostname = getattr(sender, "hostname", None)
    try:
        reap_stale_runs(dead_worker=hostname)
        queues = set(sender.app.amqp.queues.consume_from) if sender is not None else set()
        if "gpu" in queues:
            from training.services.runs import runs_requeue

            requeued = runs_requeue()
            if requeued:
                logger.info("re-sent the messages of queued runs %s", requeued)
    except Exception:  # never keep a worker from starting
        logger.exception("recovering runs at worker start failed")


@shared_task(name=dispatch.PLAYGROUND_REPLY, acks_late=True)
def playground_reply(reply_id: int) -> None:
    """A playground reply, on the `default` queue: a person is waiting for it, so it must
    not queue behind hours of training on `gpu`."""
    from training.models import PlaygroundReply
    from training.services.playground import playground_reply_generate

    reply = PlaygroundReply.objects.select_related("project").filter(pk=reply_id).first()
    if reply is None:
        logger.warning("playground reply %s does not exist (deleted?)", reply_id)
        return
    playground_reply_generate(reply=reply)
