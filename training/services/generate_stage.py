"""A round's generate stage as shard runs that several `gpu` workers sample in parallel.

The stage's prompts are chosen once, when it starts (`selectors.prompts_for_round`), and
cut into `generate.shards` shards of whole batches (`generate.prompts_per_batch`): the
batches are those one run would sample, so the texts do not depend on the shard count.
Each shard is a generate TrainingRun whose inputs hold

    {"shard": index, "shards": count, "prompt_ids": [...]}

A shard's tasks are stored idempotently (`run_bodies.generate`); the stage is finished
once every shard index has a succeeded run, and a retry reruns only the shards whose
latest run failed or was cancelled, with the same prompts.
"""

from collections.abc import Iterable
from typing import Any

from labeling.models import RankingTask
from training.models import Round, TrainingRun
from training.selectors import prompts_for_round
from training.services.runs import run_create

GENERATE = TrainingRun.Kind.GENERATE
RERUN = {TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED}


def shard_prompt_ids(prompt_ids: list[int], *, shards: int, batch: int) -> list[list[int]]:
    """`prompt_ids` in at most `shards` contiguous parts of whole batches of `batch`; the
    parts differ by at most one batch. Always at least one part (empty without prompts)."""
    batches = [prompt_ids[i : i + batch] for i in range(0, len(prompt_ids), batch)]
    count = max(1, min(shards, len(batches)))
    size, extra = divmod(len(batches), count)
    parts, start = [], 0
    for index in range(count):
        end = start + size + (1 if index < extra else 0)
        parts.append([pid for chunk in batches[start:end] for pid in chunk])
        start = end
    return parts


def generate_stage_start(*, round_: Round, config: dict[str, Any]) -> list[TrainingRun]:
    """Choose the round's missing prompts and queue one generate run per shard of them.
    Call while holding the round's row lock."""
    ids = [p.pk for p in prompts_for_round(round_=round_)]
    parts = shard_prompt_ids(
        ids,
        shards=int(config.get("shards", 1)),
        batch=int(config.get("prompts_per_batch", 4)),
    )
    inputs = [
        {"shard": index, "shards": len(parts), "prompt_ids": part}
        for index, part in enumerate(parts)
    ]
    return [_queue_shard(round_, config, shard) for shard in inputs]


def generate_stage_retry(*, round_: Round, config: dict[str, Any]) -> list[TrainingRun]:
    """Queue again the shards whose latest run failed or was cancelled, with their prompts;
    shards that succeeded, or are queued or running still, are left alone. A stage with no
    such shard (its runs predate sharding) starts again over the prompts still missing."""
    latest = _latest_shard_runs(TrainingRun.objects.filter(round=round_, kind=GENERATE))
    again = [
        run.inputs for shard, run in latest.items() if shard is not None and run.status in RERUN
    ]
    if not again:
        return generate_stage_start(round_=round_, config=config)
    return [_queue_shard(round_, config, inputs) for inputs in again]


def _queue_shard(round_: Round, config: dict[str, Any], inputs: dict[str, Any]) -> TrainingRun:
    return run_create(
        project=round_.project,
        round=round_,
        kind=GENERATE,
        config=config,
        inputs=inputs,
        progress_total=len(inputs["prompt_ids"]) * round_.project.k,
    )


def generate_stage_finished(*, round_: Round, run: TrainingRun) -> bool:
    """Whether every shard of the stage has a succeeded run, `run` being one that just
    succeeded. Reads one key of the round's succeeded generate runs (indexed by round),
    never the tasks."""
    succeeded = TrainingRun.objects.filter(
        round=round_, kind=GENERATE, status=TrainingRun.Status.SUCCEEDED
    )
    shards = set(succeeded.values_list("inputs__shard", flat=True))
    return len(shards) >= int(run.inputs.get("shards", 1))


def generate_stage_metrics(*, round_: Round) -> dict[str, Any]:
    """The stage's totals over its shards: the round's tasks, the characters decoding
    replaced, the number of shards, and the sampling policy."""
    succeeded = _latest_shard_runs(
        TrainingRun.objects.filter(round=round_, kind=GENERATE, status=TrainingRun.Status.SUCCEEDED)
    )
    metrics = [run.metrics for run in succeeded.values()]
    return {
        "tasks": RankingTask.objects.filter(round=round_).count(),
        "policy": next((m["policy"] for m in metrics if "policy" in m), ""),
        "text/replaced_chars": sum(m.get("text/replaced_chars") or 0 for m in metrics),
        "shards": len(succeeded),
    }


def generate_stage_progress(runs: Iterable[TrainingRun]) -> tuple[int, int]:
    """Responses sampled and wanted over the stage: the sum over the latest run of each
    shard among `runs` (a round's runs, e.g. prefetched)."""
    latest = _latest_shard_runs(r for r in runs if r.kind == GENERATE).values()
    return sum(r.progress_done for r in latest), sum(r.progress_total for r in latest)


def _latest_shard_runs(runs: Iterable[TrainingRun]) -> dict[int | None, TrainingRun]:
    """The latest run (highest id) of each shard index; None for runs without a shard."""
    latest: dict[int | None, TrainingRun] = {}
    for run in sorted(runs, key=lambda r: r.pk):
        latest[run.inputs.get("shard")] = run
    return latest
