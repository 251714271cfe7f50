"""What the generate run checks around sampling: the moderation classifier on the prompts
before they are sampled, and near-duplicate responses within a task after.

- A project whose `moderation_rules` name a classifier has each prompt of the shard
  scored first; a prompt it flags is held out (labeling.services.moderation.prompts_flag)
  and gets no task in this round.
- Labelers should never rank two copies of one text: a response that nearly repeats an
  earlier one of its task (labeling.moderation.near_duplicates) is sampled once more
  with a fresh seed; one that still repeats is stored with `duplicate_of` set, and the
  ranking screen says so.
"""

from collections.abc import Callable, Sequence
from typing import Any

from labeling.models import Project, Prompt
from labeling.moderation import near_duplicates
from labeling.services.moderation import moderation_rules, prompts_flag
from training.services.model_specs import model_spec_resolve

# One more sample per near duplicate, then it is marked.
RESAMPLE_ATTEMPTS = 1


def screen_prompts(
    *, project: Project, prompts: list[Prompt], device: str, log: Callable[[str], None]
) -> list[Prompt]:
    """The prompts the project's classifier lets through (all of them without one)."""
    rules = moderation_rules(project)
    if not rules.classifier or not prompts:
        return prompts
    from training.ml.classify import label_probabilities, load_classifier

    folder = model_spec_resolve(project=project, spec=rules.classifier)
    model, tokenizer = load_classifier(folder, device=device)
    texts = ["\n".join(t["content"] for t in p.chat) if p.chat else p.text for p in prompts]
    reasons = {
        prompt.pk: why
        for prompt, probabilities in zip(
            prompts, label_probabilities(model, tokenizer, texts), strict=True
        )
        if (why := rules.classifier_reasons(probabilities))
    }
    if reasons:
        flagged = prompts_flag(project=project, reasons=reasons)
        log(f"the moderation classifier held out {flagged} prompt(s) of this shard")
    return [p for p in prompts if p.pk not in reasons]


def resample_near_duplicates(
    samples: list[list[Any]],
    resample: Callable[[list[int], list[int]], Sequence[Any]],
) -> tuple[list[list[Any]], list[list[int | None]]]:
    """Replace near-duplicate responses by fresh samples, then mark those that remain.

    `samples[i]` are prompt i's K responses (objects with `text` and `seed`);
    `resample(prompt_indices, seeds)` samples one response per entry. A resampled response
    of prompt i gets seed `seed + K * attempt`, outside the seeds of its siblings. Returns
    the samples and, per prompt, the position of the earlier response each one repeats.
    """
    marks = [near_duplicates([s.text for s in row]) for row in samples]
    for attempt in range(1, RESAMPLE_ATTEMPTS + 1):
        redo = [(i, j) for i, row in enumerate(marks) for j, m in enumerate(row) if m is not None]
        if not redo:
            break
        fresh = resample(
            [i for i, _ in redo],
            [samples[i][j].seed + len(samples[i]) * attempt for i, j in redo],
        )
        for (i, j), sample in zip(redo, fresh, strict=True):
            samples[i][j] = sample
        marks = [near_duplicates([s.text for s in row]) for row in samples]
    return samples, marks
