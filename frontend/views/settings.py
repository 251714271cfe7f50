"""The project settings page, for project admins (403 to labelers, 404 to strangers).

One page, one form per section; a POST names its `section` and goes through the service the
REST API uses: `project_update` (its validators: the model's, `training_config_check`,
`check_flag_vocabulary`, `check_moderation_rules`), the membership services (with their
account rules: a project admin never sets an existing user's password) and the moderation
decisions `prompt_release` / `prompt_drop`. A refused change saves nothing and shows the
service's message on the field it names.
"""

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods

from core.exceptions import ApplicationError
from frontend.guidelines import guidelines_html
from frontend.views import settings_forms as f
from labeling.models import Membership, Project, Prompt
from labeling.selectors import access_project, project_role, prompt_of_project, prompts_for_project
from labeling.services.moderation import prompt_drop, prompt_release
from labeling.services.projects import (
    membership_add,
    membership_change_role,
    membership_remove,
    project_update,
)
from training.services.config_schema import training_config_check

MAX_FLAGGED_SHOWN = 200


def _forms(project: Project) -> dict[str, forms.Form]:
    """Every section's form, filled from the project."""
    return {
        "general": f.GeneralForm(
            initial={
                "guidelines": project.guidelines,
                "k": project.k,
                "overlap": project.overlap,
                "flag_vocabulary": "\n".join(project.flag_vocabulary or []),
            }
        ),
        "generation": f.GenerationForm(
            initial={
                "max_new_tokens": project.max_new_tokens,
                "temperature": project.temperature,
                "top_p": project.top_p,
            }
        ),
        "training": f.TrainingForm(config=project.training_config or {}),
        "gate": f.GateForm(
            initial={
                "gate_min_rm_accuracy": project.gate_min_rm_accuracy,
                "gate_max_rm_drop": project.gate_max_rm_drop,
                "gate_kl_factor": project.gate_kl_factor,
            }
        ),
        "moderation": f.ModerationForm(
            initial=f.ModerationForm.initial_from(project.moderation_rules or {})
        ),
        "member_add": f.MemberAddForm(),
    }


def _bound(section: str, project: Project, data: Any) -> forms.Form:
    if section == "training":
        return f.TrainingForm(data, config=project.training_config or {})
    classes: dict[str, type[forms.Form]] = {
        "general": f.GeneralForm,
        "generation": f.GenerationForm,
        "gate": f.GateForm,
        "moderation": f.ModerationForm,
        "member_add": f.MemberAddForm,
        "member_role": f.MemberRoleForm,
        "member_remove": f.MemberRemoveForm,
    }
    return classes[section](data)


def _add_service_error(form: forms.Form, error: ApplicationError) -> None:
    """Put the service's message on the field it names ("k: ..." or a training_config
    path), else at the top of the form."""
    path = str((error.extra or {}).get("field", "")) or error.message.split(":", 1)[0]
    if isinstance(form, f.TrainingForm):
        name = form.field_for_path(path)
    else:  # "moderation_rules.regexes[1]" -> "regexes"
        name = path.removeprefix("moderation_rules.").split("[", 1)[0]
    form.add_error(name if name in form.fields else None, error.message)


def _check_training_fields(form: f.TrainingForm) -> None:
    """Every set key through the schema's door on its own, so every bad field shows its
    error at once (project_update then checks the whole config, cross-field rules too)."""
    for name, spec in form.schema.items():
        value = form.cleaned_data.get(name)
        if value is None or value == "":
            continue
        single = {spec.section: {spec.name: value}} if spec.section else {spec.name: value}
        try:
            training_config_check(single)
        except ApplicationError as error:  # "training_config.rm.lr: must be <= 1"
            form.add_error(name, error.message.removeprefix(f"{spec.path}: "))


def _save(section: str, project: Project, form: forms.Form) -> str:
    """Run the section's service; the success message."""
    data = form.cleaned_data
    if section == "training":
        assert isinstance(form, f.TrainingForm)
        project_update(project=project, training_config=form.values())
    elif section in {"general", "generation", "gate", "moderation"}:
        assert isinstance(form, f.SectionForm)
        project_update(project=project, **form.values())
    elif section == "member_add":
        membership_add(
            project=project,
            username=data["username"],
            role=data["role"],
            password=data["password"] or None,
        )
        return f"{data['username']} is a {data['role']} of the project."
    elif section == "member_role":
        membership_change_role(project=project, username=data["username"], role=data["role"])
        return f"{data['username']} is now a {data['role']}."
    elif section == "member_remove":
        membership_remove(project=project, username=data["username"])
        return f"{data['username']} is no longer a member."
    return "Settings saved."


_PROMPT_DECISIONS: dict[str, Callable[..., Prompt]] = {
    "release": prompt_release,
    "drop": prompt_drop,
}


def _decide_prompt(request: HttpRequest, project: Project) -> None:
    decide = _PROMPT_DECISIONS.get(str(request.POST.get("decision", "")))
    raw = str(request.POST.get("prompt_id", ""))
    prompt = prompt_of_project(project=project, prompt_id=int(raw)) if raw.isdigit() else None
    if decide is None or prompt is None:
        messages.error(request, "No such prompt or decision.")
        return
    try:
        decide(prompt=prompt)
    except ApplicationError as error:
        messages.error(request, error.message)
    else:
        verb = "released" if decide is prompt_release else "dropped"
        messages.success(request, f"Prompt {prompt.pk} {verb}.")


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request: HttpRequest, slug: str) -> HttpResponse:
    project = access_project(user=request.user, slug=slug, admin=True)
    page = reverse("project-settings", kwargs={"slug": project.slug})
    page_forms = _forms(project)
    preview = None
    section = str(request.POST.get("section", "")) if request.method == "POST" else ""
    if section == "prompt":
        _decide_prompt(request, project)
        return redirect(f"{page}#moderation")
    if section == "general" and "preview" in request.POST:
        preview = guidelines_html(str(request.POST.get("guidelines", "")))
        page_forms["general"] = f.GeneralForm(request.POST)
    elif section:
        try:
            form = _bound(section, project, request.POST)
        except KeyError:
            messages.error(request, "Unknown settings section.")
            return redirect(page)
        if form.is_valid() and isinstance(form, f.TrainingForm):
            _check_training_fields(form)
        if form.is_valid():
            try:
                message = _save(section, project, form)
            except ApplicationError as error:
                project.refresh_from_db()
                _add_service_error(form, error)
            else:
                messages.success(request, message)
                return redirect(f"{page}#{section.split('_')[0]}")
        if section in page_forms:
            page_forms[section] = form
        else:  # a member row's role or remove button: its errors as a message
            for errors in form.errors.values():
                messages.error(request, " ".join(str(error) for error in errors))
    flagged = prompts_for_project(project=project).filter(moderation=Prompt.Moderation.FLAGGED)
    context = {
        "project": project,
        "role": project_role(user=request.user, project=project),
        "section": "settings",
        "forms": page_forms,
        "posted": section,
        "preview": preview,
        "members": project.memberships.select_related("user").order_by("user__username"),
        "role_choices": Membership.Role.choices,
        "flagged": flagged[:MAX_FLAGGED_SHOWN],
        "flagged_count": flagged.count(),
    }
    return render(request, "labeling/settings.html", context)
