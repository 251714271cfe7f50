from rest_framework import serializers

from training.models import ModelVersion, Round, TrainingRun
from training.services.generate_stage import generate_stage_progress
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

    def get_progress(self, obj: TrainingRun) -> dict[str, int]:
        return {"done": obj.progress_done, "total": obj.progress_total}


class RoundOut(serializers.ModelSerializer):
    progress = serializers.SerializerMethodField()
    # Null until the round has one (a failed or cancelled round may never get it).
    sampling_policy = ModelVersionOut(read_only=True, allow_null=True)
    reward_model = ModelVersionOut(read_only=True, allow_null=True)
    policy = ModelVersionOut(read_only=True, allow_null=True)
    runs = RunOut(many=True, read_only=True)
    project = serializers.CharField(source="project.slug", read_only=True)

    class Meta:
        model = Round
        fields = [
            "id", "project", "number", "recipe", "stage", "progress", "num_prompts", "metrics",
            "error", "failed_stage", "sampling_policy", "reward_model", "policy", "runs",
            "created_at", "updated_at",
        ]  # fmt: skip

    def get_progress(self, obj: Round) -> dict[str, int]:
        """Labeling progress, or the running step's progress while a run works (while
        generating: the responses of every shard)."""
        if obj.stage == Round.Stage.GENERATING:
            done, total = generate_stage_progress(obj.runs.all())
            if total:
                return {"done": done, "total": total}
        running = next((r for r in obj.runs.all() if r.status == "running"), None)
        if running is not None and running.progress_total:
            return {"done": running.progress_done, "total": running.progress_total}
        return {"done": obj.progress_done, "total": obj.progress_total}


class RoundStartIn(serializers.Serializer):
    recipe = serializers.ChoiceField(
        # Until their run kinds exist, the other recipes are refused here (a 400).
        choices=[(Round.Recipe.PPO.value, Round.Recipe.PPO.label)],
        required=False,
        default=Round.Recipe.PPO,
        help_text="The policy stage's recipe; ppo only in this version (dpo, best_of_n and "
        "rloo are planned).",
    )
    num_prompts = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=MAX_PROMPTS_PER_ROUND,
        help_text="Prompts to sample (default: prompts_per_round of training_config); at most "
        "the project's train prompts.",
    )
