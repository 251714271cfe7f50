"""Input and output shapes of the labeling API (PRODUCT.md section 3).

Inputs only check types and shapes; the services check everything that needs the database
or the project's settings (responses of the task, flag vocabulary, base model, ...).
Every input refuses keys it does not know, so a typo is a 400, not a silent no-op.
Export rows are built by labeling.exports; their serializers here only document them.
"""

from typing import Any

from rest_framework import serializers

from labeling.models import (
    MAX_K,
    MIN_K,
    Demonstration,
    Membership,
    Project,
    Prompt,
    validate_guidelines_size,
)
from labeling.services.projects import UPDATABLE_FIELDS


class StrictInput(serializers.Serializer):
    """An input serializer that answers 400 for keys it does not declare."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({unknown[0]: ["Unknown field."]})
        return super().to_internal_value(data)


# --- Projects and members ------------------------------------------------------------------

BASE_MODEL_HELP = (
    "default, tiny, version:N (a ready policy version of this project) or a path under the "
    "operator's RLHF_MODEL_ROOTS."
)
TRAINING_CONFIG_HELP = (
    "Overrides of the round, generate, rm, ppo and sft settings; every key, type and range "
    "is listed in docs/concepts.md. Unknown keys and values out of range are refused."
)


class ProjectOut(serializers.ModelSerializer):
    class Meta:
        model = Project
        fields = ["slug", *UPDATABLE_FIELDS, "created_at"]
        read_only_fields = fields


class ProjectCreateIn(StrictInput):
    slug = serializers.SlugField(max_length=64)
    name = serializers.CharField(max_length=200, required=False, default="")
    k = serializers.IntegerField(min_value=MIN_K, max_value=MAX_K, required=False, default=4)
    overlap = serializers.IntegerField(min_value=1, max_value=20, required=False, default=1)
    guidelines = serializers.CharField(
        required=False, default="", allow_blank=True, validators=[validate_guidelines_size]
    )
    base_model = serializers.CharField(
        max_length=500, required=False, default="default", help_text=BASE_MODEL_HELP
    )
    training_config = serializers.JSONField(
        required=False, default=dict, help_text=TRAINING_CONFIG_HELP
    )


class ProjectUpdateIn(StrictInput):
    """Every field optional (PATCH); the slug never changes."""

    name = serializers.CharField(max_length=200, required=False)
    guidelines = serializers.CharField(
        required=False, allow_blank=True, validators=[validate_guidelines_size]
    )
    k = serializers.IntegerField(min_value=MIN_K, max_value=MAX_K, required=False)
    overlap = serializers.IntegerField(min_value=1, max_value=20, required=False)
    flag_vocabulary = serializers.ListField(child=serializers.CharField(), required=False)
    base_model = serializers.CharField(max_length=500, required=False, help_text=BASE_MODEL_HELP)
    max_new_tokens = serializers.IntegerField(min_value=1, required=False)
    temperature = serializers.FloatField(min_value=0.0, required=False)
    top_p = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    lease_seconds = serializers.IntegerField(min_value=10, required=False)
    training_config = serializers.JSONField(required=False, help_text=TRAINING_CONFIG_HELP)
    gate_min_rm_accuracy = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    gate_max_rm_drop = serializers.FloatField(min_value=0.0, max_value=1.0, required=False)
    gate_kl_factor = serializers.FloatField(min_value=0.0, required=False)
    moderation_rules = serializers.JSONField(
        required=False,
        help_text='{"words": [...], "regexes": [...], "classifier": SPEC, "labels": [...], '
        '"threshold": 0.5}, every key optional (docs/concepts.md, "Moderation").',
    )


class MemberOut(serializers.ModelSerializer):
    username = serializers.CharField(source="user.username")
    role = serializers.CharField(help_text="labeler or admin")
    pseudonym = serializers.SerializerMethodField(
        help_text="The member's name in exports; shown to project admins only (null otherwise)."
    )

    class Meta:
        model = Membership
        fields = ["username", "role", "pseudonym", "created_at"]
        read_only_fields = fields

    def get_pseudonym(self, membership: Membership) -> str | None:
        return membership.pseudonym if self.context.get("is_admin") else None


class MemberIn(StrictInput):
    username = serializers.CharField(max_length=150)
    # A plain string, not a ChoiceField: its enum would collide in the OpenAPI schema with
    # ModelVersion's `role` (policy/reward). membership_add checks the value.
    role = serializers.CharField(help_text="labeler or admin")
    password = serializers.CharField(
        required=False,
        write_only=True,
        trim_whitespace=False,  # a password is what was typed, spaces included
        help_text="The password of a user this request creates; for an existing user, a 400.",
    )


# --- Prompts ---------------------------------------------------------------------------------


class PromptOut(serializers.ModelSerializer):
    class Meta:
        model = Prompt
        fields = [
            "id",
            "text",
            "chat",
            "source",
            "split",
            "metadata",
            "moderation",
            "moderation_reasons",
            "created_at",
        ]
        read_only_fields = fields


class PromptImportOut(serializers.Serializer):
    created = serializers.IntegerField()
    duplicates = serializers.IntegerField()
    duplicate_lines = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="Lines (or list positions, from 1) of prompts the project already had.",
    )
    flagged = serializers.IntegerField(
        help_text="New prompts the moderation rules flagged: stored, held out of rounds "
        "until an admin releases them."
    )


class PromptImportIn(serializers.Serializer):
    """For the schema only: a multipart `file` (JSONL or CSV), or a JSON list of records."""

    file = serializers.FileField()


# --- Labeling ------------------------------------------------------------------------------


class ResponseOut(serializers.Serializer):
    id = serializers.IntegerField()
    text = serializers.CharField()
    duplicate_of = serializers.IntegerField(
        allow_null=True,
        required=False,
        help_text="The id of an earlier response of this task whose text this one nearly "
        "repeats (sampling could not avoid it), else null.",
    )


class LabelerCountsOut(serializers.Serializer):
    done_today = serializers.IntegerField()
    done_total = serializers.IntegerField()
    skipped = serializers.IntegerField()
    remaining = serializers.IntegerField()


class RoundProgressOut(serializers.Serializer):
    number = serializers.IntegerField()
    done = serializers.IntegerField()
    wanted = serializers.IntegerField()


class NextTaskOut(serializers.Serializer):
    id = serializers.IntegerField()
    prompt = serializers.CharField(help_text="The prompt text (a chat's last user turn).")
    chat = serializers.JSONField(
        allow_null=True, help_text='The whole conversation, [{"role", "content"}...], or null.'
    )
    responses = ResponseOut(many=True)
    expires_at = serializers.DateTimeField()
    k = serializers.IntegerField()
    round = serializers.IntegerField(allow_null=True)
    flag_vocabulary = serializers.ListField(child=serializers.CharField())
    guidelines = serializers.CharField(help_text="Markdown.")
    counts = LabelerCountsOut()
    round_progress = RoundProgressOut(
        allow_null=True,
        help_text="The task's round: rankings submitted of those wanted (tasks x overlap), "
        "from the round's counter; null for a task of no round.",
    )


class RankingIn(StrictInput):
    order = serializers.ListField(
        child=serializers.ListField(child=serializers.IntegerField(), allow_empty=True),
        required=False,
        default=list,
        help_text="Tie groups of response ids, best first; every response exactly once.",
    )
    flags = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        allow_null=True,
        default=None,
        help_text="{response_id: [flag, ...]} with flags from the project's vocabulary.",
    )
    time_spent_ms = serializers.IntegerField(min_value=0, required=False, default=0)
    all_unacceptable = serializers.BooleanField(required=False, default=False)


class RankingOut(serializers.Serializer):
    id = serializers.IntegerField()
    task_id = serializers.IntegerField()
    order = serializers.JSONField(source="tie_groups")
    flags = serializers.JSONField()
    all_unacceptable = serializers.BooleanField()
    time_spent_ms = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class DemonstrationIn(StrictInput):
    prompt_id = serializers.IntegerField(required=False, min_value=1)
    prompt = serializers.JSONField(
        required=False, help_text="A new prompt: a string or a chat list (instead of prompt_id)."
    )
    response = serializers.CharField(trim_whitespace=False)


class DemonstrationOut(serializers.ModelSerializer):
    prompt_id = serializers.IntegerField()
    prompt = serializers.CharField(source="prompt.text")
    chat = serializers.JSONField(source="prompt.chat")
    author = serializers.CharField(source="author.username", allow_null=True, default=None)

    class Meta:
        model = Demonstration
        fields = ["id", "prompt_id", "prompt", "chat", "response", "author", "created_at"]
        read_only_fields = fields


# --- Exports (documentation of the rows labeling.exports builds) -------------------------------


class ComparisonRowOut(serializers.Serializer):
    prompt = serializers.JSONField(help_text="A string, or a list of chat messages.")
    chosen = serializers.JSONField(help_text='A string, or [{"role": "assistant", "content"}].')
    rejected = serializers.JSONField(help_text='A string, or [{"role": "assistant", "content"}].')
    prompt_id = serializers.IntegerField()
    chosen_id = serializers.IntegerField()
    rejected_id = serializers.IntegerField()
    ranking_id = serializers.IntegerField()
    labeler = serializers.CharField(allow_null=True, help_text="A stable pseudonym.")
    round = serializers.IntegerField(allow_null=True)
    policy_version = serializers.CharField(allow_null=True)
    rejected_policy_version = serializers.CharField(allow_null=True)
    margin = serializers.IntegerField()
    created_at = serializers.CharField()


class RankingRowOut(serializers.Serializer):
    prompt = serializers.JSONField()
    responses = ResponseOut(many=True)
    order = serializers.JSONField(help_text="Tie groups of response ids, best first.")
    labeler = serializers.CharField(allow_null=True)
    flags = serializers.JSONField()
    all_unacceptable = serializers.BooleanField()
    round = serializers.IntegerField(allow_null=True)
    task_id = serializers.IntegerField()
    prompt_id = serializers.IntegerField()
    time_spent_ms = serializers.IntegerField()
    ranking_id = serializers.IntegerField(allow_null=True)
    method = serializers.CharField(help_text='"raw", or the consensus method of a merged row.')
    n_rankings = serializers.IntegerField()
    created_at = serializers.CharField()


def page_of(name: str, row: type[serializers.Serializer]) -> type[serializers.Serializer]:
    """A cursor page {"next", "previous", "results": [row...]} (for the schema)."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "next": serializers.URLField(allow_null=True),
            "previous": serializers.URLField(allow_null=True),
            "results": row(many=True),
        },
    )


PromptPageOut = page_of("PromptPage", PromptOut)
DemonstrationPageOut = page_of("DemonstrationPage", DemonstrationOut)
ComparisonPageOut = page_of("ComparisonPage", ComparisonRowOut)
RankingPageOut = page_of("RankingPage", RankingRowOut)
