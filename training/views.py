"""HTML pages of the training side: the admins' round dashboard and the playground.

Both pages are shells: their scripts talk to the REST API with the session cookie and the
CSRF token, and get their settings (URLs, token) through `json_script`, never inline
script. `access_project` scopes them (404 for strangers; 403 for a labeler on the
dashboard).
"""

from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from labeling.models import Project
from labeling.selectors import access_project
from training.models import ModelVersion
from training.services.rounds import DEFAULT_PROMPTS_PER_ROUND

POLL_MS = 2000


def _export_links(project: Project) -> list[dict[str, str]]:
    """The export endpoints of PRODUCT.md section 3 (labeling/api serves them)."""
    comparisons = f"/api/v1/projects/{project.slug}/comparisons/"
    rankings = f"/api/v1/projects/{project.slug}/rankings/"
    return [
        {"label": "Comparisons (JSONL)", "href": f"{comparisons}?format=jsonl"},
        {"label": "Comparisons (Parquet)", "href": f"{comparisons}?format=parquet"},
        {"label": "Rankings, K-wise (JSONL)", "href": f"{rankings}?format=jsonl"},
    ]


def _dashboard_config(request: HttpRequest, project: Project) -> dict[str, Any]:
    slug = {"slug": project.slug}
    return {
        "slug": project.slug,
        "csrfToken": get_token(request),
        "pollMs": POLL_MS,
        "defaultPrompts": project.training_config.get(
            "prompts_per_round", DEFAULT_PROMPTS_PER_ROUND
        ),
        "urls": {
            "rounds": reverse("api-round-list", kwargs=slug),
            "models": reverse("api-model-list", kwargs=slug),
            "stats": reverse("api-labeler-stats", kwargs=slug),
            # "{id}" is replaced by the script
            "round": reverse("api-round-detail", kwargs={"round_id": 0}).replace("/0/", "/{id}/"),
            "advance": reverse("api-round-advance", kwargs={"round_id": 0}).replace(
                "/0/", "/{id}/"
            ),
            "cancel": reverse("api-round-cancel", kwargs={"round_id": 0}).replace("/0/", "/{id}/"),
            "metrics": reverse("api-run-metrics", kwargs={"run_id": 0}).replace("/0/", "/{id}/"),
        },
    }


@login_required
@require_GET
def rounds_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    """Stage and progress of the running round, curves, models, labelers, exports."""
    project = access_project(user=request.user, slug=slug, admin=True)
    context = {
        "project": project,
        "section": "rounds",
        "dashboard_config": _dashboard_config(request, project),
        "exports": _export_links(project),
    }
    return render(request, "training/rounds.html", context)


def _current_policy_label(project: Project) -> str:
    """Read only: before the first round the base model has no version row yet."""
    current = ModelVersion.objects.filter(
        project=project, role=ModelVersion.Role.POLICY, is_current=True
    ).first()
    return current.label if current else f"base model ({project.base_model})"


@login_required
@require_GET
def playground(request: HttpRequest, slug: str) -> HttpResponse:
    """Chat with the current policy; rate its replies or write better ones."""
    project = access_project(user=request.user, slug=slug)
    config = {
        "slug": project.slug,
        "csrfToken": get_token(request),
        "requestUrl": reverse("api-playground-request", kwargs={"slug": project.slug}),
        "replyUrl": reverse("api-playground-reply", kwargs={"reply_id": 0}).replace(
            "/0/", "/{id}/"
        ),
        "pollMs": 1000,
    }
    context = {
        "project": project,
        "section": "playground",
        "policy_label": _current_policy_label(project),
        "playground_config": config,
    }
    return render(request, "training/playground.html", context)
