"""The playground: members chat with the project's current policy (PRODUCT.md section 3).

A request stores a queued PlaygroundReply and sends its id to the `default` queue (not
`gpu`, where it would wait behind training) when the transaction commits; the worker loads
the current policy (kept loaded between requests) and samples one response. Thumbs on a
reply become a labeling Feedback; a "better answer" becomes a Demonstration of the prompt,
i.e. SFT data.
"""

import logging
import threading
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from core.exceptions import ApplicationError, ConflictError
from formats.prompts import PromptInput as PromptContent
from labeling.models import Demonstration, Feedback, Project
from labeling.selectors import access_project
from labeling.services.imports import ImportFileError, check_prompt_content
from training import dispatch
from training.models import PlaygroundReply
from training.services.registry import current_policy
from training.services.run_bodies.common import stable_seed

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 20_000
MAX_TURNS = 64
# A member may have this many replies waiting at once (recent ones: a reply orphaned by a
# killed worker stops counting after QUEUED_WINDOW), so one person cannot fill the GPU queue.
MAX_QUEUED_PER_USER = 3
QUEUED_WINDOW = timedelta(minutes=10)


def access_playground_reply(*, user: Any, reply_id: int) -> PlaygroundReply:
    """The reply, if `user` asked for it and is still a member of its project (404 otherwise).

    A playground chat is personal: other members, even admins, do not see it.
    """
    reply = (
        PlaygroundReply.objects.select_related("project", "policy_version", "feedback")
        .filter(pk=reply_id)
        .first()
    )
    if reply is None or not getattr(user, "is_authenticated", False):
        raise Http404("No such reply.")
    access_project(user=user, slug=reply.project.slug)
    if reply.user_id != user.pk and not user.is_superuser:
        raise Http404("No such reply.")
    return reply


def check_playground_prompt(value: Any) -> PromptContent:
    """A non-blank string or a chat ending with a user turn, within size limits.

    A chat of one user message is stored as its string, so that a "better answer" to it
    lands on the same Prompt row as the same text imported from a file.
    """
    try:
        content = check_prompt_content(value, 0)
    except ImportFileError as error:
        raise ApplicationError(f"prompt: {error.reason}") from None
    if isinstance(content, list):
        if len(content) > MAX_TURNS:
            raise ApplicationError(f"prompt: at most {MAX_TURNS} chat messages")
        if len(content) == 1 and content[0]["role"] == "user":
            content = content[0]["content"]
    size = len(content) if isinstance(content, str) else sum(len(m["content"]) for m in content)
    if size > MAX_PROMPT_CHARS:
        raise ApplicationError(f"prompt: at most {MAX_PROMPT_CHARS} characters")
    return content


@transaction.atomic
def playground_reply_request(*, project: Project, user: Any, prompt: Any) -> PlaygroundReply:
    """Queue a reply of the current policy to `prompt` (a string or a chat)."""
    content = check_playground_prompt(prompt)
    waiting = PlaygroundReply.objects.filter(
        user=user,
        status__in=(PlaygroundReply.Status.QUEUED, PlaygroundReply.Status.RUNNING),
        created_at__gte=timezone.now() - QUEUED_WINDOW,
    ).count()
    if waiting >= MAX_QUEUED_PER_USER:
        raise ConflictError(
            f"You have {waiting} replies waiting for the model; wait for them to finish."
        )
    reply = PlaygroundReply.objects.create(project=project, user=user, prompt=content)
    dispatch.enqueue_on_commit(dispatch.PLAYGROUND_REPLY, reply.pk)
    return reply


# --------------------------------------------------------------------------- generation

# One policy stays loaded per worker process: a playground conversation sends many
# requests to the same version, and loading is the slow part. A new current policy
# (after a round) replaces it, so memory stays at one model.
_cache_lock = threading.Lock()
_cached: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def _loaded_policy(artifact: str) -> tuple[Any, Any]:
    """(model, tokenizer) for `artifact`; call while holding `_cache_lock`."""
    from training.ml.loading import load_causal_lm

    key = (artifact, str(settings.RLHF_DEVICE), str(settings.RLHF_DTYPE))
    if key not in _cached:
        _cached.clear()  # drop the previous policy before loading the next one
        _cached[key] = load_causal_lm(
            artifact, device=settings.RLHF_DEVICE, dtype=settings.RLHF_DTYPE
        )
    return _cached[key]


def playground_reply_generate(*, reply: PlaygroundReply) -> PlaygroundReply:
    """Sample the reply from the current policy and store it (idempotent on the row).

    Only an unfinished reply is worked on, and only an unfinished reply is written: a
    redelivered message for a finished reply does nothing. The reply says `running` (with
    `started_at`) while a worker samples it, so the page can tell "queued" from
    "generating"; a message redelivered after its worker died samples it again (the same
    seed, the same text). The text is stored as the ML core's decoding makes it storable
    (NUL and lone surrogates become U+FFFD, counted in the sample).
    """
    from training.ml.sampling import GenerationSettings, sample_responses

    unfinished = (PlaygroundReply.Status.QUEUED, PlaygroundReply.Status.RUNNING)
    if reply.status not in unfinished:
        return reply
    PlaygroundReply.objects.filter(pk=reply.pk, status__in=unfinished).update(
        status=PlaygroundReply.Status.RUNNING, started_at=timezone.now()
    )
    project = reply.project
    try:
        policy = current_policy(project=project)
        gen = GenerationSettings(
            max_new_tokens=project.max_new_tokens,
            temperature=project.temperature,
            top_p=project.top_p,
            seed=stable_seed("playground", reply.pk),  # a redelivered task: the same text
        )
        with _cache_lock:
            model, tokenizer = _loaded_policy(policy.artifact)
            [[sample]] = sample_responses(
                model, tokenizer, [reply.prompt], k=1, settings=gen, batch_size=1
            )
        text, replaced = sample.text, sample.replaced_chars
        if replaced:
            logger.info("playground reply %s: %d characters replaced", reply.pk, replaced)
        fields: dict[str, Any] = {
            "status": PlaygroundReply.Status.DONE,
            "text": text,
            "finished": sample.finished,
            "policy_version": policy,
            "error": "",
        }
    except Exception as exc:  # the reply shows the error; the worker keeps serving
        logger.exception("playground reply %s failed", reply.pk)
        fields = {"status": PlaygroundReply.Status.FAILED, "error": f"{type(exc).__name__}: {exc}"}
    PlaygroundReply.objects.filter(pk=reply.pk, status__in=unfinished).update(**fields)
    reply.refresh_from_db()
    return reply


# --------------------------------------------------------------------------- feedback


def _check_done(reply: PlaygroundReply) -> None:
    if reply.status != PlaygroundReply.Status.DONE:
        raise ConflictError(f"The reply is {reply.status}; only a finished reply can be rated.")


@transaction.atomic
def playground_feedback_set(*, reply: PlaygroundReply, user: Any, rating: int) -> Feedback:
    """Thumbs up (1) or down (-1) on a reply; rating it again changes the rating."""
    if rating not in (1, -1):
        raise ApplicationError("rating: must be 1 (up) or -1 (down)")
    reply = PlaygroundReply.objects.select_for_update().get(pk=reply.pk)
    _check_done(reply)
    if reply.feedback_id is not None:
        Feedback.objects.filter(pk=reply.feedback_id).update(rating=rating)
        return Feedback.objects.get(pk=reply.feedback_id)
    feedback = Feedback.objects.create(
        project_id=reply.project_id,
        user=user,
        prompt=reply.prompt,
        response=reply.text,
        rating=rating,
        policy_version_id=reply.policy_version_id,
    )
    reply.feedback = feedback
    reply.save(update_fields=["feedback", "updated_at"])
    return feedback


@transaction.atomic
def playground_demonstration_create(
    *, reply: PlaygroundReply, user: Any, response: str
) -> Demonstration:
    """ "Write a better answer": the user's answer to the reply's prompt becomes a
    Demonstration (the prompt becomes, or is found as, a Prompt of the project)."""
    from labeling.services.demonstrations import demonstration_create

    _check_done(reply)
    demonstration = demonstration_create(
        project=reply.project, author=user, prompt=reply.prompt, response=response
    )
    demonstration.source = "playground"
    demonstration.save(update_fields=["source", "updated_at"])
    return demonstration
