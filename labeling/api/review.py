"""REST doors of second looks (labeling/services/review.py): a labeler's recent work,
revising a ranking, returning to a skipped task; the admins' review of rankings and gold
tasks. Reads go through labeling.review_reads, writes through one service each."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.openapi import error_response
from labeling import review_reads, selectors
from labeling.api import serializers as s
from labeling.models import Ranking
from labeling.services.review import (
    DECISIONS,
    ranking_review,
    ranking_revise,
    task_mark_gold,
    task_return_to_skipped,
)


def _valid(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _admin_ranking(request: Request, ranking_id: int) -> Ranking:
    ranking = selectors.access_ranking(user=request.user, ranking_id=ranking_id)
    if not selectors.is_project_admin(user=request.user, project=ranking.task.project):
        raise PermissionDenied("Only project admins may review rankings.")
    return ranking


class ReviewStateOut(serializers.Serializer):
    review = serializers.CharField()
    reviewed_by = serializers.CharField(
        source="reviewed_by.username", default=None, allow_null=True
    )
    reviewed_at = serializers.DateTimeField(allow_null=True)


class HistoryRowOut(serializers.Serializer):
    task_id = serializers.IntegerField(source="task.pk")
    prompt = serializers.CharField(source="task.prompt.text")
    round = serializers.IntegerField(source="task.round.number", default=None, allow_null=True)
    status = serializers.CharField()
    at = serializers.DateTimeField()
    ranking = s.RankingOut(allow_null=True)
    review = serializers.CharField(source="ranking.review", default=None, allow_null=True)
    revisions = serializers.IntegerField()
    can_revise = serializers.SerializerMethodField()
    revise_block = serializers.CharField(allow_null=True)
    can_return = serializers.BooleanField()

    def get_can_revise(self, row: review_reads.HistoryRow) -> bool:
        return row.ranking is not None and row.revise_block is None


class HistoryApi(APIView):
    @extend_schema(
        responses=HistoryRowOut(many=True),
        description="The user's most recent submitted and skipped tasks of the project, "
        "newest first, with whether each ranking can still be revised.",
    )
    def get(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug)
        rows = review_reads.labeler_history(project=project, user=request.user)
        return Response(HistoryRowOut(rows, many=True).data)


class RankingReviseApi(APIView):
    @extend_schema(
        request=s.RankingIn,
        responses={
            201: s.RankingOut,
            409: error_response("Not yours, revised since, reviewed, or its round left labeling."),
        },
        description="A new version of your ranking; the old one is kept (superseded) and "
        "its pairs are rebuilt from the new one. Allowed while the task's round is labeling.",
    )
    def post(self, request: Request, ranking_id: int) -> Response:
        ranking = selectors.access_ranking(user=request.user, ranking_id=ranking_id)
        data = _valid(s.RankingIn, request.data)
        revision = ranking_revise(ranking=ranking, labeler=request.user, **data)
        return Response(s.RankingOut(revision).data, status=status.HTTP_201_CREATED)


class ReturnOut(serializers.Serializer):
    task_id = serializers.IntegerField()
    expires_at = serializers.DateTimeField()


class TaskReturnApi(APIView):
    @extend_schema(
        request=None,
        responses={200: ReturnOut, 409: error_response("Not skipped, closed, or no slot left.")},
        description="Lease again a task you skipped (open, with a free slot); tasks/next "
        "then returns it.",
    )
    def post(self, request: Request, task_id: int) -> Response:
        task = selectors.access_task(user=request.user, task_id=task_id)
        assignment = task_return_to_skipped(task=task, labeler=request.user)
        return Response(ReturnOut({"task_id": task.pk, "expires_at": assignment.expires_at}).data)


class ReviewQuery(s.StrictInput):
    round = serializers.IntegerField(min_value=1, required=False)
    labeler = serializers.IntegerField(min_value=1, required=False, help_text="A user id.")
    flagged = serializers.BooleanField(required=False, default=False)
    agreement_below = serializers.FloatField(
        min_value=0.0, max_value=1.0, required=False, help_text="Pairwise agreement below this."
    )
    review = serializers.ChoiceField(choices=["pending", "rejected"], required=False)


def review_filters(query: dict[str, Any]) -> review_reads.ReviewFilters:
    return review_reads.ReviewFilters(
        round_number=query.get("round"),
        labeler_id=query.get("labeler"),
        flagged=query.get("flagged", False),
        agreement_below=query.get("agreement_below"),
        review=query.get("review"),
    )


class ReviewRowOut(serializers.Serializer):
    task_id = serializers.IntegerField(source="task.pk")
    prompt = serializers.CharField(source="task.prompt.text")
    round = serializers.IntegerField(source="task.round.number", default=None, allow_null=True)
    is_gold = serializers.BooleanField(source="task.is_gold")
    rankings = serializers.IntegerField()
    pending = serializers.IntegerField()
    rejected = serializers.IntegerField()
    flagged = serializers.BooleanField()
    pairwise_agreement = serializers.FloatField(allow_null=True)
    kendall_w = serializers.FloatField(allow_null=True)


class ReviewTaskListApi(APIView):
    @extend_schema(parameters=[ReviewQuery], responses=ReviewRowOut(many=True))
    def get(self, request: Request, slug: str) -> Response:
        project = selectors.access_project(user=request.user, slug=slug, admin=True)
        filters = review_filters(_valid(ReviewQuery, request.query_params))
        rows = review_reads.review_tasks(project=project, filters=filters)
        return Response(ReviewRowOut(rows, many=True).data)


class ColumnOut(serializers.Serializer):
    id = serializers.IntegerField(source="ranking.pk")
    labeler = serializers.CharField(
        source="ranking.labeler.username", default=None, allow_null=True
    )
    order = serializers.JSONField(source="ranking.tie_groups")
    flags = serializers.JSONField(source="ranking.flags")
    all_unacceptable = serializers.BooleanField(source="ranking.all_unacceptable")
    review = serializers.CharField(source="ranking.review")
    reviewed_by = serializers.CharField(
        source="ranking.reviewed_by.username", default=None, allow_null=True
    )
    reviewed_at = serializers.DateTimeField(source="ranking.reviewed_at", allow_null=True)
    revisions = serializers.IntegerField()
    gold_tau = serializers.FloatField(allow_null=True)


class DetailOut(serializers.Serializer):
    task_id = serializers.IntegerField(source="task.pk")
    prompt = serializers.CharField(source="task.prompt.text")
    chat = serializers.JSONField(source="task.prompt.chat")
    is_gold = serializers.BooleanField(source="task.is_gold")
    gold_order = serializers.JSONField(source="task.gold_order")
    responses = serializers.SerializerMethodField()
    rankings = ColumnOut(source="columns", many=True)
    pairwise_agreement = serializers.FloatField(allow_null=True)
    kendall_w = serializers.FloatField(allow_null=True)

    def get_responses(self, detail: review_reads.ReviewDetail) -> list[dict[str, Any]]:
        return [{"id": r.pk, "position": r.position, "text": r.text} for r in detail.responses]


class ReviewTaskDetailApi(APIView):
    @extend_schema(responses=DetailOut)
    def get(self, request: Request, slug: str, task_id: int) -> Response:
        project = selectors.access_project(user=request.user, slug=slug, admin=True)
        detail = review_reads.review_task_detail(project=project, task_id=task_id)
        return Response(DetailOut(detail).data)


class DecisionIn(s.StrictInput):
    decision = serializers.ChoiceField(choices=list(DECISIONS))


class RankingReviewApi(APIView):
    @extend_schema(
        request=DecisionIn,
        responses={200: ReviewStateOut, 409: error_response("The ranking was revised.")},
        description="Accept or reject a ranking (admins). A rejected ranking yields no pairs.",
    )
    def post(self, request: Request, ranking_id: int) -> Response:
        ranking = _admin_ranking(request, ranking_id)
        decision = _valid(DecisionIn, request.data)["decision"]
        ranking = ranking_review(ranking=ranking, reviewer=request.user, decision=decision)
        return Response(ReviewStateOut(ranking).data)


class GoldIn(s.StrictInput):
    order = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField()),
        allow_null=True,
        help_text="The known tie groups of response ids, best first; null: not gold.",
    )


class GoldOut(serializers.Serializer):
    task_id = serializers.IntegerField(source="pk")
    is_gold = serializers.BooleanField()
    gold_order = serializers.JSONField()


class TaskGoldApi(APIView):
    @extend_schema(request=GoldIn, responses=GoldOut, description="Admins only.")
    def post(self, request: Request, task_id: int) -> Response:
        task = selectors.access_task(user=request.user, task_id=task_id)
        if not selectors.is_project_admin(user=request.user, project=task.project):
            raise PermissionDenied("Only project admins may mark gold tasks.")
        order = _valid(GoldIn, request.data)["order"]
        return Response(GoldOut(task_mark_gold(task=task, order=order)).data)
