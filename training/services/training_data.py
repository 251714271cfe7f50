"""The labeling database as the plain data the ML core trains on (rankings, prompts,
demonstrations): reads shared by the run bodies.

Rankings become K-wise `RankedExample`s (tie groups of response indices, best first);
the held-out part is chosen by prompt, and, when there are enough labelers, one whole
labeler is held out too (InstructGPT's held-out-labeler check, one fold of five).
"""

import random
from collections import Counter
from dataclasses import dataclass, field

from labeling.models import Demonstration, Project, Prompt, Ranking
from training.models import Round


@dataclass
class RMData:
    train: list = field(default_factory=list)
    eval: list = field(default_factory=list)
    heldout_labeler: list = field(default_factory=list)
    heldout_labeler_name: str | None = None


def ranked_examples(*, project: Project) -> list:
    """Every usable ranking of the project as a RankedExample, for the RM and DPO: the
    current revision of each (superseded ones skipped), not rejected by a reviewer, not
    all-unacceptable."""
    from training.ml.preferences import RankedExample

    pseudonyms = dict(project.memberships.values_list("user_id", "pseudonym"))
    rankings = (
        Ranking.objects.filter(
            task__project=project, all_unacceptable=False, superseded_at__isnull=True
        )
        .exclude(review=Ranking.Review.REJECTED)
        .select_related("task__prompt")
        .prefetch_related("task__responses")
        .order_by("id")
    )
    examples = []
    for ranking in rankings:
        responses = list(ranking.task.responses.all())
        index = {r.pk: i for i, r in enumerate(responses)}
        groups = [[index[rid] for rid in group if rid in index] for group in ranking.tie_groups]
        groups = [g for g in groups if g]
        if len(groups) < 2:
            continue  # all tied: no pair to learn from
        examples.append(
            RankedExample(
                prompt=ranking.task.prompt.as_input,
                responses=[r.text for r in responses],
                tie_groups=groups,
                labeler=(
                    pseudonyms.get(ranking.labeler_id, ranking.source)
                    if ranking.labeler_id is not None
                    else ranking.source
                ),
                prompt_id=str(ranking.task.prompt_id),
            )
        )
    return examples


def split_rm_data(examples: list, *, eval_fraction: float = 0.1, seed: int = 0) -> RMData:
    """Hold out a fraction of prompts, and the median labeler when there are >= 3."""
    data = RMData()
    counts = Counter(e.labeler for e in examples if e.labeler)
    if len(counts) >= 3:
        ordered = sorted(counts, key=lambda name: (counts[name], name))
        data.heldout_labeler_name = ordered[len(ordered) // 2]
    prompt_ids = sorted({e.prompt_id or "" for e in examples})
    rng = random.Random(seed)
    rng.shuffle(prompt_ids)
    n_eval = max(1, round(len(prompt_ids) * eval_fraction)) if len(prompt_ids) > 1 else 0
    eval_prompts = set(prompt_ids[:n_eval])
    for example in examples:
        if example.labeler == data.heldout_labeler_name:
            data.heldout_labeler.append(example)
        elif (example.prompt_id or "") in eval_prompts:
            data.eval.append(example)
        else:
            data.train.append(example)
    return data


def training_prompts(*, project: Project, split: str = Prompt.Split.TRAIN) -> list:
    return [p.as_input for p in project.prompts.filter(split=split).order_by("id")]


def round_train_prompts(*, round_: Round) -> list:
    """The train prompts the round sampled (its ranking tasks'), each once, in prompt order:
    what best-of-N and RLOO train on."""
    prompts = (
        Prompt.objects.filter(tasks__round=round_, split=Prompt.Split.TRAIN)
        .distinct()
        .order_by("id")
    )
    return [p.as_input for p in prompts]


def demonstration_pairs(*, project: Project) -> list[tuple]:
    """(prompt, response) pairs of the project's demonstrations, for SFT and PPO-ptx."""
    rows = Demonstration.objects.filter(project=project).select_related("prompt").order_by("id")
    return [(d.prompt.as_input, d.response) for d in rows]
