"""Pages for second looks: a labeler's recent work (revise a ranking, return to a skipped
task) and the admins' review screen (rankings side by side, accept / reject, gold tasks).

Server-rendered forms: every model text reaches the page through Django's autoescaping,
never as markup. Reads go through labeling.review_reads, writes through
labeling.services.review; `access_project` scopes every page (404 for strangers; the review
screen answers 403 to labelers, like the other admin pages).
"""

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from core.exceptions import ApplicationError
from frontend.views.labeling import _chat
from labeling import review_reads
from labeling.selectors import access_project, access_ranking, access_task
from labeling.services.review import (
    ranking_review,
    ranking_revise,
    task_mark_gold,
    task_return_to_skipped,
)

AGREEMENT_CHOICES = [("", "Any agreement"), ("1", "Some disagreement"), ("0.5", "Agreement < 50%")]


def _order_from_places(post: Any, response_ids: list[int]) -> list[list[int]]:
    """Tie groups from the form's `place-<response id>` numbers (1 = best; equal numbers tie).

    Raises ApplicationError naming the response when a place is missing or not a number."""
    places: dict[int, list[int]] = {}
    for position, response_id in enumerate(response_ids, start=1):
        raw = str(post.get(f"place-{response_id}", "")).strip()
        if not raw.isdigit():
            raise ApplicationError(f"Response {position}: give it a place (1 = best).")
        places.setdefault(int(raw), []).append(response_id)
    return [places[place] for place in sorted(places)]


# --------------------------------------------------------------------------- labelers


@login_required
@require_http_methods(["GET", "POST"])
def history(request: HttpRequest, slug: str) -> HttpResponse:
    """The labeler's recent work. POST `unskip=<task id>` takes a skipped task back; the
    ranking screen then shows it first."""
    project = access_project(user=request.user, slug=slug)
    if request.method == "POST":
        raw = str(request.POST.get("unskip", ""))
        task = access_task(user=request.user, task_id=int(raw)) if raw.isdigit() else None
        if task is not None and task.project_id == project.pk:
            try:
                task_return_to_skipped(task=task, labeler=request.user)
            except ApplicationError as failure:
                messages.error(request, failure.message)
            else:
                return redirect("project-label", slug=project.slug)
        return redirect("project-history", slug=project.slug)
    rows = review_reads.labeler_history(project=project, user=request.user)
    context = {"project": project, "section": "history", "rows": rows}
    return render(request, "review/history.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def revise(request: HttpRequest, slug: str, ranking_id: int) -> HttpResponse:
    """Re-rank a submitted task: one place per response (ties share a place)."""
    project = access_project(user=request.user, slug=slug)
    ranking = access_ranking(user=request.user, ranking_id=ranking_id)
    if ranking.task.project_id != project.pk or ranking.labeler_id != request.user.pk:
        return redirect("project-history", slug=project.slug)
    responses = list(ranking.task.responses.order_by("position"))
    places = review_reads.places(ranking.tie_groups)
    error = None
    if request.method == "POST":
        flags = {
            str(r.pk): request.POST.getlist(f"flags-{r.pk}")
            for r in responses
            if request.POST.getlist(f"flags-{r.pk}")
        }
        try:
            ranking_revise(
                ranking=ranking,
                labeler=request.user,
                order=_order_from_places(request.POST, [r.pk for r in responses]),
                flags=flags,
                time_spent_ms=ranking.time_spent_ms,
            )
        except ApplicationError as failure:
            error = failure.message
            places = {r.pk: request.POST.get(f"place-{r.pk}", "") for r in responses}
        else:
            messages.success(request, "Ranking revised. The earlier version is kept.")
            return redirect("project-history", slug=project.slug)
    context = {
        "project": project,
        "section": "history",
        "ranking": ranking,
        "chat_messages": _chat(ranking.task.prompt),
        "cards": [
            {
                "response": r,
                "number": i,
                "place": str(places.get(r.pk, "")).rstrip("="),
                "flags": (ranking.flags or {}).get(str(r.pk), []),
            }
            for i, r in enumerate(responses, start=1)
        ],
        "place_choices": range(1, len(responses) + 1),
        "flag_vocabulary": list(project.flag_vocabulary or []),
        "error": error,
    }
    return render(request, "review/revise.html", context)


# --------------------------------------------------------------------------- admins


class ReviewFilterForm(forms.Form):
    round = forms.IntegerField(min_value=1, required=False)
    labeler = forms.TypedChoiceField(coerce=int, required=False, empty_value=None)
    flagged = forms.BooleanField(required=False, label="Flagged only")
    agreement = forms.TypedChoiceField(
        choices=AGREEMENT_CHOICES, coerce=float, required=False, empty_value=None
    )
    review = forms.ChoiceField(
        choices=[("", "Any review"), ("pending", "Pending"), ("rejected", "Rejected")],
        required=False,
    )

    def __init__(self, *args: Any, labelers: list[tuple[int, str]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["labeler"].choices = [("", "Any labeler"), *labelers]  # type: ignore[attr-defined]


@login_required
@require_GET
def review_list(request: HttpRequest, slug: str) -> HttpResponse:
    project = access_project(user=request.user, slug=slug, admin=True)
    form = ReviewFilterForm(
        request.GET or None, labelers=review_reads.review_labelers(project=project)
    )
    data = form.cleaned_data if form.is_valid() else {}
    filters = review_reads.ReviewFilters(
        round_number=data.get("round"),
        labeler_id=data.get("labeler"),
        flagged=bool(data.get("flagged")),
        agreement_below=data.get("agreement"),
        review=data.get("review") or None,
    )
    rows = review_reads.review_tasks(project=project, filters=filters)
    context = {
        "project": project,
        "section": "review",
        "form": form,
        "rows": rows,
        "query": request.GET.urlencode(),
    }
    return render(request, "review/review_list.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def review_task(request: HttpRequest, slug: str, task_id: int) -> HttpResponse:
    """One task: its K responses, every labeler's ranking side by side, agreement. POST
    `action`: `accept:<ranking id>`, `reject:<ranking id>`, `gold` (the places as in a
    ranking) or `ungold`."""
    project = access_project(user=request.user, slug=slug, admin=True)
    detail = review_reads.review_task_detail(project=project, task_id=task_id)
    page = reverse("project-review-task", kwargs={"slug": project.slug, "task_id": task_id})
    if request.method == "POST":
        try:
            notice = _review_action(request, detail)
        except ApplicationError as failure:
            messages.error(request, failure.message)
        else:
            messages.success(request, notice)
        query = request.POST.get("back", "")
        return redirect(f"{page}?{query}" if query else page)
    rows = [
        {
            "response": response,
            "number": number,
            "places": [column.places.get(response.pk, "") for column in detail.columns],
            "flags": [column.flags.get(response.pk, []) for column in detail.columns],
            "gold": detail.gold_places.get(response.pk, ""),
        }
        for number, response in enumerate(detail.responses, start=1)
    ]
    context = {
        "project": project,
        "section": "review",
        "detail": detail,
        "rows": rows,
        "chat_messages": _chat(detail.task.prompt),
        "place_choices": range(1, len(detail.responses) + 1),
        "back": request.GET.urlencode(),
        "list_url": reverse("project-review", kwargs={"slug": project.slug}),
    }
    return render(request, "review/review_task.html", context)


def _review_action(request: HttpRequest, detail: review_reads.ReviewDetail) -> str:
    action, _, raw = request.POST.get("action", "").partition(":")
    if action in ("accept", "reject"):
        column = next((c for c in detail.columns if str(c.ranking.pk) == raw), None)
        if column is None:
            raise ApplicationError("No such ranking of this task.")
        decision = "accepted" if action == "accept" else "rejected"
        ranking_review(ranking=column.ranking, reviewer=request.user, decision=decision)
        who = column.ranking.labeler.get_username() if column.ranking.labeler else "imported"
        return f"Ranking by {who} {decision}."
    if action == "gold":
        order = _order_from_places(request.POST, [r.pk for r in detail.responses])
        task_mark_gold(task=detail.task, order=order)
        return "Marked as a gold task with this order."
    if action == "ungold":
        task_mark_gold(task=detail.task, order=None)
        return "No longer a gold task."
    raise ApplicationError("Unknown action.")
