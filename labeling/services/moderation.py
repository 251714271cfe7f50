"""The moderation filter on prompts (labeling.moderation has the rules).

Word and regex rules run on import and whenever the rules change; the optional classifier
runs on the worker before sampling (training's generate run calls `prompts_flag`). A
flagged prompt is held out of rounds (`training.selectors.round_prompts`) until an admin
releases it (it is used again and never re-flagged by the rules) or drops it (kept, never
used).
"""

from collections.abc import Iterable

from django.db import transaction

from core.exceptions import ApplicationError, ConflictError
from labeling import seams
from labeling.models import Project, Prompt
from labeling.moderation import ModerationRules, RulesError

Moderation = Prompt.Moderation


def moderation_rules(project: Project) -> ModerationRules:
    """The project's rules; rules saved before validation existed and now invalid count
    as none (they were refused at every door since)."""
    try:
        return ModerationRules.parse(project.moderation_rules)
    except RulesError:
        return ModerationRules()


def check_moderation_rules(*, project: Project, config: object) -> dict:
    """The door's validation of moderation_rules: the normalised config, or a 400. A
    classifier must be a model folder under the operator's model roots."""
    try:
        rules = ModerationRules.parse(config)
    except RulesError as error:
        raise ApplicationError(str(error)) from None
    if rules.classifier:
        refused = ApplicationError(
            "moderation_rules.classifier: not an allowed model: name a sequence-classification "
            "folder under the operator's model roots (RLHF_MODEL_ROOTS)"
        )
        if not rules.classifier.startswith("/"):
            raise refused
        try:
            seams.check_model_spec(project, rules.classifier)
        except ApplicationError:
            raise refused from None
    return rules.as_config()


def moderate_new(prompts: Iterable[Prompt], rules: ModerationRules) -> int:
    """Set the moderation fields of unsaved prompts by the text rules; how many are flagged."""
    flagged = 0
    if not rules.has_text_rules:
        return 0
    for prompt in prompts:
        reasons = rules.reasons(_moderated_text(prompt))
        if reasons:
            prompt.moderation, prompt.moderation_reasons = Moderation.FLAGGED, reasons
            flagged += 1
    return flagged


@transaction.atomic
def moderation_rescan(*, project: Project) -> int:
    """Run the project's text rules over its clear prompts (after the rules changed);
    returns how many were flagged. Released and dropped prompts keep the admin's decision;
    flagged ones keep their reasons."""
    rules = moderation_rules(project)
    if not rules.has_text_rules:
        return 0
    flagged = []
    for prompt in Prompt.objects.filter(project=project, moderation=Moderation.CLEAR).iterator():
        reasons = rules.reasons(_moderated_text(prompt))
        if reasons:
            prompt.moderation, prompt.moderation_reasons = Moderation.FLAGGED, reasons
            flagged.append(prompt)
    Prompt.objects.bulk_update(flagged, ["moderation", "moderation_reasons"], batch_size=500)
    return len(flagged)


@transaction.atomic
def prompts_flag(*, project: Project, reasons: dict[int, list[str]]) -> int:
    """Flag the project's clear prompts named in `reasons` (prompt id -> reasons), e.g. by
    the classifier; returns how many changed."""
    prompts = list(
        Prompt.objects.select_for_update().filter(
            project=project, pk__in=list(reasons), moderation=Moderation.CLEAR
        )
    )
    for prompt in prompts:
        prompt.moderation, prompt.moderation_reasons = Moderation.FLAGGED, reasons[prompt.pk]
    Prompt.objects.bulk_update(prompts, ["moderation", "moderation_reasons"])
    return len(prompts)


@transaction.atomic
def prompt_release(*, prompt: Prompt) -> Prompt:
    """A flagged (or dropped) prompt becomes usable again; its reasons are kept."""
    prompt = Prompt.objects.select_for_update().get(pk=prompt.pk)
    if prompt.moderation not in (Moderation.FLAGGED, Moderation.DROPPED):
        raise ConflictError(f"Prompt {prompt.pk} is {prompt.moderation}: nothing to release.")
    prompt.moderation = Moderation.RELEASED
    prompt.save(update_fields=["moderation", "updated_at"])
    return prompt


@transaction.atomic
def prompt_drop(*, prompt: Prompt) -> Prompt:
    """A prompt is kept (its past tasks and rankings too) but never used in a round again."""
    prompt = Prompt.objects.select_for_update().get(pk=prompt.pk)
    if prompt.moderation == Moderation.DROPPED:
        raise ConflictError(f"Prompt {prompt.pk} is dropped already.")
    prompt.moderation = Moderation.DROPPED
    prompt.save(update_fields=["moderation", "updated_at"])
    return prompt


def _moderated_text(prompt: Prompt) -> str:
    """Every turn of a chat prompt is checked, not only the last user turn."""
    if prompt.chat:
        return "\n".join(str(turn.get("content", "")) for turn in prompt.chat)
    return prompt.text
