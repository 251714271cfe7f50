"""The admins' round dashboard: stage and progress of the running round, curves, models,
labelers, exports.

A shell: its script polls the REST API with the session cookie and the CSRF token, and
gets its settings (URLs, token) through `json_script`. `access_project` scopes it (404
for strangers, 403 for a labeler).
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
from training.services.rounds import DEFAULT_PROMPTS_PER_ROUND, DEFAULT_RECIPE, RECIPES

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


def _by_id(name: str, kwarg: str) -> str:
    """The URL of route `name` with "{id}" in place of its id (the script fills it in)."""
    return reverse(name, kwargs={kwarg: 0}).replace("/0/", "/{id}/")


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
            "round": _by_id("api-round-detail", "round_id"),
            "advance": _by_id("api-round-advance", "round_id"),
            "cancel": _by_id("api-round-cancel", "round_id"),
            "approve": _by_id("api-round-approve", "round_id"),
            "reject": _by_id("api-round-reject", "round_id"),
            "metrics": _by_id("api-run-metrics", "run_id"),
        },
    }


@login_required
@require_GET
def rounds_dashboard(request: HttpRequest, slug: str) -> HttpResponse:
    project = access_project(user=request.user, slug=slug, admin=True)
    context = {
        "project": project,
        "section": "rounds",
        "dashboard_config": _dashboard_config(request, project),
        "exports": _export_links(project),
        "recipes": RECIPES,  # the start form's choice; empty: the project's default
        "default_recipe": project.training_config.get("recipe", DEFAULT_RECIPE),
    }
    return render(request, "training/rounds.html", context)
