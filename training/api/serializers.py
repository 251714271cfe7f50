from typing import Any

from rest_framework import serializers

from training.models import ModelVersion, Round, TrainingRun
from training.services.progress import round_progress, run_progress
from training.services.rounds import MAX_PROMPTS_PER_ROUND


class ModelVersionOut(serializers.ModelSerializer):
    # Fields named like attributes of DRF's Field (django-stubs types those).
    label = serializers.CharField(read_only=True)  # type: ignore[assignment]
    parent = serializers.SerializerMethodField()  # type: ignore[assignment]

    class Meta:
        model = ModelVersion
        fields = [
            "id", "label", "kind", "role", "version", "status", "is_current",
            "parent", "metrics", "created_at",
        ]  # fmt: skip

    def get_parent(self, obj: ModelVersion) -> int | None:
        return obj.parent_id


class RunOut(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()

    class Meta:
        model = TrainingRun
        fields = [
            "id", "kind", "status", "progress", "metrics", "error", "output",
            "started_at", "finished_at", "heartbeat_at",
        ]  # fmt: skip

    def get_progress(self, obj: TrainingRun) -> dict[str, Any]:
        """done/total in `unit`, the phase and sub-step, elapsed and ETA (`progress`)."""
        return run_progress(obj)


class RoundOut(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    # Null until the round has one (a failed or cancelled round may never get it).
    sampling_policy = ModelVersionOut(read_only=True, allow_null=True)
    reward_model = ModelVersionOut(read_only=True, allow_null=True)
    policy = ModelVersionOut(read_only=True, allow_null=True)
    runs = RunOut(many=True, read_only=True)
    project = serializers.CharField(source="project.slug", read_only=True)
    reviewed_by = serializers.CharField(
        source="reviewed_by.username", read_only=True, allow_null=True, default=None
    )

    class Meta:
        model = Round
        fields = [
            "id", "project", "number", "recipe", "stage", "progress", "num_prompts", "metrics",
            "error", "failed_stage", "sampling_policy", "reward_model", "policy", "runs",
            "review_stage", "gate", "reviewed_by", "reviewed_at", "review_decision",
            "created_at", "updated_at",
        ]  # fmt: skip

    def get_progress(self, obj: Round) -> dict[str, Any]:
        """Labeling progress, or the running step's progress while a run works (while
        generating: the responses of every shard), with phase, elapsed and ETA: the one
        computation the dashboard and `--wait` show too (`training.services.progress`)."""
        return round_progress(obj, runs=obj.runs.all())


class RoundStartIn(serializers.Serializer):
    recipe = serializers.ChoiceField(
        choices=Round.Recipe.choices,
        required=False,
        help_text="How the policy stage trains: ppo (RM + PPO), dpo (listwise, on the "
        "rankings), best_of_n (sample N, SFT on the RM's best) or rloo (default: the "
        'project\'s training_config "recipe", else ppo). The RM is trained in every round.',
    )
    num_prompts = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_PROMPTS_PER_ROUND,
        help_text="Prompts to sample (default: prompts_per_round of training_config); at most "
        "the project's train prompts.",
    )
