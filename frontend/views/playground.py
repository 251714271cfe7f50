"""The playground: chat with the current policy, rate its replies or write better ones.

A shell like the dashboard: its script talks to the REST API (training/api/playground.py)
and gets its settings through `json_script`. Open to every member of the project (404 for
strangers).
"""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from labeling.models import Project
from labeling.selectors import access_project
from training.selectors import current_policy_for_project

POLL_MS = 1000


def _current_policy_label(project: Project) -> str:
    """Before the first round the base model has no version row yet."""
    current = current_policy_for_project(project=project)
    return current.label if current else f"base model ({project.base_model})"


@login_required
@require_GET
def playground(request: HttpRequest, slug: str) -> HttpResponse:
    project = access_project(user=request.user, slug=slug)
    config = {
        "slug": project.slug,
        "csrfToken": get_token(request),
        "requestUrl": reverse("api-playground-request", kwargs={"slug": project.slug}),
        "replyUrl": reverse("api-playground-reply", kwargs={"reply_id": 0}).replace(
            "/0/", "/{id}/"
        ),
        "pollMs": POLL_MS,
        "maxNewTokens": project.max_new_tokens,
    }
    context = {
        "project": project,
        "section": "playground",
        "policy_label": _current_policy_label(project),
        "playground_config": config,
    }
    return render(request, "training/playground.html", context)
