"""REST doors for rounds, runs and models: validate, call one service or selector, answer."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.openapi import error_response
from labeling.selectors import access_project
from training import selectors
from training.api.serializers import ModelVersionOut, RoundOut, RoundStartIn, RunOut
from training.services import rounds
from training.services.sft import sft_start


def _round_out(round_) -> dict:
    round_ = (
        selectors.rounds_for_project(project=round_.project)
        .prefetch_related("runs")
        .get(pk=round_.pk)
    )
    return RoundOut(round_).data


class RoundListApi(APIView):
    throttle_scope = "training_start"  # POST starts a round (sampling, then training)

    @extend_schema(responses=RoundOut(many=True))
    def get(self, request: Request, slug: str) -> Response:
        project = access_project(user=request.user, slug=slug, admin=True)
        qs = selectors.rounds_for_project(project=project).prefetch_related("runs")
        return Response(RoundOut(qs, many=True).data)

    @extend_schema(
        request=RoundStartIn,
        responses={201: RoundOut, 409: error_response("A round of the project is still active.")},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = access_project(user=request.user, slug=slug, admin=True)
        data = RoundStartIn(data=request.data)
        data.is_valid(raise_exception=True)
        round_ = rounds.round_start(
            project=project,
            num_prompts=data.validated_data.get("num_prompts"),
            recipe=data.validated_data.get("recipe"),
            user=request.user,
        )
        return Response(_round_out(round_), status=status.HTTP_201_CREATED)


class RoundDetailApi(APIView):
    @extend_schema(responses=RoundOut)
    def get(self, request: Request, round_id: int) -> Response:
        round_ = selectors.access_round(user=request.user, round_id=round_id)
        return Response(_round_out(round_))


class RoundAdvanceApi(APIView):
    @extend_schema(
        request=None,
        responses={
            200: RoundOut,
            409: error_response("The round is done, cancelled, or busy with a stage."),
        },
    )
    def post(self, request: Request, round_id: int) -> Response:
        round_ = selectors.access_round(user=request.user, round_id=round_id)
        return Response(_round_out(rounds.round_advance(round_=round_, user=request.user)))


class RoundCancelApi(APIView):
    @extend_schema(
        request=None,
        responses={200: RoundOut, 409: error_response("The round is already over.")},
    )
    def post(self, request: Request, round_id: int) -> Response:
        round_ = selectors.access_round(user=request.user, round_id=round_id)
        return Response(_round_out(rounds.round_cancel(round_=round_, user=request.user)))


class RoundApproveApi(APIView):
    @extend_schema(
        request=None,
        responses={200: RoundOut, 409: error_response("The round is not in needs_review.")},
    )
    def post(self, request: Request, round_id: int) -> Response:
        round_ = selectors.access_round(user=request.user, round_id=round_id)
        return Response(_round_out(rounds.round_approve(round_=round_, user=request.user)))


class RoundRejectApi(APIView):
    @extend_schema(
        request=None,
        responses={200: RoundOut, 409: error_response("The round is not in needs_review.")},
    )
    def post(self, request: Request, round_id: int) -> Response:
        round_ = selectors.access_round(user=request.user, round_id=round_id)
        return Response(_round_out(rounds.round_reject(round_=round_, user=request.user)))


class ModelListApi(APIView):
    @extend_schema(responses=ModelVersionOut(many=True))
    def get(self, request: Request, slug: str) -> Response:
        project = access_project(user=request.user, slug=slug)
        return Response(
            ModelVersionOut(selectors.models_for_project(project=project), many=True).data
        )


class RunListApi(APIView):
    @extend_schema(responses=RunOut(many=True))
    def get(self, request: Request, slug: str) -> Response:
        project = access_project(user=request.user, slug=slug, admin=True)
        runs = selectors.runs_for_project(project=project)[:200]
        return Response(RunOut(runs, many=True).data)


class RunMetricsApi(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="Only steps after this one.")],
        responses={200: dict},
    )
    def get(self, request: Request, run_id: int) -> Response:
        run = selectors.access_run(user=request.user, run_id=run_id)
        try:
            after = int(request.query_params.get("after", -1))
        except ValueError:
            after = -1
        return Response(
            {
                "run": RunOut(run).data,
                "series": selectors.metric_series(run=run, after_step=after),
            }
        )


class SftStartApi(APIView):
    """Fine-tune on the project's demonstrations now (admins)."""

    throttle_scope = "training_start"

    @extend_schema(
        request=None,
        responses={202: RunOut, 409: error_response("An SFT run is already queued or running.")},
    )
    def post(self, request: Request, slug: str) -> Response:
        project = access_project(user=request.user, slug=slug, admin=True)
        return Response(RunOut(sft_start(project=project)).data, status=status.HTTP_202_ACCEPTED)
