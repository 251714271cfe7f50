"""The generate run: one shard of a round's generate stage. The round's policy samples K
responses for each prompt of the shard; each prompt becomes a ranking task.

The stage's prompts are chosen once, when it starts (`rounds`), and split into shards that
several `gpu` workers sample in parallel; a shard's prompt ids are in its run's inputs.
"""

from typing import Any

from django.db import IntegrityError, transaction

from core.exceptions import ApplicationError
from labeling.models import Prompt, RankingTask, Response
from training.models import Round, TrainingRun
from training.selectors import prompts_for_round
from training.services import progress
from training.services.run_bodies.common import (
    check_cancel,
    device_and_dtype,
    required,
    round_of,
    stable_seed,
)
from training.services.runs import RunCancelled, RunReporter
from training.services.sample_screening import resample_near_duplicates, screen_prompts


def generate_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Sample K responses per prompt of the shard; each prompt becomes a task.

    Prompts of the shard that already have their task in the round (a retried or
    duplicated shard) are not sampled again. Response `j` of a prompt has the seed
    `stable_seed(project, round, prompt) + j`, and the shards are cut at batch boundaries
    (`rounds`), so the texts are the same whatever the number of shards. Model text comes
    storable from the ML core's decoding (a policy may learn to emit the byte token that
    decodes to NUL; it becomes U+FFFD); `text/replaced_chars` counts the characters
    replaced.
    """
    from training.ml.loading import load_causal_lm
    from training.ml.sampling import GenerationSettings, SamplingStopped, sample_responses

    round_ = round_of(run, "project", "sampling_policy")
    project, policy = round_.project, required(round_.sampling_policy, "a sampling policy")
    shard = _shard_prompts(run, round_)
    tasked = set(
        RankingTask.objects.filter(round=round_, prompt__in=shard).values_list(
            "prompt_id", flat=True
        )
    )
    prompts = [p for p in shard if p.pk not in tasked]
    if not shard and not round_.tasks.exists():
        raise ApplicationError("The project has no train prompts: import prompts first.")
    total = len(shard) * project.k  # progress counts the shard's responses
    reporter.progress(len(tasked) * project.k, total)
    replaced = 0
    if prompts:
        device, dtype = device_and_dtype()
        prompts = screen_prompts(project=project, prompts=prompts, device=device, log=reporter.log)
        reporter.phase(progress.LOADING)
        model, tokenizer = load_causal_lm(policy.artifact, device=device, dtype=dtype)
        gen = GenerationSettings(
            max_new_tokens=project.max_new_tokens,
            temperature=project.temperature,
            top_p=project.top_p,
        )
        batch = int(run.config.get("prompts_per_batch", 4))
        budget = total * gen.max_new_tokens  # the shard's token budget: K x max_new_tokens
        batches = -(-len(prompts) // batch)
        for start in range(0, len(prompts), batch):
            check_cancel(reporter)
            chunk = prompts[start : start + batch]
            done_before = (len(tasked) + start) * project.k
            label = f"batch {start // batch + 1}/{batches}"

            def on_progress(done: int, _chunk_total: int, base: int = done_before) -> None:
                reporter.progress(base + done, total)

            def on_tokens(
                used: int, _budget: int, base: int = done_before, label: str = label
            ) -> None:
                tokens = base * gen.max_new_tokens + used
                reporter.phase(progress.SAMPLING, tokens, budget, unit="tokens", step=label)

            try:
                samples = sample_responses(
                    model,
                    tokenizer,
                    [p.as_input for p in chunk],
                    k=project.k,
                    settings=gen,
                    batch_size=int(run.config.get("batch_size", 8)),
                    on_progress=on_progress,
                    on_tokens=on_tokens,
                    seeds=[stable_seed(project.pk, round_.number, p.pk) for p in chunk],
                    should_stop=reporter.should_stop,  # asked every decoding step
                )

                def resample(rows: list[int], seeds: list[int], chunk: list = chunk) -> list:
                    again = sample_responses(
                        model,
                        tokenizer,
                        [chunk[i].as_input for i in rows],
                        k=1,
                        settings=gen,
                        batch_size=int(run.config.get("batch_size", 8)),
                        seeds=seeds,
                        should_stop=reporter.should_stop,
                    )
                    return [row[0] for row in again]

                samples, duplicates = resample_near_duplicates(samples, resample)
            except SamplingStopped:
                reporter.log("cancelled: the sampler stopped between decoding steps")
                raise RunCancelled() from None
            replaced += _store_tasks(round_, chunk, samples, duplicates, gen)
            reporter.progress(done_before + len(chunk) * project.k, total)
    if replaced:
        reporter.log(f"replaced {replaced} NUL or lone-surrogate characters in sampled text")
    return {
        "tasks": RankingTask.objects.filter(round=round_, prompt__in=shard).count(),
        "policy": policy.label,
        "text/replaced_chars": replaced,
    }


def _shard_prompts(run: TrainingRun, round_: Round) -> list[Prompt]:
    """The shard's prompts, in the order the stage chose them. A run without prompt ids
    (queued before generation was sharded) takes the round's missing prompts."""
    ids = run.inputs.get("prompt_ids")
    if ids is None:
        return prompts_for_round(round_=round_)
    by_id = Prompt.objects.in_bulk(ids)
    return [by_id[i] for i in ids if i in by_id]  # a prompt deleted meanwhile is skipped


def _store_tasks(
    round_: Round,
    prompts: list[Prompt],
    samples: list,
    duplicates: list[list[int | None]],
    gen: Any,
) -> int:
    """One task per prompt with its K responses, unless the prompt has its task in the
    round already; return how many characters of the stored responses the decoding
    replaced (`Sample.replaced_chars`).

    Holds the round's row lock, so shards store one at a time and never after the round
    was cancelled (its open tasks closed): a cancelled round stops the run instead.
    """
    policy = required(round_.sampling_policy, "a sampling policy")
    generation = {
        "max_new_tokens": gen.max_new_tokens,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
    }
    replaced = 0
    with transaction.atomic():
        stage = Round.objects.select_for_update().values_list("stage", flat=True).get(pk=round_.pk)
        if stage == Round.Stage.CANCELLED:
            raise RunCancelled()
        existing = set(
            RankingTask.objects.filter(round=round_, prompt__in=prompts).values_list(
                "prompt_id", flat=True
            )
        )
        for prompt, responses, repeats in zip(prompts, samples, duplicates, strict=True):
            if prompt.pk in existing:
                continue  # a duplicated shard stored it meanwhile
            try:
                with transaction.atomic():
                    task = RankingTask.objects.create(
                        project=round_.project,
                        prompt=prompt,
                        round=round_,
                        overlap=round_.project.overlap,
                        source="policy",
                    )
                    rows = Response.objects.bulk_create(
                        Response(
                            task=task,
                            position=i,
                            text=s.text,
                            token_count=len(s.token_ids),
                            finished=s.finished,
                            policy_version=policy,
                            policy_name=policy.label,
                            generation=generation,
                            seed=s.seed,
                        )
                        for i, s in enumerate(responses)
                    )
                    _mark_duplicates(rows, repeats)
            except IntegrityError:
                continue  # the unique constraint (round, prompt): stored by another writer
            replaced += sum(s.replaced_chars for s in responses)
    return replaced


def _mark_duplicates(rows: list[Response], repeats: list[int | None]) -> None:
    """`duplicate_of` of each response that nearly repeats an earlier one of its task."""
    marked = []
    for row, earlier in zip(rows, repeats, strict=True):
        if earlier is not None:
            row.duplicate_of = rows[earlier]
            marked.append(row)
    if marked:
        Response.objects.bulk_update(marked, ["duplicate_of"])
