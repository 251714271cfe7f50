"""REST door for the labeler statistics of a project (admins only: the numbers name people)."""

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from labeling.selectors import access_project
from labeling.stats import project_labeler_stats


class LabelerStatsApi(APIView):
    """Per labeler: volume, speed, agreement with the others, gold accuracy; per project:
    Kendall's W; per round: rankings and comparisons."""

    @extend_schema(responses={200: dict})
    def get(self, request: Request, slug: str) -> Response:
        project = access_project(user=request.user, slug=slug, admin=True)
        return Response(project_labeler_stats(project=project))
