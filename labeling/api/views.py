"""REST doors of the labeling domain (PRODUCT.md section 3).

Each view loads what the URL names through an `access_*` selector (404 for another
project's objects, 403 for a labeler on an admin route), validates its input with a
serializer, calls one service or selector, and serializes the answer. No logic lives here.

Who may do what: any member reads the project, its members, prompts and demonstrations,
and labels (tasks/next, rankings, skip, demonstrations). Project admins change settings,
add members, import prompts and export comparisons and rankings. Creating a project
through the API takes a staff or superuser account (an ordinary user would otherwise be
able to mint projects, and admin rights in them, at will); the creator becomes its admin.
"""

import tempfile
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.http import FileResponse, Http404, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.exceptions import ApplicationError, RequestTooLarge
from core.openapi import error_response
from core.parsers import StrictJSONParser, StrictMultiPartParser
from labeling import exports, selectors
from labeling.api import serializers as s
from labeling.api.pagination import IdCursorPagination, TaskCursorPagination
from labeling.consensus import METHODS
from labeling.models import Demonstration, Project, Prompt
from labeling.services.demonstrations import demonstration_create
from labeling.services.imports import PromptIn, parse_prompt_file, parse_prompt_list
from labeling.services.leasing import task_lease_next, task_skip
from labeling.services.moderation import prompt_drop, prompt_release
from labeling.services.projects import membership_add, project_create, project_update
from labeling.services.prompts import prompts_import
from labeling.services.rankings import ranking_submit

JSONL = "application/jsonl"
PARQUET = "application/vnd.apache.parquet"
PARQUET_SPOOL_BYTES = 16 * 2**20  # Parquet exports larger than this spool to a temp file


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


# --- Projects and members ------------------------------------------------------------------


class ProjectListApi(APIView):
    @extend_schema(responses=s.ProjectOut(many=True))
    def get(self, request: Request) -> Response:
        projects = selectors.project_list_for_user(user=request.user).order_by("slug")
        return Response(s.ProjectOut(projects, many=True).data)

    @extend_schema(
        request=s.ProjectCreateIn,
        responses={201: s.ProjectOut},
        description="Staff or superusers only; the creator becomes the project's admin.",
    )
    def post(self, request: Request) -> Response:
        if not (request.user.is_staff or request.user.is_superuser):
            raise PermissionDenied("Only staff may create projects through the API.")
        data = _valid(s.ProjectCreateIn, request.data)
        project = project_create(**data, created_by=request.user)
        return Response(s.ProjectOut(project).data, status=status.HTTP_201_CREATED)


class ProjectDetailApi(APIView):
    @extend_schema(responses=s.ProjectOut)
    def get(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug)
        return Response(s.ProjectOut(project).data)

    @extend_schema(request=s.ProjectUpdateIn, responses=s.ProjectOut)
    def patch(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug, admin=True)
        data = _valid(s.ProjectUpdateIn, request.data)
        return Response(s.ProjectOut(project_update(project=project, **data)).data)


class MemberListApi(APIView):
    @extend_schema(responses=s.MemberOut(many=True))
    def get(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug)
        members = project.memberships.select_related("user").order_by("user__username")
        context = {"is_admin": selectors.is_project_admin(user=request.user, project=project)}
        return Response(s.MemberOut(members, many=True, context=context).data)

    @extend_schema(request=s.MemberIn, responses={201: s.MemberOut})
    def post(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug, admin=True)
        membership = membership_add(project=project, **_valid(s.MemberIn, request.data))
        out = s.MemberOut(membership, context={"is_admin": True})
        return Response(out.data, status=status.HTTP_201_CREATED)


# --- Prompts ---------------------------------------------------------------------------------


class PromptListQuery(s.StrictInput):
    """The allow-listed filters of the prompt list (anything else is a 400)."""

    split = serializers.ChoiceField(choices=Prompt.Split.choices, required=False)
    # DRF's metaclass takes declared fields off the class, so this does not shadow
    # Field.source at run time; mypy cannot know that.
    source = serializers.CharField(max_length=200, required=False)  # type: ignore[assignment]
    moderation = serializers.ChoiceField(choices=Prompt.Moderation.choices, required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(min_value=1, required=False)


class PromptListApi(APIView):
    @extend_schema(
        parameters=[PromptListQuery],
        responses=s.PromptPageOut,
    )
    def get(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug)
        query = _valid(PromptListQuery, request.query_params)
        prompts = selectors.prompts_for_project(project=project, split=query.get("split"))
        if "source" in query:
            prompts = prompts.filter(source=query["source"])
        if "moderation" in query:
            prompts = prompts.filter(moderation=query["moderation"])
        paginator = IdCursorPagination()
        page = paginator.paginate_queryset(prompts, request, view=self)
        return paginator.get_paginated_response(s.PromptOut(page, many=True).data)


class PromptImportApi(APIView):
    """All or nothing: a bad record answers 400 {"detail", "line"} and nothing is saved.
    A body or file over settings.RLHF_IMPORT_MAX_BYTES answers 413 (the parsers check the
    body before reading it)."""

    parser_classes = [StrictJSONParser, StrictMultiPartParser]
    throttle_scope = "import"

    @extend_schema(
        request={
            "multipart/form-data": s.PromptImportIn,
            "application/json": {"type": "array", "items": {"type": "object"}},
        },
        responses={201: s.PromptImportOut},
        description='A JSONL or CSV file as multipart `file`, or a JSON list of {"prompt"} '
        "records. Admins only.",
    )
    def post(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug, admin=True)
        items, source = _prompt_items(request)
        result = prompts_import(project=project, items=items, source=source)
        return Response(s.PromptImportOut(result).data, status=status.HTTP_201_CREATED)


class PromptModerationApi(APIView):
    """An admin's decision on a prompt the moderation filter flagged: `release` (used in
    rounds again) or `drop` (kept, never used). Admins only."""

    action = ""

    @extend_schema(
        request=None,
        responses={
            200: s.PromptOut,
            409: error_response(
                "Nothing to release (the prompt is not flagged or dropped), "
                "or the prompt is dropped already."
            ),
        },
    )
    def post(self, request: Request, slug: str, prompt_id: int) -> Response:
        project = selectors.access_project(user=request.user, slug=slug, admin=True)
        prompt = selectors.prompt_of_project(project=project, prompt_id=prompt_id)
        if prompt is None:
            raise Http404("No such prompt.")
        decide = prompt_release if self.action == "release" else prompt_drop
        return Response(s.PromptOut(decide(prompt=prompt)).data)


@extend_schema_view(post=extend_schema(exclude=True))
class PromptImportSlashApi(PromptImportApi):
    """The same import with a trailing slash (documented once, without it)."""


def _prompt_items(request: Request) -> tuple[list[PromptIn], str]:
    """Parse the upload or the JSON list (ImportFileError names the bad line)."""
    upload = request.FILES.get("file") if hasattr(request.data, "getlist") else None
    if upload is not None:
        if upload.size is not None and upload.size > settings.RLHF_IMPORT_MAX_BYTES:
            raise RequestTooLarge.for_size(upload.size, what="file")
        name = upload.name or "upload"
        return parse_prompt_file(upload.read(), name), name
    if isinstance(request.data, list):
        return parse_prompt_list(request.data), "api"
    raise ApplicationError('Send a JSONL or CSV file as multipart "file", or a JSON list.')


# --- Labeling ------------------------------------------------------------------------------


class NextTaskApi(APIView):
    @extend_schema(
        responses={
            200: s.NextTaskOut,
            204: OpenApiResponse(description="No task is waiting for this labeler."),
        },
        parameters=[
            OpenApiParameter(
                "exclude", int, description="The task on screen: lease the one after it (prefetch)."
            )
        ],
        description="Leases the labeler's next task until `expires_at` (the same task again "
        "while the lease runs).",
    )
    def get(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug)
        exclude = request.query_params.get("exclude")
        assignment = task_lease_next(
            project=project,
            labeler=request.user,
            exclude_task_id=int(exclude) if exclude and exclude.isdigit() else None,
        )
        if assignment is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(_next_task_out(project, assignment, request.user))


def _next_task_out(project: Project, assignment: Any, user: Any) -> dict[str, Any]:
    task = assignment.task
    responses = task.responses.order_by("position").values("id", "text", "duplicate_of")
    return s.NextTaskOut(
        {
            "id": task.pk,
            "prompt": task.prompt.text,
            "chat": task.prompt.chat,
            "responses": list(responses),
            "expires_at": assignment.expires_at,
            "k": len(responses),
            "round": task.round.number if task.round_id else None,
            "flag_vocabulary": project.flag_vocabulary,
            "guidelines": project.guidelines,
            "counts": selectors.labeler_counts(project=project, user=user),
            "round_progress": _round_progress(task),
        }
    ).data


def _round_progress(task: Any) -> dict[str, int] | None:
    """The round's own counters (no query beyond loading the round)."""
    if not task.round_id:
        return None
    round_ = task.round
    return {"number": round_.number, "done": round_.progress_done, "wanted": round_.progress_total}


class RankingCreateApi(APIView):
    @extend_schema(
        request=s.RankingIn,
        responses={
            201: s.RankingOut,
            409: error_response("Already ranked, skipped, or the lease was lost."),
        },
    )
    def post(self, request: Request, task_id: int) -> Response:
        task = selectors.access_task(user=request.user, task_id=task_id)
        data = _valid(s.RankingIn, request.data)
        ranking = ranking_submit(task=task, labeler=request.user, **data)
        return Response(s.RankingOut(ranking).data, status=status.HTTP_201_CREATED)


class TaskSkipApi(APIView):
    @extend_schema(
        request=None,
        responses={204: None, 409: error_response("The user has already ranked this task.")},
    )
    def post(self, request: Request, task_id: int) -> Response:
        task = selectors.access_task(user=request.user, task_id=task_id)
        task_skip(task=task, labeler=request.user)
        return Response(status=status.HTTP_204_NO_CONTENT)


class DemonstrationListApi(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("cursor", str),
            OpenApiParameter("page_size", int),
        ],
        responses=s.DemonstrationPageOut,
        description="Admins see every demonstration of the project, labelers their own.",
    )
    def get(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug)
        demonstrations = Demonstration.objects.filter(project=project)
        if not selectors.is_project_admin(user=request.user, project=project):
            demonstrations = demonstrations.filter(author_id=request.user.pk)
        demonstrations = demonstrations.select_related("prompt", "author")
        paginator = IdCursorPagination()
        page = paginator.paginate_queryset(demonstrations, request, view=self)
        return paginator.get_paginated_response(s.DemonstrationOut(page, many=True).data)

    @extend_schema(request=s.DemonstrationIn, responses={201: s.DemonstrationOut})
    def post(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug)
        data = _valid(s.DemonstrationIn, request.data)
        demonstration = demonstration_create(project=project, author=request.user, **data)
        return Response(s.DemonstrationOut(demonstration).data, status=status.HTTP_201_CREATED)


# --- Exports -------------------------------------------------------------------------------


class ExportQuery(s.StrictInput):
    format = serializers.ChoiceField(
        choices=["json", "jsonl", "parquet"],
        required=False,
        default="json",
        help_text="jsonl: streamed JSON Lines; parquet: a Parquet file (comparisons only); "
        "json: cursor-paginated JSON.",
    )
    round = serializers.IntegerField(min_value=1, required=False, help_text="Only this round.")
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(min_value=1, required=False)


class RankingExportQuery(ExportQuery):
    format = serializers.ChoiceField(choices=["json", "jsonl"], required=False, default="json")
    consensus = serializers.ChoiceField(
        choices=list(METHODS),
        required=False,
        help_text="Add one merged row per task, after its raw rows, by this method.",
    )


class ComparisonExportApi(APIView):
    @extend_schema(
        parameters=[ExportQuery],
        responses={
            (200, "application/json"): s.ComparisonPageOut,
            (200, JSONL): OpenApiResponse(OpenApiTypes.STR, description="One row a line."),
            (200, PARQUET): OpenApiResponse(OpenApiTypes.BINARY),
        },
        description="Pairwise comparisons in TRL's preference format plus provenance. Admins only.",
    )
    def get(self, request: Request, slug: str) -> Response | StreamingHttpResponse | FileResponse:
        project = selectors.access_project(user=request.user, slug=slug, admin=True)
        query = _valid(ExportQuery, request.query_params)
        comparisons = selectors.comparisons_for_project(
            project=project, round_number=query.get("round")
        )
        name = f"{project.slug}-comparisons"
        if query["format"] == "jsonl":
            return _jsonl_response(exports.comparison_rows(comparisons), f"{name}.jsonl")
        if query["format"] == "parquet":
            return _parquet_response(exports.comparison_rows(comparisons), f"{name}.parquet")
        conversational = exports.has_chat_prompts(comparisons)  # one form across all pages
        paginator = IdCursorPagination()
        page = paginator.paginate_queryset(comparisons.values("id"), request, view=self) or []
        ids = [row["id"] for row in page]
        rows = exports.comparison_rows(
            comparisons.filter(id__in=ids), conversational=conversational
        )
        return paginator.get_paginated_response(list(rows))


class RankingExportApi(APIView):
    @extend_schema(
        parameters=[RankingExportQuery],
        responses={
            (200, "application/json"): s.RankingPageOut,
            (200, JSONL): OpenApiResponse(OpenApiTypes.STR, description="One row a line."),
        },
        description="K-wise rankings, one raw row per labeler, grouped by task; with "
        "`consensus`, a merged row per task after its raw rows. Admins only.",
    )
    def get(self, request: Request, slug: str) -> Response | StreamingHttpResponse:
        project = selectors.access_project(user=request.user, slug=slug, admin=True)
        query = _valid(RankingExportQuery, request.query_params)
        rankings = selectors.rankings_for_project(project=project, round_number=query.get("round"))
        consensus = query.get("consensus")
        if query["format"] == "jsonl":
            rows = exports.ranking_rows(rankings, consensus)
            return _jsonl_response(rows, f"{project.slug}-rankings.jsonl")
        conversational = exports.has_chat_prompts(rankings, "task__prompt")
        paginator = TaskCursorPagination()
        tasks = rankings.order_by().values("task_id").distinct()
        page = paginator.paginate_queryset(tasks, request, view=self) or []
        task_ids = [row["task_id"] for row in page]
        rows = exports.ranking_rows(
            rankings.filter(task_id__in=task_ids), consensus, conversational=conversational
        )
        return paginator.get_paginated_response(list(rows))


def _jsonl_response(rows: Iterator[dict[str, Any]], filename: str) -> StreamingHttpResponse:
    response = StreamingHttpResponse(exports.jsonl_stream(rows), content_type=JSONL)
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _parquet_response(rows: Iterator[dict[str, Any]], filename: str) -> FileResponse:
    # Parquet writes its footer last, so the file is built first: in memory while small,
    # then in a temporary file (memory stays flat), and streamed from there.
    spool = tempfile.SpooledTemporaryFile(max_size=PARQUET_SPOOL_BYTES)  # noqa: SIM115
    exports.write_parquet(rows, spool)
    spool.seek(0)
    return FileResponse(spool, as_attachment=True, filename=filename, content_type=PARQUET)
