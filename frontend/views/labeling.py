"""The labelers' pages: the project list, the ranking screen and demonstrations. Every
project page is scoped by `access_project` (404 for non-members).

The ranking page is a shell: its script talks to the REST API (labeling/api) with the
session cookie and the CSRF token, and receives its settings through `json_script`.
"""

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from core.exceptions import ApplicationError
from frontend.guidelines import guidelines_html
from labeling.models import Project, Prompt
from labeling.selectors import (
    access_project,
    labeler_counts,
    project_role,
    project_rows_for_user,
    prompt_of_project,
    prompt_to_demonstrate,
)
from labeling.services.demonstrations import MAX_RESPONSE_CHARS, demonstration_create


@require_GET
def home(request: HttpRequest) -> HttpResponse:
    return redirect("project-list")


@login_required
@require_GET
def project_list(request: HttpRequest) -> HttpResponse:
    rows = project_rows_for_user(user=request.user)
    return render(request, "labeling/project_list.html", {"rows": rows})


def _project_context(request: HttpRequest, project: Project, section: str) -> dict[str, Any]:
    return {
        "project": project,
        "role": project_role(user=request.user, project=project),
        "section": section,
        "guidelines_html": guidelines_html(project.guidelines),
    }


@login_required
@require_GET
def label(request: HttpRequest, slug: str) -> HttpResponse:
    """The ranking screen. Its script gets the project's settings via json_script."""
    project = access_project(user=request.user, slug=slug)
    counts = labeler_counts(project=project, user=request.user)
    rank_config = {
        "slug": project.slug,
        "k": project.k,
        "flags": list(project.flag_vocabulary or []),
        "userId": request.user.pk,
        "apiRoot": "/api/v1/",
        "csrfToken": get_token(request),
        "counts": {
            "today": counts["done_today"],
            "total": counts["done_total"],
            "remaining": counts["remaining"],
        },
    }
    context = _project_context(request, project, "label")
    context.update(counts=counts, rank_config=rank_config)
    return render(request, "labeling/rank.html", context)


class DemonstrationForm(forms.Form):
    prompt_id = forms.IntegerField(widget=forms.HiddenInput, min_value=1)
    response = forms.CharField(
        label="Your ideal answer",
        max_length=MAX_RESPONSE_CHARS,
        widget=forms.Textarea(attrs={"rows": 12, "spellcheck": "true"}),
    )


@login_required
@require_http_methods(["GET", "POST"])
def demonstrate(request: HttpRequest, slug: str) -> HttpResponse:
    """Write the ideal answer to a prompt that has none yet (SFT data)."""
    project = access_project(user=request.user, slug=slug)
    page = reverse("project-demonstrate", kwargs={"slug": project.slug})
    form = DemonstrationForm(request.POST or None)
    prompt: Prompt | None
    if request.method == "POST" and form.is_valid():
        try:
            demonstration = demonstration_create(
                project=project,
                author=request.user,
                prompt_id=form.cleaned_data["prompt_id"],
                response=form.cleaned_data["response"],
            )
        except ApplicationError as error:
            form.add_error(None, error.message)
        else:
            messages.success(request, "Demonstration saved. Here is the next prompt.")
            return redirect(f"{page}?after={demonstration.prompt_id}")
    if request.method == "POST":
        prompt = _posted_prompt(project, form)
    else:
        prompt = prompt_to_demonstrate(project=project, after=_int_param(request, "after"))
        if prompt is not None:
            form = DemonstrationForm(initial={"prompt_id": prompt.pk})
    context = _project_context(request, project, "demonstrate")
    context.update(form=form, prompt=prompt, page=page, chat_messages=_chat(prompt))
    return render(request, "labeling/demonstrate.html", context)


def _posted_prompt(project: Project, form: DemonstrationForm) -> Prompt | None:
    """The prompt a failed POST was about, shown again with the error (this project's only)."""
    raw = str(form.data.get("prompt_id", ""))
    return prompt_of_project(project=project, prompt_id=int(raw)) if raw.isdigit() else None


def _int_param(request: HttpRequest, name: str) -> int | None:
    value = request.GET.get(name, "")
    return int(value) if value.isdigit() else None


def _chat(prompt: Prompt | None) -> list[dict[str, str]]:
    """The prompt as a list of messages for the template (a plain prompt is one user turn)."""
    if prompt is None:
        return []
    if isinstance(prompt.chat, list) and prompt.chat:
        return [
            {"role": str(m.get("role", "")), "content": str(m.get("content", ""))}
            for m in prompt.chat
            if isinstance(m, dict)
        ]
    return [{"role": "user", "content": prompt.text}]
