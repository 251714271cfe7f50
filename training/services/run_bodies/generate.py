"""The generate run: the round's policy samples K responses per prompt; each prompt becomes
a ranking task."""

from typing import Any

from django.db import IntegrityError, transaction

from core.exceptions import ApplicationError
from labeling.models import Prompt, RankingTask, Response
from training.models import Round, TrainingRun
from training.selectors import prompts_for_round
from training.services.run_bodies.common import (
    check_cancel,
    device_and_dtype,
    required,
    round_of,
    stable_seed,
)
from training.services.runs import RunReporter


def generate_body(run: TrainingRun, reporter: RunReporter) -> dict[str, Any]:
    """Sample K responses per prompt from the round's policy; each prompt becomes a task.

    Model text comes storable from the ML core's decoding (a policy may learn to emit the
    byte token that decodes to NUL; it becomes U+FFFD); `text/replaced_chars` counts the
    characters replaced.
    """
    from training.ml.loading import load_causal_lm
    from training.ml.sampling import GenerationSettings, sample_responses

    round_ = round_of(run, "project", "sampling_policy")
    project, policy = round_.project, required(round_.sampling_policy, "a sampling policy")
    prompts = prompts_for_round(round_=round_)
    if not prompts and not round_.tasks.exists():
        raise ApplicationError("The project has no train prompts: import prompts first.")
    device, dtype = device_and_dtype()
    model, tokenizer = load_causal_lm(policy.artifact, device=device, dtype=dtype)
    batch = int(run.config.get("prompts_per_batch", 4))
    total = len(prompts) * project.k  # progress counts responses
    reporter.progress(0, total)
    replaced = 0
    for start in range(0, len(prompts), batch):
        check_cancel(reporter)
        chunk = prompts[start : start + batch]
        gen = GenerationSettings(
            max_new_tokens=project.max_new_tokens,
            temperature=project.temperature,
            top_p=project.top_p,
            seed=stable_seed(project.pk, round_.number, chunk[0].pk),
        )
        done_before = start * project.k

        def on_progress(done: int, _chunk_total: int, base: int = done_before) -> None:
            reporter.progress(base + done, total)

        samples = sample_responses(
            model,
            tokenizer,
            [p.as_input for p in chunk],
            k=project.k,
            settings=gen,
            batch_size=int(run.config.get("batch_size", 8)),
            on_progress=on_progress,
        )
        replaced += _store_tasks(round_, chunk, samples, gen)
        reporter.progress(done_before + len(chunk) * project.k, total)
    if replaced:
        reporter.log(f"replaced {replaced} NUL or lone-surrogate characters in sampled text")
    return {
        "tasks": round_.tasks.count(),
        "policy": policy.label,
        "text/replaced_chars": replaced,
    }


def _store_tasks(round_: Round, prompts: list[Prompt], samples: list, gen: Any) -> int:
    """One task per prompt with its K responses; return how many characters of the
    responses the decoding replaced (`Sample.replaced_chars`)."""
    policy = required(round_.sampling_policy, "a sampling policy")
    generation = {
        "max_new_tokens": gen.max_new_tokens,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
    }
    replaced = 0
    for prompt, responses in zip(prompts, samples, strict=True):
        texts = [(s.text, s.replaced_chars) for s in responses]
        try:
            with transaction.atomic():
                task = RankingTask.objects.create(
                    project=round_.project,
                    prompt=prompt,
                    round=round_,
                    overlap=round_.project.overlap,
                    source="policy",
                )
                Response.objects.bulk_create(
                    Response(
                        task=task,
                        position=i,
                        text=text,
                        token_count=len(s.token_ids),
                        finished=s.finished,
                        policy_version=policy,
                        policy_name=policy.label,
                        generation=generation,
                        seed=s.seed,
                    )
                    for i, (s, (text, _)) in enumerate(zip(responses, texts, strict=True))
                )
        except IntegrityError:
            continue  # a retried run: this prompt already has its task in this round
        replaced += sum(count for _, count in texts)
    return replaced
