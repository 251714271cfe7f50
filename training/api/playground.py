"""REST doors of the playground: ask the current policy, read the reply, rate it, better it."""

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.openapi import error_response
from labeling.selectors import access_project
from training.models import PlaygroundReply
from training.services import playground


class PlaygroundReplyOut(serializers.ModelSerializer):
    policy_version = serializers.SerializerMethodField()
    rating = serializers.SerializerMethodField()

    class Meta:
        model = PlaygroundReply
        fields = [
            "id", "status", "prompt", "text", "finished", "policy_version", "error",
            "rating", "created_at", "started_at",
        ]  # fmt: skip

    def get_policy_version(self, obj: PlaygroundReply) -> str | None:
        return obj.policy_version.label if obj.policy_version else None

    def get_rating(self, obj: PlaygroundReply) -> int | None:
        return obj.feedback.rating if obj.feedback is not None else None


class PlaygroundRequestIn(serializers.Serializer):
    prompt = serializers.JSONField(help_text="A string or a chat list ending with a user turn.")


class PlaygroundFeedbackIn(serializers.Serializer):
    rating = serializers.ChoiceField(choices=[1, -1])


class PlaygroundDemonstrationIn(serializers.Serializer):
    response = serializers.CharField(trim_whitespace=False)


class PlaygroundQueuedOut(serializers.Serializer):
    """For the schema: the queued reply, to poll at /playground/{id}/."""

    id = serializers.IntegerField()
    status = serializers.CharField()


class PlaygroundFeedbackOut(serializers.Serializer):
    id = serializers.IntegerField()
    rating = serializers.IntegerField()


class PlaygroundDemonstrationOut(serializers.Serializer):
    id = serializers.IntegerField()
    prompt_id = serializers.IntegerField()


class PlaygroundRequestApi(APIView):
    InputSerializer = PlaygroundRequestIn
    throttle_scope = "playground"  # each request samples from the policy on a worker

    @extend_schema(
        request=InputSerializer,
        responses={
            202: PlaygroundQueuedOut,
            409: error_response("Too many of the user's replies are still waiting."),
        },
    )
    def post(self, request: Request, slug: str) -> Response:
        project = access_project(user=request.user, slug=slug)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        reply = playground.playground_reply_request(
            project=project, user=request.user, prompt=data.validated_data["prompt"]
        )
        return Response({"id": reply.pk, "status": reply.status}, status=status.HTTP_202_ACCEPTED)


def _reply_out(request: Request, reply_id: int) -> dict[str, Any]:
    reply = playground.access_playground_reply(user=request.user, reply_id=reply_id)
    return PlaygroundReplyOut(reply).data


class PlaygroundReplyApi(APIView):
    @extend_schema(responses=PlaygroundReplyOut)
    def get(self, request: Request, reply_id: int) -> Response:
        return Response(_reply_out(request, reply_id))


class PlaygroundFeedbackApi(APIView):
    InputSerializer = PlaygroundFeedbackIn

    @extend_schema(
        request=InputSerializer,
        responses={201: PlaygroundFeedbackOut, 409: error_response("The reply is not done.")},
    )
    def post(self, request: Request, reply_id: int) -> Response:
        reply = playground.access_playground_reply(user=request.user, reply_id=reply_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        feedback = playground.playground_feedback_set(
            reply=reply, user=request.user, rating=int(data.validated_data["rating"])
        )
        return Response(
            {"id": feedback.pk, "rating": feedback.rating}, status=status.HTTP_201_CREATED
        )


class PlaygroundDemonstrationApi(APIView):
    InputSerializer = PlaygroundDemonstrationIn

    @extend_schema(
        request=InputSerializer,
        responses={
            201: PlaygroundDemonstrationOut,
            409: error_response("The reply is not done."),
        },
    )
    def post(self, request: Request, reply_id: int) -> Response:
        reply = playground.access_playground_reply(user=request.user, reply_id=reply_id)
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        demonstration = playground.playground_demonstration_create(
            reply=reply, user=request.user, response=data.validated_data["response"]
        )
        return Response(
            {"id": demonstration.pk, "prompt_id": demonstration.prompt_id},
            status=status.HTTP_201_CREATED,
        )
